"""A lock per host, held on the host itself, so two ripcord runs never change one host at once.

The lock is a directory in titan_home holding owner.json: who, what, since when, from which
controller and process. Every change to it (take, break, release) runs on the host under flock(1)
on titan_home, so checking and changing are one step: two runs never both take it, and a run
breaking a stale lock removes only the record it judged stale. The record (one line of JSON) is
written into a file inside the new directory and renamed to owner.json (it travels on stdin,
never in argv); a lock directory without an owner file (its creator died mid-way) counts as held
until the lease, never as stale. The record's command line keeps the words before the first
option and the options' names only: -e values and other secrets never reach the host. The
scripts use the shell's builtins where they can: each process they start costs a host a few
milliseconds, on every host of every run.

On a host's connection the lock is held by the command that took it (HOLD): titan_home's flock
let go, it waits on its stdin; release() is a line to it (no new SSH session, no login shell on
the host), and when the connection closes without one (the controller killed, its machine gone)
the command reads the end of its stdin and releases the lock itself.

A second run waits a bounded time, then fails naming the holder. A lock whose process is gone
(same controller, pid dead) or that is older than the lease is stale and is broken.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import socket
import time
from dataclasses import dataclass
from typing import Any

import paramiko

from ripcord.connection import Connection
from ripcord.errors import RipcordError
from ripcord.sandbox import procs

LOCK_NAME = ".ripcord.lock"
LEASE_S = 3600  # no incident run holds a host for an hour: older locks are abandoned
HOLD_ANSWER_S = 30  # the flock waits 10 s at most; the rest is a slow host's margin
GUARD = 'exec 9<"$1" && flock -w 10 9 || { echo "ERR cannot lock $1 (flock)"; exit 0; }; d=$1/$2; '

_TAKE = r"""
if mkdir -- "$d" 2>/dev/null; then
  { IFS= read -r r || [ -n "$r" ]; } && printf '%s\n' "$r" > "$d/.owner" &&
    mv -fT -- "$d/.owner" "$d/owner.json" ||
    { rm -rf -- "$d"; echo "ERR cannot write $d/owner.json"; exit 0; }
  echo TAKEN
"""
_HELD = r"""
fi
now=$(date +%s); made=$(stat -c %Y -- "$d" 2>/dev/null) || made=$now
h=none; [ -f "$d/owner.json" ] && h=$(sha256sum < "$d/owner.json") && h=${h%% *}
echo "HELD $((now - made)) $h"
cat -- "$d/owner.json" 2>/dev/null || :
"""
_MINE = r"""IFS= read -r r 2>/dev/null < "$d/owner.json"
case $r in *"$3"*) rm -rf -- "$d";; esac; echo OK"""

# $1 directory, $2 lock name; stdin: the owner record.
# Prints TAKEN, or HELD <age_s> <sha256 of owner.json, or none> and the record.
ACQUIRE = GUARD + _TAKE + "  exit 0" + _HELD

# The same, and then held by this command while it lasts (a host's connection): titan_home's
# flock let go, it waits for a line on stdin, or its end (the connection closed: the controller
# is gone, and so is the run), then releases as RELEASE does. $3: as RELEASE's. Releasing is then
# a line on a channel already open: no new SSH session, no login shell on the host.
HOLD = GUARD + _TAKE + """  exec 9<&-; trap '' HUP; IFS= read -r _ || :
  """ + GUARD + _MINE + "; exit 0" + _HELD

# $3: sha256 of the owner file judged stale ("none": there was none). Removed only if unchanged.
BREAK = GUARD + r"""
h=none; [ -f "$d/owner.json" ] && h=$(sha256sum < "$d/owner.json") && h=${h%% *}
[ "$h" = "$3" ] && rm -rf -- "$d"; echo OK
"""

# $3: the run id as it appears in owner.json. Removed only if the lock is still ours.
RELEASE = GUARD + _MINE


class LockHeld(RipcordError):
    """Another run holds the host's lock."""


@dataclass
class HostLock:
    conn: Connection
    directory: str  # where the lock lives: the host's titan_home
    owner: dict
    held: Any = None  # the channel of the command holding it (HOLD), while it does

    @property
    def path(self) -> str:
        return f"{self.directory.rstrip('/')}/{LOCK_NAME}"

    def _line(self, script: str, *args: str) -> str:
        argv = " ".join(shlex.quote(a) for a in (self.directory.rstrip("/") or "/", LOCK_NAME, *args))
        return f"exec sh -c {shlex.quote(script)} lock {argv}"

    def _script(self, script: str, *args: str, stdin: str | None = None) -> list[str]:
        out = self.conn.run(self._line(script, *args), stdin=stdin)
        return self._lines(out.stdout, out.ok, out.stderr or f"exit {out.rc}")

    def _lines(self, stdout: str, ok: bool, why: str) -> list[str]:
        lines = stdout.splitlines()
        if not ok or not lines or lines[0].startswith("ERR "):
            why = lines[0][4:] if lines and lines[0].startswith("ERR ") else (
                why.strip().splitlines() or ["no answer"])[-1]
            raise RipcordError(f"{self.conn.name}: cannot use the lock {self.path}: {why}")
        return lines

    def _hold(self, record: str) -> list[str]:
        """ACQUIRE by a command that then holds the lock (HOLD), on a host's connection; its
        answer's lines. Taken: the command stays, for release() to end."""
        channel = self.conn.open_session(self._line(HOLD, self._mark()))
        try:
            channel.sendall(record.encode())
            out = _read(channel, time.monotonic() + HOLD_ANSWER_S, lambda text: text == "TAKEN\n")
            if out == "TAKEN\n":
                self.held, channel = channel, None
                return ["TAKEN"]
            return self._lines(out, channel.recv_exit_status() == 0, "no answer")  # HELD, or ERR
        except TimeoutError:
            raise RipcordError(f"{self.conn.name}: cannot use the lock {self.path}: no answer in "
                               f"{HOLD_ANSWER_S}s") from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self.conn.lost(f": {exc}") from None
        finally:
            if channel is not None:
                channel.close()

    def _mark(self) -> str:
        return f'"run": {json.dumps(self.owner["run"])}'

    def acquire(self, wait_s: float = 10.0) -> None:
        deadline = time.monotonic() + wait_s
        record = json.dumps(self.owner) + "\n"  # one line (json.dumps' spacing: release matches it)
        while True:
            lines = (self._hold(record) if isinstance(self.conn, Connection)
                     else self._script(ACQUIRE, stdin=record))  # the controller's own: a run each
            if lines[0] == "TAKEN":
                return
            _, age, seen = lines[0].split()
            age, text = float(age), "\n".join(lines[1:])
            holder = _parse(text)
            if holder and holder.get("run") == self.owner.get("run"):
                return  # this run holds it already (a host reached twice, e.g. by delegation)
            if self._stale(holder, age):
                self._script(BREAK, seen)
                continue
            if time.monotonic() > deadline:
                raise LockHeld(f"{self.conn.name}: locked by {_describe(holder, age)}",
                               hint=f"wait for that run to finish; if it is dead, remove {self.path} "
                                    "on the host")
            time.sleep(0.2)

    def release(self) -> None:
        """Remove the lock if it is still ours: a line to the command holding it, else (its
        channel gone) RELEASE; the check runs on the host either way."""
        channel, self.held = self.held, None
        if channel is not None:
            try:
                channel.sendall(b"release\n")
                channel.shutdown_write()
                out = _read(channel, time.monotonic() + HOLD_ANSWER_S, lambda _: False)  # to its end
                if out.split() == ["OK"] and channel.recv_exit_status() == 0:
                    return
            except (OSError, EOFError, TimeoutError, paramiko.SSHException):
                pass  # the holder is gone or stuck: its lock may still be there, as ours
            finally:
                channel.close()
        self._script(RELEASE, self._mark())

    @staticmethod
    def _stale(holder: dict, age: float) -> bool:
        if not holder:  # no owner file (or an unreadable one): held until the lease, never less
            return age > LEASE_S
        if time.time() - float(holder.get("since", 0)) > LEASE_S:
            return True
        if holder.get("controller") == socket.gethostname():
            return not _pid_alive(int(holder.get("pid", 0)), holder.get("pid_start"))
        return False


def _read(channel, deadline: float, done) -> str:
    """A channel's stdout until done(text so far), or all of it when the command's output ends
    (EOF: its exit status may overtake the data, so it is not the sign)."""
    out = bytearray()
    while True:
        text = out.decode(errors="replace")
        if done(text):
            return text
        if channel.recv_ready():
            out += channel.recv(65536)
        elif channel.recv_stderr_ready():
            channel.recv_stderr(65536)
        elif channel.eof_received or channel.closed:
            return out.decode(errors="replace")
        elif (left := deadline - time.monotonic()) <= 0:
            raise TimeoutError
        else:
            select.select([channel], [], [], min(left, 1.0))


def _parse(text: str) -> dict:
    try:
        record = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _pid_alive(pid: int, start: int | None) -> bool:
    proc = procs.read_proc(pid) if pid else None
    return proc is not None and not proc.zombie and (start is None or proc.start == start)


def public_command(command: str) -> str:
    """The command line as a lock record may show it: the words before the first option, then the
    options' names with every value left out (`ripcord play x.yml -e …`): a value may be a secret."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    shown: list[str] = []
    for word in words:
        if word.startswith("-"):
            name, eq, _ = word.partition("=")
            shown.append(name + ("=…" if eq else ""))
        elif any(w.startswith("-") for w in shown):
            if shown[-1] != "…":
                shown.append("…")
        else:
            shown.append(word)
    return " ".join(shown)


def owner_record(run_id: str, operator: str, command: str) -> dict:
    me = procs.read_proc(os.getpid())
    return {"run": run_id, "operator": operator, "command": public_command(command),
            "since": time.time(), "controller": socket.gethostname(), "pid": os.getpid(),
            "pid_start": me.start if me else None}


def _describe(holder: dict, age: float) -> str:
    if not holder:
        return f"an unknown run (no owner record; the lock is {age:.0f}s old)"
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(holder.get("since", 0))))
    return (f"{holder.get('operator', '?')} running `{holder.get('command', '?')}` since {since} "
            f"(pid {holder.get('pid', '?')} on {holder.get('controller', '?')})")
