"""What the file modules share: remote stat, modes, backups, atomic writes, diffs, I/O errors.

Host-side tools are POSIX sh and coreutils only; every interpolated value is shlex-quoted.
Content moves over SFTP, never through a command line.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import re
import shlex
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import paramiko

from ripcord.connection import CommandTimeout
from ripcord.errors import UnreachableError
from ripcord.modules.base import Module, Result, TaskContext, _is_template

OCTAL_MODE = re.compile(r"^0?[0-7]{3,4}$")
DIFF_MAX_BYTES = 1 << 20  # larger files are compared by checksum only


class HostFileError(Exception):
    """A remote file operation failed for a reason the operator can act on (one line)."""


def q(value: Any) -> str:
    return shlex.quote(str(value))


# --- modes -----------------------------------------------------------------------------------

def mode_problem(value: Any) -> str | None:
    """Why a mode as written is unacceptable, or None (templates are checked after rendering)."""
    if value is None or _is_template(value):
        return None
    try:
        parse_mode(value)
    except ValueError as exc:
        return f"argument 'mode': {exc}"
    return None


def parse_mode(value: Any) -> int | None:
    """A mode from a playbook: an octal string ("0640", "640") or an int (YAML's 0640 is 416)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("expected an octal string like '0640', got a boolean")
    if isinstance(value, int):
        if 512 <= value <= 777:
            # YAML reads `mode: 640` as decimal 640 (0o1200): almost never what was meant
            raise ValueError(f"{value} reads as a decimal number; write the mode as a quoted "
                             f"octal string like '0{value}'")
        if not 0 <= value <= 0o7777:
            raise ValueError(f"{value} is not a file mode (0 to 07777)")
        return value
    if isinstance(value, str) and OCTAL_MODE.match(value.strip()):
        return int(value.strip(), 8)
    raise ValueError(f"expected an octal string like '0640', got {value!r}")


def mode_str(mode: int) -> str:
    return f"{mode:04o}"


# --- remote stat -----------------------------------------------------------------------------

@dataclass
class RemoteStat:
    path: str
    kind: str  # "file", "directory", "link", or stat's own word ("fifo", "socket" ...)
    mode: int  # permission bits (incl. setuid/setgid/sticky)
    size: int
    mtime: float
    sha256: str | None = None

    @property
    def isdir(self) -> bool:
        return self.kind == "directory"

    @property
    def isreg(self) -> bool:
        return self.kind == "file"

    def facts(self) -> dict[str, Any]:
        facts = {"exists": True, "path": self.path, "size": self.size, "mode": mode_str(self.mode),
                 "mtime": self.mtime, "isdir": self.isdir, "isreg": self.isreg,
                 "islnk": self.kind == "link"}
        if self.sha256:
            facts["sha256"] = self.sha256
        return facts


_KINDS = {"regular file": "file", "regular empty file": "file", "directory": "directory",
          "symbolic link": "link"}
_MISSING = ("No such file or directory", "Not a directory")


def remote_stat(ctx: TaskContext, path: str, *, follow: bool = True,
                checksum: bool = False) -> RemoteStat | None:
    """One round trip: GNU stat (and sha256sum of a readable regular file). None when missing."""
    flag = "-L " if follow else ""
    script = (f"p={q(path)}; "
              f"s=$(LC_ALL=C stat {flag}-c '%a|%s|%.9Y|%F' -- \"$p\" 2>&1) || "
              "{ printf 'ERR|%s\\n' \"$s\"; exit 0; }; printf '%s\\n' \"$s\"")
    if checksum:
        script += "; if [ -f \"$p\" ] && [ -r \"$p\" ]; then sha256sum < \"$p\"; fi"
    out = ctx.run(script)
    lines = out.stdout.splitlines()
    if not out.ok or not lines:
        raise HostFileError(f"cannot stat {path}: {(out.stderr or out.stdout).strip() or out.rc}")
    first = lines[0]
    if first.startswith("ERR|"):
        reason = first[4:].strip()
        if any(word in reason for word in _MISSING):
            return None
        raise HostFileError(f"cannot stat {path}: {reason.rsplit(': ', 1)[-1]}")
    perm, size, mtime, kind = first.split("|", 3)
    kind = _KINDS.get(kind, kind)
    # `[ -f ]` follows a symlink: a link's own stat gets no checksum of its target
    digest = lines[1].split()[0] if kind == "file" and len(lines) > 1 and lines[1].strip() else None
    return RemoteStat(path=path, kind=kind, mode=int(perm, 8), size=int(size),
                      mtime=float(mtime), sha256=digest)


def run_checked(ctx: TaskContext, command: str, what: str, stdin: str | None = None) -> None:
    """Run a command that must succeed; else HostFileError("what: reason"), the reason being
    the end of the tool's last error line ("Permission denied")."""
    out = ctx.run(command, stdin=stdin)
    if not out.ok:
        last = (out.stderr.strip().splitlines() or [f"exit status {out.rc}"])[-1]
        raise HostFileError(f"{what}: {last.rsplit(': ', 1)[-1]}")


# --- backups, writes, reads --------------------------------------------------------------------

def backup_name(path: str) -> str:
    """path.<UTC timestamp>.bak; microseconds keep two changes in one second apart."""
    return f"{path}.{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}.bak"


def make_backup(ctx: TaskContext, path: str, private: bool = False) -> str:
    """Copy path beside itself (times and mode kept; private: created and kept 0600).

    The copy goes into a mktemp file (unpredictable name, O_EXCL, 0600) renamed to the backup's
    name, so a file or symlink planted at that name is replaced, never written through.
    """
    dest = backup_name(path)
    keep = "" if private else "-p "
    run_checked(ctx, f"umask 077 && t=$(mktemp -- {q(dest + '.XXXXXXXXXX')}) && "
                     f"{{ cp {keep}-- {q(path)} \"$t\" && mv -fT -- \"$t\" {q(dest)} || "
                     f"{{ rm -f -- \"$t\"; exit 1; }}; }}", f"cannot back up {path}")
    return dest


def put_file(ctx: TaskContext, path: str, data: bytes, mode: int) -> None:
    """Replace path atomically (see Connection.write: never readable by others mid-way). Under
    become, SFTP would write as the login user: the bytes go on stdin (base64) to a command that
    runs as the become user, into a mktemp file renamed into place."""
    assert ctx.conn is not None, "this module needs a host connection"
    if not ctx.become:
        ctx.conn.write(path, data, mode)
        return
    run_checked(ctx, f"umask 077 && t=$(mktemp -- {q(path + '.XXXXXXXXXX')}) && "
                     f"{{ base64 -d > \"$t\" && chmod {mode:o} -- \"$t\" && mv -fT -- \"$t\" {q(path)} || "
                     f"{{ rm -f -- \"$t\"; exit 1; }}; }}", f"cannot write {path}",
                stdin=base64.b64encode(data).decode())


def read_file(ctx: TaskContext, path: str) -> bytes:
    """path's bytes (over SFTP; under become, by a command run as the become user)."""
    assert ctx.conn is not None
    if not ctx.become:
        return ctx.conn.read(path)
    out = ctx.run(f"test -e {q(path)} || exit 44; base64 -- {q(path)}")
    if out.rc == 44:
        raise FileNotFoundError(path)
    if out.rc != 0:
        raise HostFileError(f"cannot read {path} as {ctx.become}: {out.stderr.strip()}")
    return base64.b64decode(out.stdout)


def transport_alive(ctx: TaskContext) -> bool:
    client = getattr(getattr(ctx.conn, "fabric", None), "client", None)
    transport = client.get_transport() if client is not None else None
    return bool(transport and transport.is_active())


def io_failure(ctx: TaskContext, exc: BaseException, what: str) -> Result:
    """An SFTP/SSH error: connection loss propagates as UnreachableError, the rest fail the task."""
    if isinstance(exc, (paramiko.SSHException, EOFError, socket.error)) and not transport_alive(ctx):
        raise UnreachableError(f"{ctx.host}: connection lost: {exc}") from None
    reason = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
    return Result(failed=True, msg=f"{what}: {reason}")


IO_ERRORS = (OSError, paramiko.SSHException, EOFError)


# --- content -----------------------------------------------------------------------------------

def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def text_diff(path: str, before: bytes | None, after: bytes) -> str:
    """A unified diff of before -> after (None before: the file is new)."""
    if len(after) > DIFF_MAX_BYTES or (before and len(before) > DIFF_MAX_BYTES):
        return f"--- {path}\n+++ {path}\n(content differs; too large to show)\n"
    try:
        old = before.decode() if before is not None else ""
        new = after.decode()
    except UnicodeDecodeError:
        return f"--- {path}\n+++ {path}\n(binary content differs)\n"
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                 fromfile=f"{path} (before)" if before is not None else "/dev/null",
                                 tofile=f"{path} (after)")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                   for line in lines)


# --- the module shape ---------------------------------------------------------------------------

class HostModule(Module):
    """A module whose run() turns host-side failures into one-line failed Results.

    Subclasses implement apply(). HostFileError and a command timeout fail the task; SFTP and
    SSH errors fail it too unless the connection is gone (UnreachableError propagates).
    """

    what: ClassVar[str] = "path"  # the argument that names the file, for error messages

    def run(self, ctx: TaskContext, args: dict) -> Result:
        try:
            return self.apply(ctx, args)
        except HostFileError as exc:
            return Result(failed=True, msg=str(exc))
        except CommandTimeout as exc:
            return Result(failed=True, msg=str(exc))
        except IO_ERRORS as exc:
            return io_failure(ctx, exc, f"{self.name} {args.get(self.what)}")

    def apply(self, ctx: TaskContext, args: dict) -> Result:
        raise NotImplementedError
