"""A lock per host, held on the host itself, so two ripcord runs never change one host at once.

The lock is a directory (mkdir is atomic) in titan_home holding owner.json: who, what, since when,
from which controller and process. A second run waits a bounded time, then fails naming the
holder. A lock whose process is gone (same controller, pid dead) or that is older than the lease
is stale and is broken.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import time
from dataclasses import dataclass

from ripcord.connection import Connection
from ripcord.errors import RipcordError
from ripcord.sandbox import procs

LOCK_NAME = ".ripcord.lock"
LEASE_S = 3600  # no incident run holds a host for an hour: older locks are abandoned


class LockHeld(RipcordError):
    """Another run holds the host's lock."""


@dataclass
class HostLock:
    conn: Connection
    directory: str  # where the lock lives: the host's titan_home
    owner: dict

    @property
    def path(self) -> str:
        return f"{self.directory.rstrip('/')}/{LOCK_NAME}"

    def acquire(self, wait_s: float = 10.0) -> None:
        deadline = time.monotonic() + wait_s
        quoted = shlex.quote(self.path)
        record = shlex.quote(json.dumps(self.owner))  # json.dumps' spacing: release greps it
        while True:
            made = self.conn.run(f"mkdir {quoted} 2>/dev/null && printf %s {record} > {quoted}/owner.json")
            if made.ok:
                return
            holder = self._holder()
            if holder and holder.get("run") == self.owner.get("run"):
                return  # this run holds it already (a host reached twice, e.g. by delegation)
            if holder is not None and self._stale(holder):
                self.conn.run(f"rm -rf {quoted}")
                continue
            if time.monotonic() > deadline:
                raise LockHeld(f"{self.conn.name}: locked by {_describe(holder)}",
                               hint=f"wait for that run to finish; if it is dead, remove {self.path} "
                                    "on the host")
            time.sleep(0.2)

    def release(self) -> None:
        """Remove the lock if it is still ours (one round trip: the check runs on the host)."""
        quoted = shlex.quote(self.path)
        mine = shlex.quote(f'"run": {json.dumps(self.owner["run"])}')
        self.conn.run(f"grep -qF {mine} {quoted}/owner.json 2>/dev/null && rm -rf {quoted}")

    def _holder(self) -> dict | None:
        out = self.conn.run(f"cat {shlex.quote(self.path)}/owner.json 2>/dev/null")
        try:
            return json.loads(out.stdout) if out.ok and out.stdout.strip() else {}
        except ValueError:
            return {}

    @staticmethod
    def _stale(holder: dict) -> bool:
        if not holder:  # a lock directory without an owner: its creator died mid-way
            return True
        if time.time() - float(holder.get("since", 0)) > LEASE_S:
            return True
        if holder.get("controller") == socket.gethostname():
            return not _pid_alive(int(holder.get("pid", 0)), holder.get("pid_start"))
        return False


def _pid_alive(pid: int, start: int | None) -> bool:
    proc = procs.read_proc(pid) if pid else None
    return proc is not None and not proc.zombie and (start is None or proc.start == start)


def owner_record(run_id: str, operator: str, command: str) -> dict:
    me = procs.read_proc(os.getpid())
    return {"run": run_id, "operator": operator, "command": command, "since": time.time(),
            "controller": socket.gethostname(), "pid": os.getpid(),
            "pid_start": me.start if me else None}


def _describe(holder: dict | None) -> str:
    if not holder:
        return "an unknown run"
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(holder.get("since", 0))))
    return (f"{holder.get('operator', '?')} running `{holder.get('command', '?')}` since {since} "
            f"(pid {holder.get('pid', '?')} on {holder.get('controller', '?')})")
