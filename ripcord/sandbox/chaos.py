"""Faults the sandbox can suffer, one per failure scenario it can show: `sandbox.chaos` injects
them, `sandbox.heal` undoes every one, and drills (`invoke drill --scenario N`) use them to prove
that triage names the scenario and that its recovery works.

A fault is what the scenario's runbook describes happening, done the way it happens: a service
stopped under its manager, PostgreSQL or NATS gone, a feed that sticks or a book left behind
until market data restarts, an engine that leaks memory, the backups gone, a .env left readable
by others. It acts on the sandbox from the outside (its supervisors and files, as root on this
machine), never through ripcord, so a drill cannot be helped by the tool it tests. Each fault
notes itself in the fleet's faults.json so `heal` knows what to undo even from another process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ripcord.errors import InputError, SandboxError
from ripcord.sandbox.plan import Host, Plan, state_base


@dataclass(frozen=True)
class Fault:
    scenario: int
    what: str
    default_host: str  # the host it strikes unless --host says another
    inject: Callable[[Plan, Host], None]
    heal: Callable[[Plan, Host], None]


def _supervisorctl(host: Host, *args: str) -> str:
    ctl = state_base() / "runtime" / "venv" / "bin" / "supervisorctl"  # the sandbox's own (Fleet)
    out = subprocess.run([str(ctl), "-c", str(host.supervisor_conf), *args],
                         capture_output=True, text=True, timeout=60)
    if out.returncode not in (0, 1) or "ERROR" in out.stdout and "already" not in out.stdout:
        raise SandboxError(f"supervisorctl {' '.join(args)} on {host.name}: "
                           f"{(out.stdout + out.stderr).strip()}")
    return out.stdout.strip()


def _stop(service: str) -> tuple[Callable, Callable]:
    return (lambda plan, host: _supervisorctl(host, "stop", service),
            lambda plan, host: _supervisorctl(host, "start", service))


def _flag(name: str) -> Path:
    return Path("state") / "faults" / name


def _latch(name: str, service: str) -> tuple[Callable, Callable]:
    """A fault file the service takes in and removes: it stays broken until restarted. Healing
    restarts the process that took it in, unless a recovery has restarted it already."""
    def inject(plan: Plan, host: Host) -> None:
        flag, held = host.titan_home / _flag(name), host.titan_home / _flag(f"{name}.pid")
        flag.parent.mkdir(parents=True, exist_ok=True)
        held.write_text(_supervisorctl(host, "pid", service))
        flag.touch()
        deadline = time.monotonic() + 10
        while flag.exists() and time.monotonic() < deadline:  # taken in by the running service
            time.sleep(0.05)
        if flag.exists():
            raise SandboxError(f"{host.name}: no service took in the fault {name} within 10 s")

    def heal(plan: Plan, host: Host) -> None:
        flag, held = host.titan_home / _flag(name), host.titan_home / _flag(f"{name}.pid")
        flag.unlink(missing_ok=True)
        pid = held.read_text() if held.exists() else None
        if pid is None or _supervisorctl(host, "pid", service) == pid:
            _supervisorctl(host, "restart", service)
        else:
            _supervisorctl(host, "start", service)  # restarted since: nothing of the fault is left
        held.unlink(missing_ok=True)

    return inject, heal


def _hide_backups(plan: Plan, host: Host) -> None:
    backups, aside = host.titan_home / "backups", host.titan_home / "state" / "chaos-backups"
    aside.mkdir(parents=True, exist_ok=True)
    for path in backups.glob("titan-*"):
        shutil.move(str(path), aside / path.name)


def _restore_backups(plan: Plan, host: Host) -> None:
    backups, aside = host.titan_home / "backups", host.titan_home / "state" / "chaos-backups"
    for path in aside.glob("titan-*") if aside.is_dir() else ():
        shutil.move(str(path), backups / path.name)
    if aside.is_dir():
        aside.rmdir()


def _brain(path: str, body: dict) -> Callable[[Plan, Host], None]:
    """A POST to the brain's API, as an operator's tool (or its own tilt detector) makes it."""
    def post(plan: Plan, host: Host) -> None:
        url = f"http://127.0.0.1:{host.service('titan-brain').port}{path}"
        request = urllib.request.Request(url, json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=5):
            pass
    return post


def _env_mode(mode: int) -> Callable[[Plan, Host], None]:
    return lambda plan, host: (host.titan_home / ".env").chmod(mode)


FAULTS: dict[str, Fault] = {
    "kill-service": Fault(1, "the execution engine stopped (a crash)", "exec-1",
                          *_stop("titan-execution")),
    "stuck-feed": Fault(3, "market data stuck: no price update until its service restarts",
                        "core-1", *_latch("stuck_feed", "titan-market-data")),
    "desync-book": Fault(13, "one order book left behind in Redis while the others update, until "
                         "market data restarts", "core-1", *_latch("desync_book", "titan-market-data")),
    "leak-memory": Fault(5, "the execution engine leaks memory (+128 MB a second to 256 MB) until "
                         "restarted", "exec-1", *_latch("leak_memory", "titan-execution")),
    "trip-breaker": Fault(6, "the brain's circuit breaker tripped (tilt detected)", "core-1",
                          _brain("/api/breaker/trip", {"reason": "chaos: tilt"}),
                          _brain("/api/breaker/reset", {"operatorId": "sandbox.heal"})),
    "stop-database": Fault(4, "PostgreSQL stopped", "db-1", *_stop("postgresql")),
    "stop-nats": Fault(11, "NATS unreachable (the bus partitioned away)", "db-1", *_stop("nats")),
    "lose-backups": Fault(16, "the backups gone from the database host", "db-1",
                          _hide_backups, _restore_backups),
    "env-readable": Fault(19, "a .env left readable by every user (mode 644)", "exec-1",
                          _env_mode(0o644), _env_mode(0o600)),
}


def _ledger(plan: Plan) -> Path:
    return plan.root / "faults.json"


def _injected(plan: Plan) -> list[dict]:
    try:
        return json.loads(_ledger(plan).read_text())
    except (FileNotFoundError, ValueError):
        return []


def inject(plan: Plan, name: str, host_name: str | None = None) -> Host:
    """Inject fault `name` on a host (its default one unless named); noted for heal()."""
    fault = FAULTS.get(name)
    if fault is None:
        raise InputError(f"no sandbox fault {name!r}", hint=f"one of: {', '.join(FAULTS)}")
    try:
        host = plan.host(host_name or fault.default_host)
    except KeyError as exc:
        raise InputError(str(exc).strip("'\""), hint="`invoke sandbox.status` lists the hosts") from None
    noted = _injected(plan) + [{"fault": name, "host": host.name}]
    _ledger(plan).write_text(json.dumps(noted))  # noted first: heal() undoes even a half-done one
    fault.inject(plan, host)
    return host


def heal(plan: Plan) -> list[str]:
    """Undo every fault injected (newest first); returns what was healed."""
    healed = []
    for entry in reversed(_injected(plan)):
        fault, host = FAULTS.get(entry["fault"]), entry["host"]
        if fault is not None:
            fault.heal(plan, plan.host(host))
            healed.append(f"{entry['fault']} on {host}")
    _ledger(plan).unlink(missing_ok=True)
    return healed
