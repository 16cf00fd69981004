"""The two-person rule: a procedure that the inventory lists in `ripcord_require_approval` (for
the hosts it would touch) runs only with an approval that another operator granted.

The flow: the first run files a request and stops (exit 4) with its id; a second operator runs
`invoke approve ID`; the requester runs the procedure again with `--approval ID`. An approval is
for one procedure on one host pattern, by someone other than the requester, used once, and
expires (RIPCORD_APPROVAL_TTL_S, default 15 minutes). Requests live as JSON files in a directory
every operator of the controller shares (RIPCORD_APPROVALS, default beside the journal); each
step is journaled. An approval is used up when its run starts, whatever the run's outcome.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ripcord.errors import DeclinedError, InputError
from ripcord.journal import Journal, default_path

DEFAULT_TTL_S = 15 * 60


class ApprovalRequired(DeclinedError):
    """The procedure needs another operator's approval first (exit 4: nothing was run)."""

    def __init__(self, message: str, hint: str | None = None, request_id: str | None = None):
        super().__init__(message, hint)
        self.request_id = request_id


@dataclass
class Request:
    id: str
    procedure: str
    pattern: str
    options: dict  # the procedure's options (symbol, service, ...): approved as asked
    requested_by: str
    requested_at: float
    reason: str = ""
    approved_by: str | None = None
    approved_at: float | None = None
    used_at: float | None = None


def ttl_s() -> float:
    raw = os.environ.get("RIPCORD_APPROVAL_TTL_S", "")
    try:
        return float(raw) if raw else DEFAULT_TTL_S
    except ValueError:
        raise InputError(f"RIPCORD_APPROVAL_TTL_S must be a number of seconds, not {raw!r}") from None


class Approvals:
    def __init__(self, directory: Path | None = None, journal: Journal | None = None):
        self.dir = Path(directory or os.environ.get("RIPCORD_APPROVALS")
                        or default_path().parent / "approvals")
        self.journal = journal or Journal()

    def request(self, procedure: str, pattern: str, options: dict, operator: str,
                reason: str) -> Request:
        req = Request(secrets.token_hex(4), procedure, pattern, options, operator, time.time(),
                      reason)
        with self._locked():
            self._save(req)
        self.journal.append({"kind": "approval-requested", **asdict(req)})
        return req

    def approve(self, request_id: str, operator: str) -> Request:
        with self._locked():
            req = self._load(request_id)
            if req.requested_by == operator:
                raise DeclinedError(f"{operator} requested {request_id}: the approval must come "
                                    "from another operator")
            if req.approved_by:
                raise DeclinedError(f"request {request_id} is already approved by {req.approved_by}")
            if time.time() - req.requested_at > ttl_s():
                raise DeclinedError(f"request {request_id} has expired",
                                    hint=f"run `invoke {req.procedure}` again for a new request")
            req.approved_by, req.approved_at = operator, time.time()
            self._save(req)
        self.journal.append({"kind": "approval-granted", **asdict(req)})
        return req

    def use(self, request_id: str, procedure: str, pattern: str, options: dict,
            operator: str) -> Request:
        """The approval for this run, marked used; DeclinedError naming what does not fit."""
        with self._locked():
            req = self._load(request_id)
            if (req.procedure, req.pattern, req.options) != (procedure, pattern, options):
                raise DeclinedError(f"approval {request_id} is for `{req.procedure} --host "
                                    f"{req.pattern}` with {req.options or 'no options'}, not "
                                    f"`{procedure} --host {pattern}` with {options or 'no options'}")
            if operator != req.requested_by:
                raise DeclinedError(f"approval {request_id} was requested by {req.requested_by}: "
                                    f"only they can use it")
            if not req.approved_by:
                raise ApprovalRequired(f"request {request_id} is not approved yet",
                                       hint=f"another operator runs `invoke approve {request_id}`",
                                       request_id=request_id)
            if operator == req.approved_by:
                raise DeclinedError(f"{operator} approved {request_id} and cannot also run it")
            if req.used_at:
                raise DeclinedError(f"approval {request_id} was already used")
            if time.time() - (req.approved_at or 0) > ttl_s():
                raise DeclinedError(f"approval {request_id} has expired",
                                    hint=f"run `invoke {procedure}` again for a new request")
            req.used_at = time.time()
            self._save(req)
        self.journal.append({"kind": "approval-used", **asdict(req)})
        return req

    # --- storage ---------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)  # shared by the operators: no secret inside
        with open(self.dir / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _path(self, request_id: str) -> Path:
        if not request_id.isalnum():
            raise InputError(f"{request_id!r} is not a request id")
        return self.dir / f"{request_id}.json"

    def _load(self, request_id: str) -> Request:
        try:
            return Request(**json.loads(self._path(request_id).read_text()))
        except FileNotFoundError:
            raise InputError(f"no approval request {request_id}") from None

    def _save(self, req: Request) -> None:
        path = self._path(req.id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(req), indent=1))
        tmp.replace(path)


def required(inventory, hosts: list[str], procedure: str) -> bool:
    """Whether any host's inventory lists the procedure in ripcord_require_approval. Never for
    halt: the safe direction must not wait for a second person."""
    return procedure != "halt" and any(
        procedure in (inventory.host_vars(h).get("ripcord_require_approval") or []) for h in hosts)
