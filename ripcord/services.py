"""Service-manager adapters: one small class per manager (supervisor, systemd, docker compose, pm2).

Each turns start/stop/restart/status of a named service into the exact remote command line
(every interpolated value quoted) and reads the manager's status output into one of four states,
keeping the manager's own word. The modules above speak only these four states, so a playbook
reads the same whichever manager a host uses (inventory var `service_manager`).

Adapters run nothing themselves: ServiceControl binds one to a host's command runner. That keeps
the command lines and the parsing testable without a host.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from ripcord.errors import InputError, RipcordError

RUNNING, STOPPED, STARTING, FAILED = "RUNNING", "STOPPED", "STARTING", "FAILED"
VERBS = ("start", "stop", "restart")


class ServiceError(RipcordError):
    """The manager refused or does not know the service: the task fails, the run goes on."""


class Output(Protocol):
    rc: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class ServiceStatus:
    """A service's state in the four words ripcord uses, and the manager's own.

    `active` says whether the manager keeps (or keeps trying to bring) a process up: a service
    in a restart loop is FAILED but still active, and stopping it is a change.
    """

    name: str
    state: str
    raw: str
    active: bool
    detail: str = ""

    def as_data(self) -> dict[str, Any]:
        return {"status": self.state, "raw_status": self.raw, "active": self.active,
                "detail": self.detail}


@dataclass(frozen=True)
class Adapter:
    """The command lines and status parsing of one service manager.

    `aliases` maps ripcord's service names to the manager's where they differ
    (redis -> redis-server under systemd): inventory var `service_aliases`.
    """

    manager: ClassVar[str]
    aliases: Mapping[str, str] = field(default_factory=dict)

    def unit(self, service: str) -> str:
        return self.aliases.get(service, service)

    def action(self, verb: str, service: str) -> str:
        raise NotImplementedError

    def status_command(self, service: str) -> str:
        raise NotImplementedError

    def parse_status(self, service: str, out: Output) -> ServiceStatus:
        raise NotImplementedError

    def action_error(self, verb: str, service: str, out: Output) -> str | None:
        """Why an action failed, or None: by default a non-zero exit status."""
        if out.rc == 0:
            return None
        said = (out.stderr.strip() or out.stdout.strip()).splitlines()
        return f"{self.manager} {verb} {service} failed (rc={out.rc}): {said[-1] if said else ''}"


def _line(*words: str) -> str:
    return " ".join(shlex.quote(word) for word in words)


# --- supervisor -----------------------------------------------------------------------------

SUPERVISOR_STATES = {
    "RUNNING": (RUNNING, True), "STARTING": (STARTING, True), "BACKOFF": (FAILED, True),
    "STOPPING": (STOPPED, False), "STOPPED": (STOPPED, False), "EXITED": (FAILED, False),
    "FATAL": (FAILED, False), "UNKNOWN": (FAILED, False),
}
# supervisorctl reports these with rc 0: the wanted state was already there.
SUPERVISOR_BENIGN = ("ERROR (already started)", "ERROR (not running)")


@dataclass(frozen=True)
class Supervisor(Adapter):
    """supervisorctl, bound to a config file when the inventory names one.

    Exit codes: `status` is 0 when running, 3 when not running, 4 for an unknown name; actions
    are 0 on success and also for "already started"/"not running", 1 on failure.
    """

    manager: ClassVar[str] = "supervisor"
    config: str | None = None

    def _ctl(self, *words: str) -> str:
        conf = ("-c", self.config) if self.config else ()
        return _line("supervisorctl", *conf, *words)

    def action(self, verb: str, service: str) -> str:
        return self._ctl(verb, self.unit(service))

    def status_command(self, service: str) -> str:
        return self._ctl("status", self.unit(service))

    def parse_status(self, service: str, out: Output) -> ServiceStatus:
        unit = self.unit(service)
        text = out.stdout + out.stderr
        if out.rc == 4 or "no such process" in text:
            raise ServiceError(f"supervisor does not know {unit!r}",
                               hint="supervisorctl status lists the programs it runs")
        for line in out.stdout.splitlines():
            words = line.split(None, 2)
            if len(words) >= 2 and words[0] in (unit, f"{unit}:{unit}"):
                state, active = SUPERVISOR_STATES.get(words[1], (FAILED, False))
                return ServiceStatus(service, state, words[1], active,
                                     words[2].strip() if len(words) > 2 else "")
        raise ServiceError(f"cannot read supervisorctl status of {unit!r} (rc={out.rc}): "
                           f"{text.strip()[:200]}")

    def action_error(self, verb: str, service: str, out: Output) -> str | None:
        text = (out.stdout + out.stderr).strip()
        errors = [line for line in text.splitlines()
                  if "ERROR" in line and not any(b in line for b in SUPERVISOR_BENIGN)]
        if out.rc != 0 or errors:
            return f"supervisorctl {verb} {self.unit(service)} failed (rc={out.rc}): " \
                   f"{(errors or text.splitlines() or [''])[-1]}"
        return None


# --- systemd --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Systemd(Adapter):
    """systemctl; actions through `sudo -n` (never prompting) when ripcord_become is set."""

    manager: ClassVar[str] = "systemd"
    become: bool = False

    def action(self, verb: str, service: str) -> str:
        sudo = ("sudo", "-n") if self.become else ()
        return _line(*sudo, "systemctl", verb, self.unit(service))

    def status_command(self, service: str) -> str:
        # LoadState too: `show` of an unknown unit succeeds and says "inactive".
        return _line("systemctl", "show", "-p", "LoadState,ActiveState,SubState", "--no-pager",
                     self.unit(service))

    def parse_status(self, service: str, out: Output) -> ServiceStatus:
        props = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
        unit = self.unit(service)
        if out.rc != 0 or "ActiveState" not in props:
            raise ServiceError(f"cannot read systemctl show of {unit!r} (rc={out.rc}): "
                               f"{(out.stderr or out.stdout).strip()[:200]}")
        if props.get("LoadState") == "not-found":
            raise ServiceError(f"systemd does not know {unit!r}",
                               hint="systemctl list-units --type=service lists the units")
        active, sub = props["ActiveState"], props.get("SubState", "")
        raw = f"{active}/{sub}" if sub else active
        if active == "activating" and sub == "auto-restart":
            return ServiceStatus(service, FAILED, raw, True)  # crashed, waiting to restart
        state, keeps = {"active": (RUNNING, True), "reloading": (RUNNING, True),
                        "activating": (STARTING, True), "deactivating": (STOPPED, False),
                        "inactive": (STOPPED, False), "failed": (FAILED, False)
                        }.get(active, (FAILED, False))
        return ServiceStatus(service, state, raw, keeps)


# --- docker compose -------------------------------------------------------------------------

CLEAN_EXITS = (0, 130, 137, 143)  # exited by itself, or by the SIGINT/SIGKILL/SIGTERM of a stop
SEVERITY = {FAILED: 3, STARTING: 2, STOPPED: 1, RUNNING: 0}


@dataclass(frozen=True)
class DockerCompose(Adapter):
    """`docker compose -f FILE`; status from `ps --all --format json` (an exited container is
    only listed with --all, and its exit code tells a crash from a stop)."""

    manager: ClassVar[str] = "docker_compose"
    compose_file: str = "docker-compose.yml"

    def _compose(self, *words: str) -> str:
        return _line("docker", "compose", "-f", self.compose_file, *words)

    def action(self, verb: str, service: str) -> str:
        return self._compose(verb, self.unit(service))

    def status_command(self, service: str) -> str:
        return self._compose("ps", "--all", "--format", "json", self.unit(service))

    def parse_status(self, service: str, out: Output) -> ServiceStatus:
        unit = self.unit(service)
        if out.rc != 0:
            raise ServiceError(f"docker compose ps {unit} failed (rc={out.rc}): "
                               f"{(out.stderr or out.stdout).strip()[:200]}")
        containers = [c for c in _json_records(out.stdout) if c.get("Service", unit) == unit]
        if not containers:
            return ServiceStatus(service, STOPPED, "absent", False, "no container")
        states = [self._container(service, c) for c in containers]
        worst = max(states, key=lambda s: SEVERITY[s.state])
        detail = "; ".join(f"{c.get('Name', '?')}: {c.get('Status', '')}" for c in containers)
        return ServiceStatus(service, worst.state, worst.raw, any(s.active for s in states), detail)

    @staticmethod
    def _container(service: str, c: dict) -> ServiceStatus:
        state, health = str(c.get("State", "")).lower(), str(c.get("Health", "")).lower()
        raw = f"{state}({health})" if health else state
        if state == "running":
            return ServiceStatus(service, {"starting": STARTING, "unhealthy": FAILED}.get(
                health, RUNNING), raw, True)
        if state == "restarting":
            return ServiceStatus(service, FAILED, raw, True)
        if state == "exited":
            code = int(c.get("ExitCode") or 0)
            return ServiceStatus(service, STOPPED if code in CLEAN_EXITS else FAILED,
                                 f"exited({code})", False)
        if state == "dead":
            return ServiceStatus(service, FAILED, raw, False)
        return ServiceStatus(service, STOPPED, raw or "unknown", False)  # created, paused, ...


def _json_records(text: str) -> list[dict]:
    """Compose v2 prints one JSON object per line (2.21+) or one JSON array (before)."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


# --- pm2 ------------------------------------------------------------------------------------

PM2_STATES = {
    "online": (RUNNING, True), "launching": (STARTING, True), "stopping": (STOPPED, False),
    "stopped": (STOPPED, False), "one-launch-status": (STOPPED, False),
    "errored": (FAILED, False), "waiting restart": (FAILED, True),
}


@dataclass(frozen=True)
class Pm2(Adapter):
    """pm2 by process name; status from `pm2 jlist` (every process, as JSON)."""

    manager: ClassVar[str] = "pm2"

    def action(self, verb: str, service: str) -> str:
        return _line("pm2", verb, self.unit(service))

    def status_command(self, service: str) -> str:
        return "pm2 jlist"

    def parse_status(self, service: str, out: Output) -> ServiceStatus:
        unit = self.unit(service)
        processes = _pm2_list(out) if out.rc == 0 else None
        if processes is None:
            raise ServiceError(f"cannot read pm2 jlist (rc={out.rc}): "
                               f"{(out.stderr or out.stdout).strip()[:200]}")
        mine = [p for p in processes if p.get("name") == unit]
        if not mine:
            raise ServiceError(f"pm2 does not know {unit!r}", hint="pm2 list shows its processes")
        states = []
        for proc in mine:
            raw = str(proc.get("pm2_env", {}).get("status", "unknown"))
            state, active = PM2_STATES.get(raw, (FAILED, False))
            states.append(ServiceStatus(service, state, raw, active,
                                        f"pid {proc.get('pid')}, "
                                        f"restarts {proc.get('pm2_env', {}).get('restart_time', 0)}"))
        worst = max(states, key=lambda s: SEVERITY[s.state])
        return ServiceStatus(service, worst.state, worst.raw, any(s.active for s in states),
                             "; ".join(s.detail for s in states))


def _pm2_list(out: Output) -> list | None:
    """The JSON array of `pm2 jlist`, which prints it on one line, possibly after a daemon
    start-up banner such as "[PM2] Spawning PM2 daemon..."."""
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("["):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, list):
                return value
    return None


# --- choosing and using one -----------------------------------------------------------------

MANAGERS: dict[str, type[Adapter]] = {
    a.manager: a for a in (Supervisor, Systemd, DockerCompose, Pm2)}


def adapter_for(host_vars: Mapping[str, Any],
                render: Callable[[Any], Any] = lambda value: value) -> Adapter:
    """The adapter a host's inventory asks for (`service_manager`, default supervisor).

    `render` resolves templated variables ("{{ titan_home }}/docker-compose.yml").
    """
    def var(name: str, default: Any = None) -> Any:
        return render(host_vars[name]) if name in host_vars else default

    manager = var("service_manager") or "supervisor"
    aliases = dict(var("service_aliases") or {})
    if manager == "supervisor":
        return Supervisor(aliases=aliases, config=var("supervisor_config") or None)
    if manager == "systemd":
        return Systemd(aliases=aliases, become=_truthy(var("ripcord_become", False)))
    if manager == "docker_compose":
        default = render("{{ titan_home }}/docker-compose.yml") if "titan_home" in host_vars \
            else "docker-compose.yml"
        return DockerCompose(aliases=aliases, compose_file=var("compose_file") or default)
    if manager == "pm2":
        return Pm2(aliases=aliases)
    raise InputError(f"unknown service_manager {manager!r} (expected: {', '.join(MANAGERS)})")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "on", "1", "true", "y")
    return bool(value)


class ServiceControl:
    """An adapter bound to one host's command runner: status and actions, with the commands kept.

    `run` is the host's command runner (TaskContext.run). Every command run is appended to
    `commands`, so a task's result can show exactly what was done on the host.
    """

    def __init__(self, adapter: Adapter, run: Callable[[str], Output]):
        self.adapter = adapter
        self._run_line = run
        self.commands: list[str] = []
        self.acted = False  # an action was sent: the host may have changed, even on failure

    def _run(self, line: str) -> Output:
        self.commands.append(line)
        return self._run_line(line)

    def status(self, service: str) -> ServiceStatus:
        out = self._run(self.adapter.status_command(service))
        return self.adapter.parse_status(service, out)

    def act(self, verb: str, service: str) -> None:
        if verb not in VERBS:
            raise ValueError(f"unknown verb {verb!r}")
        self.acted = True
        out = self._run(self.adapter.action(verb, service))
        problem = self.adapter.action_error(verb, service, out)
        if problem:
            raise ServiceError(problem)


__all__ = ["FAILED", "RUNNING", "STARTING", "STOPPED", "Adapter", "DockerCompose", "Pm2",
           "ServiceControl", "ServiceError", "ServiceStatus", "Supervisor", "Systemd",
           "adapter_for"]
