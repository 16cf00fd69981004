"""Processes and ports of a sandbox fleet, read from /proc and the socket table.

Tear-down and crash recovery both need "every process this fleet started": the processes whose
command line names the fleet's directory, and all their descendants (sshd sessions, PostgreSQL
backends), identified by (pid, start time) so a reused pid is never killed by mistake.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    start: int  # clock ticks since boot: with pid, identifies one process for its lifetime
    cmdline: str
    zombie: bool = False  # exited, not yet reaped: holds no port, runs nothing


def read_proc(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # comm may contain spaces and parentheses
    return Proc(pid, int(fields[1]), int(fields[19]),
                raw.replace(b"\0", b" ").decode(errors="replace"), zombie=fields[0] == "Z")


def all_procs() -> list[Proc]:
    procs = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = read_proc(int(entry))
            if proc:
                procs.append(proc)
    return procs


def fleet_procs(root: Path, extra_pids: tuple[int, ...] = ()) -> list[Proc]:
    """Processes naming root/ in their command line, the given pids, and all their descendants."""
    procs = all_procs()
    marker = str(root).rstrip("/") + "/"
    me = os.getpid()
    seeds = {p.pid for p in procs if marker in p.cmdline and p.pid != me}
    seeds.update(pid for pid in extra_pids if pid)
    children: dict[int, list[int]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p.pid)
    found: set[int] = set()
    stack = list(seeds)
    while stack:
        pid = stack.pop()
        if pid in found or pid == me:
            continue
        found.add(pid)
        stack.extend(children.get(pid, []))
    return [p for p in procs if p.pid in found and not p.zombie]


def alive(proc: Proc) -> bool:
    current = read_proc(proc.pid)
    return current is not None and current.start == proc.start and not current.zombie


def terminate(procs: list[Proc], grace_s: float = 5.0) -> list[Proc]:
    """SIGTERM, wait up to grace_s, then SIGKILL what is left. Returns what had to be killed."""
    for proc in procs:
        if alive(proc):
            _signal(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in procs):
        time.sleep(0.05)
    stubborn = [p for p in procs if alive(p)]
    for proc in stubborn:
        _signal(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and any(alive(p) for p in stubborn):
        time.sleep(0.05)
    return stubborn


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def pid_from_file(path: Path) -> int | None:
    """The pid in a pid file if that process is alive (a stale file gives None)."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    proc = read_proc(pid)
    return pid if proc is not None and not proc.zombie else None


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on host:port (a bind would fail)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def listening(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    """True when a TCP connect to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
