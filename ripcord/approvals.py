"""The two-person rule: a procedure that the inventory lists in `ripcord_require_approval` (for
the hosts it would touch) runs only with an approval that another operator granted.

The flow: the first run files a request and stops (exit 4) with its id; a second operator runs
`invoke approve ID`; the requester runs the same thing again with `--approval ID`. An approval
binds what was asked (a Binding: procedure, playbook content, inventory, hosts, pattern,
options), comes from someone other than the requester, is used once, and expires after the
inventory's `ripcord_approval_ttl_s` (default 15 minutes). Requests live as JSON files in a
directory every operator of the controller shares (RIPCORD_APPROVALS, default beside the
journal). Each is signed (HMAC-SHA256) with a key only the controller's ripcord account reads
(approvals.key beside the journal, mode 600): whoever can write the shared directory still
cannot forge, alter or re-arm an approval. Files are written through an O_EXCL temporary file and
a rename and never opened through a symlink. Each step is journaled; an approval is used up when
its run starts, whatever the run's outcome.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import secrets
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ripcord.errors import DeclinedError, InputError
from ripcord.journal import Journal, default_path

DEFAULT_TTL_S = 15 * 60
RULE, TTL = "ripcord_require_approval", "ripcord_approval_ttl_s"


class ApprovalRequired(DeclinedError):
    """The procedure needs another operator's approval first (exit 4: nothing was run)."""

    def __init__(self, message: str, hint: str | None = None, request_id: str | None = None):
        super().__init__(message, hint)
        self.request_id = request_id


def digest(value: Any) -> str:
    """sha256 of a value's canonical JSON (sets sorted, anything else as its text)."""
    def plain(o: Any) -> Any:
        return sorted(map(str, o)) if isinstance(o, (set, frozenset)) else str(o)
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"),
                                     default=plain).encode()).hexdigest()


@dataclass
class Binding:
    """What an approval is for; a run may use it only when every field is the same."""

    procedure: str
    pattern: str
    hosts: list[str]
    options: dict
    playbook: str = ""
    playbook_sha256: str = ""
    inventory_sha256: str = ""

    def normal(self) -> dict:
        """As stored: JSON's view of the values (tuples as lists, odd values as text)."""
        return json.loads(json.dumps(asdict(self), sort_keys=True, default=str))


@dataclass
class Request:
    id: str
    binding: dict
    ttl_s: float
    requested_by: str
    requested_at: float
    reason: str = ""
    approved_by: str | None = None
    approved_at: float | None = None
    used_at: float | None = None
    signature: str = field(default="", repr=False)

    @property
    def procedure(self) -> str:
        return self.binding["procedure"]

    @property
    def pattern(self) -> str:
        return self.binding["pattern"]


class Approvals:
    def __init__(self, directory: Path | None = None, journal: Journal | None = None,
                 key_file: Path | None = None):
        state = default_path().parent
        self.dir = Path(directory or os.environ.get("RIPCORD_APPROVALS") or state / "approvals")
        self.journal = journal or Journal()
        self.key_file = Path(key_file or (self.journal.path.parent / "approvals.key"))
        self.used_file = self.key_file.with_name("approvals.used")  # private: no re-arming

    def request(self, binding: Binding, ttl_s: float, operator: str, reason: str) -> Request:
        req = Request(secrets.token_hex(4), binding.normal(), float(ttl_s), operator, time.time(),
                      reason)
        with self._locked() as fd:
            self._save(fd, req)
        self.journal.append({"kind": "approval-requested", **self._public(req)})
        return req

    def approve(self, request_id: str, operator: str) -> Request:
        with self._locked() as fd:
            req = self._load(fd, request_id)
            if req.requested_by == operator:
                raise DeclinedError(f"{operator} requested {request_id}: the approval must come "
                                    "from another operator")
            if req.approved_by:
                raise DeclinedError(f"request {request_id} is already approved by {req.approved_by}")
            if time.time() - req.requested_at > req.ttl_s:
                raise DeclinedError(f"request {request_id} has expired",
                                    hint=f"run `invoke {req.procedure}` again for a new request")
            req.approved_by, req.approved_at = operator, time.time()
            self._save(fd, req)
        self.journal.append({"kind": "approval-granted", **self._public(req)})
        return req

    def use(self, request_id: str, binding: Binding, operator: str) -> Request:
        """The approval for this run, marked used; DeclinedError naming what does not fit."""
        with self._locked() as fd:
            req = self._load(fd, request_id)
            wanted = binding.normal()
            differ = [k for k in wanted if req.binding.get(k) != wanted[k]]
            if differ:
                raise DeclinedError(
                    f"approval {request_id} is for `{req.procedure} --host {req.pattern}` with "
                    f"{req.binding['options'] or 'no options'}, not `{binding.procedure} --host "
                    f"{binding.pattern}` with {binding.options or 'no options'}: "
                    f"{', '.join(differ)} differ",
                    hint="the approval binds the procedure, playbook, inventory, hosts and options")
            if operator != req.requested_by:
                raise DeclinedError(f"approval {request_id} was requested by {req.requested_by}: "
                                    f"only they can use it")
            if not req.approved_by:
                raise ApprovalRequired(f"request {request_id} is not approved yet",
                                       hint=f"another operator runs `invoke approve {request_id}`",
                                       request_id=request_id)
            if operator == req.approved_by:
                raise DeclinedError(f"{operator} approved {request_id} and cannot also run it")
            if req.used_at or request_id in self._used():
                raise DeclinedError(f"approval {request_id} was already used")
            if time.time() - (req.approved_at or 0) > req.ttl_s:
                raise DeclinedError(f"approval {request_id} has expired",
                                    hint=f"run `invoke {req.procedure}` again for a new request")
            req.used_at = time.time()
            self._mark_used(request_id)
            self._save(fd, req)
        self.journal.append({"kind": "approval-used", **self._public(req)})
        return req

    @staticmethod
    def _public(req: Request) -> dict:
        return {k: v for k, v in asdict(req).items() if k != "signature"}

    # --- signing ---------------------------------------------------------------------------------

    def _key(self) -> bytes:
        """The controller's signing key, created (32 random bytes, mode 600) on first use."""
        for _ in range(2):
            try:
                fd = os.open(self.key_file, os.O_RDONLY | os.O_NOFOLLOW)
            except FileNotFoundError:
                self._create_key()
                continue
            except OSError as exc:
                raise InputError(f"{self.key_file}: cannot read the approval key ({exc.strerror}); "
                                 "it must be a regular file, not a symlink") from None
            with os.fdopen(fd, "rb") as handle:
                info = os.fstat(handle.fileno())
                if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077 \
                        or info.st_uid != os.geteuid():
                    raise InputError(f"{self.key_file}: the approval key must be a file of yours "
                                     "with mode 600", hint="remove it: a new one is made")
                key = handle.read()
            if len(key) < 32:
                raise InputError(f"{self.key_file}: the approval key is too short")
            return key
        raise InputError(f"{self.key_file}: cannot create the approval key")

    def _create_key(self) -> None:
        self.key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.key_file.with_name(f".approvals.key.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(32))
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, self.key_file)  # whole or not at all; never over an existing file
            except FileExistsError:
                pass  # another run made it first: use theirs
        finally:
            os.unlink(tmp)

    def _sign(self, req: Request) -> str:
        body = json.dumps(self._public(req), sort_keys=True, separators=(",", ":"), default=str)
        return hmac.new(self._key(), body.encode(), hashlib.sha256).hexdigest()

    def _used(self) -> set[str]:
        try:
            fd = os.open(self.used_file, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return set()
        with os.fdopen(fd) as handle:
            return set(handle.read().split())

    def _mark_used(self, request_id: str) -> None:
        fd = os.open(self.used_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(request_id + "\n")

    # --- storage ---------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[int]:
        """The store's directory (an fd: nothing below it is reached through a symlink), locked."""
        self.dir.mkdir(parents=True, exist_ok=True)  # shared by the operators: no secret inside
        try:
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            raise InputError(f"{self.dir}: not a directory ({exc.strerror}); a symlink is refused") \
                from None
        try:
            lock = os.open(".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o664, dir_fd=fd)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                yield fd
            finally:
                os.close(lock)
        finally:
            os.close(fd)

    @staticmethod
    def _name(request_id: str) -> str:
        if not request_id.isalnum() or not request_id.isascii():
            raise InputError(f"{request_id!r} is not a request id")
        return f"{request_id}.json"

    def _load(self, fd: int, request_id: str) -> Request:
        try:
            handle = os.open(self._name(request_id), os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
        except FileNotFoundError:
            raise InputError(f"no approval request {request_id}") from None
        except OSError as exc:
            raise DeclinedError(f"approval request {request_id} cannot be read ({exc.strerror})") \
                from None
        with os.fdopen(handle) as text:
            raw = text.read()
        try:
            req = Request(**json.loads(raw))
            valid = hmac.compare_digest(req.signature, self._sign(req)) and req.id == request_id
        except (ValueError, TypeError):
            valid = False
        if not valid:
            raise DeclinedError(f"approval request {request_id} does not carry this controller's "
                                "signature: it was changed outside ripcord",
                                hint="file a new request; the journal holds the real history")
        return req

    def _save(self, fd: int, req: Request) -> None:
        req.signature = self._sign(req)
        tmp = f".{req.id}.{secrets.token_hex(8)}.tmp"
        handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o664,
                         dir_fd=fd)
        try:
            with os.fdopen(handle, "w") as out:
                out.write(json.dumps(asdict(req), indent=1))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self._name(req.id), src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=fd)
            except FileNotFoundError:
                pass
            raise


# --- what the inventory asks for -----------------------------------------------------------------

def _rendered(inventory, host: str) -> dict[str, Any]:
    from jinja2 import Undefined

    from ripcord.templating import Templar, resolve_vars

    values = resolve_vars(Templar(), dict(inventory.host_vars(host)))
    for key in (RULE, TTL):
        if isinstance(values.get(key), Undefined):
            raise InputError(f"{key} on {host} cannot be rendered",
                             hint="the two-person rule is read after templating; fix the value")
    return values


def guarded(inventory, host: str) -> set[str]:
    """The procedures the host's inventory lists for the two-person rule, after templating (a
    templated list is read as it renders; anything but a list of names is invalid input)."""
    if not {RULE, TTL} & inventory.host_vars(host).keys():
        return set()  # nothing to render: templating every var of 50 hosts cost ~0.1-0.3 s a run
    value = _rendered(inventory, host).get(RULE)
    if value in (None, "", []):
        return set()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InputError(f"{RULE} on {host} must be a list of procedure names, not {value!r}")
    return set(value)


def ttl_s(inventory, hosts: list[str]) -> float:
    """How long a request may wait for approval, and an approval for its run: the shortest
    `ripcord_approval_ttl_s` of the hosts (default 900 s). From the inventory only."""
    found = []
    for host in hosts:
        raw = _rendered(inventory, host).get(TTL)
        if raw in (None, ""):
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = -1.0
        if not value > 0:
            raise InputError(f"{TTL} on {host} must be a positive number of seconds, not {raw!r}")
        found.append(value)
    return min(found, default=DEFAULT_TTL_S)


def inventory_digest(inventory, hosts: list[str]) -> str:
    """What an approval binds of the inventory: the selected hosts and their variables."""
    return digest({h: inventory.host_vars(h) for h in hosts})
