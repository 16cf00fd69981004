"""pause, ping, systemd and service_facts: Ansible modules ops playbooks use, as ripcord runs them.

They exist so a playbook written from Ansible habit runs as written: `ping` proves the SSH
login and a shell work, `pause` waits (or asks the operator at a terminal), and `systemd` and
`service_facts` act through the host's own service manager (ripcord.services: supervisor,
systemd, docker compose, pm2), so the same playbook works whichever a host uses. Where a
manager cannot do what an argument asks (enabled under supervisor), the task fails and says so.
"""

from __future__ import annotations

import shlex
import signal
import threading
from datetime import datetime
from typing import Any

from ripcord.errors import DeclinedError, RipcordError, UnreachableError
from ripcord.modules.base import Arg, Module, Result, TaskContext, _is_template, register
from ripcord.modules.service import Service, control_for
from ripcord.report import inert, visible
from ripcord.services import (
    FAILED,
    RUNNING,
    STARTING,
    SUPERVISOR_STATES,
    DockerCompose,
    Pm2,
    ServiceControl,
    ServiceError,
    Supervisor,
    Systemd,
    _json_records,
    _pm2_list,
)

# --- ping ---------------------------------------------------------------------------------------


@register
class Ping(Module):
    """`ping: pong` when the host's SSH login and shell answer (Ansible's proves Python too).

    Changed: never.
    Check mode: runs as usual.
    Example:
        - ping:
    """

    name = "ping"
    args = {"data": Arg(str, default="pong")}

    def run(self, ctx: TaskContext, args: dict) -> Result:
        data = args["data"]
        if data == "crash":  # Ansible's way to test a module failure
            return Result(failed=True, msg="boom")
        out = ctx.run(f"printf '%s' {shlex.quote(data)}")
        if out.rc != 0 or out.stdout != data:
            return Result(failed=True, msg=f"the host's shell did not answer as expected (rc={out.rc}): "
                                           f"{(out.stderr or out.stdout).strip()[:200]}")
        return Result(data={"ping": data})


# --- meta ---------------------------------------------------------------------------------------

META_REFUSED = {  # Ansible's other meta actions, and what to write instead
    "end_play": "fail the hosts (fail, with any_errors_fatal) to stop the play",
    "end_host": "fail the host, or skip its remaining tasks with when",
    "end_batch": "fail the batch's hosts", "noop": "leave the task out",
    "clear_facts": "facts are the run's own", "clear_host_errors": "use block/rescue",
    "refresh_inventory": "the inventory is read once, before the run",
    "reset_connection": "ripcord keeps one connection a host and login user",
}


@register
class Meta(Module):
    """`meta: flush_handlers`: the handlers notified so far run here, not at the end of the play.

    The runner does it; the other meta actions are refused when the playbook is read.

    Changed: never (the handlers count for themselves).
    Check mode: runs as usual.
    Example:
        - meta: flush_handlers
    """

    name = "meta"
    free_form = "action"
    args = {"action": Arg(str, required=True)}
    on_controller = True

    @classmethod
    def check_combination(cls, args: dict) -> list[str]:
        action = args.get("action")
        if action in META_REFUSED:
            return [f"not supported by ripcord: meta {action}; {META_REFUSED[action]}"]
        return [] if action == "flush_handlers" else [f"expected flush_handlers, got {action!r}"]

    def run(self, ctx: TaskContext, args: dict) -> Result:
        return Result(msg=args["action"])  # the runner acts on it (Runner._run_tasks)


# --- pause --------------------------------------------------------------------------------------

def _number(value: Any) -> float | None:
    """seconds/minutes as Ansible takes them: a number or a string holding one."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


@register
class Pause(Module):
    """Waits `seconds` or `minutes` once for the batch, or asks the operator to continue.

    Ctrl-C ends the wait at once. Without seconds or minutes it asks: --yes answers, and without a
    terminal the run is declined (exit 4), as `confirm` does.

    Changed: never.
    Check mode: waits (and asks) as usual, as Ansible does.
    Example:
        - name: let the engines drain
          pause:
            seconds: 5
    """

    name = "pause"
    on_controller = True
    fleet = True  # once per batch, in the main thread: Ctrl-C reaches the wait
    args = {"seconds": Arg((int, float, str)), "minutes": Arg((int, float, str)),
            "prompt": Arg(str), "echo": Arg(bool, default=True, help="accepted; nothing is read")}

    @classmethod
    def check_combination(cls, args: dict) -> list[str]:
        if "seconds" in args and "minutes" in args:
            return ["'seconds' and 'minutes' are mutually exclusive"]
        return [f"argument {key!r}: expected a number, 0 or more, got {args[key]!r}"
                for key in ("seconds", "minutes") if key in args and not _is_template(args[key])
                and ((n := _number(args[key])) is None or n < 0)]

    def run_fleet(self, contexts: dict[str, TaskContext], args: dict[str, Any]
                  ) -> dict[str, Result | UnreachableError]:
        problems = self.check_combination(args)
        if problems:
            return dict.fromkeys(contexts, Result(failed=True, msg="; ".join(problems)))
        ctx = next(iter(contexts.values()))
        started = datetime.now()
        data: dict[str, Any] = {"start": str(started), "user_input": "", "echo": args["echo"]}
        if args.get("seconds") is None and args.get("minutes") is None:
            prompt = args.get("prompt") or "Press enter to continue"
            if not ctx.confirm(inert(prompt), None):
                raise DeclinedError(f"declined: {visible(prompt)}", hint="nothing further was changed")
            data.update(stop=str(datetime.now()), delta=0, stdout="Paused until the operator went on")
            return dict.fromkeys(contexts, Result(msg="continued by the operator", data=data))
        unit = "minutes" if args.get("minutes") is not None else "seconds"
        amount = _number(args[unit])
        seconds = amount * (60 if unit == "minutes" else 1)
        interrupted = _wait(seconds)
        stopped = datetime.now()
        data.update(stop=str(stopped), delta=int((stopped - started).total_seconds()),
                    stdout=f"Paused for {amount:g} {unit}")
        if interrupted:
            return dict.fromkeys(contexts, Result(failed=True, msg="interrupted (Ctrl-C) during the "
                                                                   "pause", data=data))
        return dict.fromkeys(contexts, Result(msg=data["stdout"] + (
            f": {visible(args['prompt'])}" if args.get("prompt") else ""), data=data))


def _wait(seconds: float) -> bool:
    """Wait, ending early on Ctrl-C (which is still passed on to the handler before ours, so
    the run stops after this task); True when interrupted."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        stop.wait(seconds)
        return False
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum, frame):
        stop.set()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGINT, on_interrupt)
    try:
        return _held(previous) or stop.wait(seconds)
    finally:
        signal.signal(signal.SIGINT, previous)


def _held(handler) -> bool:
    """Whether the runner already holds a Ctrl-C that came as this task began (taskrun's
    _deferred_interrupt records it in its `came` list until the task ends): then the pause
    must not start. Checked after ours is installed, so no Ctrl-C falls between the two."""
    for cell in getattr(handler, "__closure__", None) or ():
        came = getattr(cell.cell_contents, "came", None)
        if isinstance(came, list) and came:
            return True
    return False


# --- systemd ------------------------------------------------------------------------------------

UNSUPPORTED = ("masked", "scope", "no_block", "force", "daemon_reexec")


def _systemctl(control: ServiceControl, *words: str, act: bool = True) -> str:
    """A systemctl line as the adapter writes its actions (sudo -n when it becomes root)."""
    adapter = control.adapter
    sudo = ("sudo", "-n") if act and getattr(adapter, "become", False) else ()
    return " ".join(shlex.quote(w) for w in (*sudo, "systemctl", *words))


def _run(ctx: TaskContext, control: ServiceControl, line: str, what: str, acting: bool = True):
    control.commands.append(line)
    control.acted = control.acted or acting
    out = ctx.run(line)
    if acting and out.rc != 0:
        said = (out.stderr.strip() or out.stdout.strip()).splitlines()
        raise ServiceError(f"{what} failed (rc={out.rc}): {said[-1] if said else ''}")
    return out


@register
class SystemdModule(Module):
    """Ansible's systemd module through the host's service manager.

    state as `service` does (health waits included), reloaded where the manager can reload
    (systemd, pm2), enabled and daemon_reload only under systemd; elsewhere the task fails saying why.

    Changed: when the state, enablement or unit files (daemon_reload) changed.
    Check mode: changes nothing; says what it would do.
    Example:
        - name: the engine is running
          systemd:
            name: titan-execution
            state: started
    """

    name = "systemd"
    args = {
        "name": Arg(str, required=True),
        "state": Arg(str, choices=("started", "stopped", "restarted", "reloaded")),
        "enabled": Arg(bool), "daemon_reload": Arg(bool, default=False),
        **{key: Arg(bool if key != "scope" else str, help="not supported") for key in UNSUPPORTED},
        "wait_healthy": Service.args["wait_healthy"], "health_url": Service.args["health_url"],
        "timeout": Service.args["timeout"],
    }

    @classmethod
    def check_combination(cls, args: dict) -> list[str]:
        problems = [f"argument {key!r} is not supported by ripcord (it acts on services through "
                    "their manager: state, enabled, daemon_reload)" for key in UNSUPPORTED if key in args]
        if not any(args.get(key) is not None for key in ("state", "enabled")) \
                and not args.get("daemon_reload"):
            problems.append("one of 'state', 'enabled' or 'daemon_reload' is required")
        return problems

    def run(self, ctx: TaskContext, args: dict) -> Result:
        name, state = args["name"], args.get("state")
        control = control_for(ctx)
        manager = control.adapter.manager
        data: dict[str, Any] = {"name": name, "manager": manager, "commands": control.commands}
        changes: list[str] = []
        try:
            if args["daemon_reload"] or args.get("enabled") is not None:
                if not isinstance(control.adapter, Systemd):
                    what = "daemon_reload" if args["daemon_reload"] else "enabled"
                    return Result(failed=True, data=data, msg=(
                        f"{what}: {manager} on {ctx.host} has no such setting ripcord can change "
                        f"({BOOT_SETTING.get(manager, 'its own configuration decides')})"))
            if args["daemon_reload"] and not ctx.check:
                _run(ctx, control, _systemctl(control, "daemon-reload"), "systemctl daemon-reload")
            if args.get("enabled") is not None:
                changes += self._enabled(ctx, control, name, bool(args["enabled"]), data)
            if state == "reloaded":
                changes += self._reload(ctx, control, name, data)
            elif state is not None:
                result = Service().run(ctx, Service.with_defaults(
                    {k: args[k] for k in ("name", "state", "wait_healthy", "health_url", "timeout")
                     if args.get(k) is not None}))
                data["commands"] = control.commands + result.data.pop("commands", [])
                data.update(result.data)
                if result.failed:
                    return Result(changed=bool(changes) or result.changed, failed=True,
                                  msg=result.msg, data=data)
                if result.changed:
                    changes.append(result.msg)
        except RipcordError as exc:
            return Result(changed=control.acted, failed=True, msg=str(exc), data=data)
        return Result(changed=bool(changes), data=data,
                      msg="; ".join(changes) if changes else f"{name} is as asked")

    @staticmethod
    def _enabled(ctx: TaskContext, control: ServiceControl, name: str, wanted: bool,
                 data: dict) -> list[str]:
        unit = control.adapter.unit(name)
        out = _run(ctx, control, _systemctl(control, "is-enabled", unit, act=False), "", acting=False)
        word = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
        if word in ("not-found", "") and out.rc != 0 and "No such file" in out.stderr + out.stdout:
            raise ServiceError(f"systemd does not know {unit!r}")
        data["enabled"] = out.rc == 0
        if data["enabled"] == wanted:
            return []
        verb = "enable" if wanted else "disable"
        if not ctx.check:
            _run(ctx, control, _systemctl(control, verb, unit), f"systemctl {verb} {unit}")
            data["enabled"] = wanted
        return [f"would {verb} {name}" if ctx.check else f"{verb}d {name}"]

    @staticmethod
    def _reload(ctx: TaskContext, control: ServiceControl, name: str, data: dict) -> list[str]:
        """Ansible's reloaded: reload a running service, start a stopped one."""
        if not isinstance(control.adapter, (Systemd, Pm2)):
            raise ServiceError(f"state=reloaded: {control.adapter.manager} cannot reload {name} in "
                               "place; use state=restarted")
        before = control.status(name)
        data.update(before.as_data())
        verb = "reload" if before.state in (RUNNING, STARTING) else "start"
        if not ctx.check:
            line = control.adapter.action(verb, name) if verb == "reload" else None
            if line:
                _run(ctx, control, line, f"{control.adapter.manager} reload {name}")
            else:
                control.act("start", name)
            data.update(control.status(name).as_data())
        return [f"would {verb} {name}" if ctx.check else
                f"{'reloaded' if verb == 'reload' else 'started'} {name}"]


BOOT_SETTING = {
    "supervisor": "a program's autostart in supervisord's configuration, which supervisorctl "
                  "update applies by restarting the program",
    "docker_compose": "a service's restart policy in the compose file",
    "pm2": "pm2 startup and pm2 save",
}


# --- service_facts ------------------------------------------------------------------------------

class _FactsResult(Result):
    """Registered as Ansible's ({ansible_facts: {services}}); as a fact, the services join the
    host's `ansible_facts` rather than becoming the bare variable `services`, which in ripcord
    is the inventory's list of the host's services."""

    def registered(self) -> dict[str, Any]:
        return {**super().registered(), "ansible_facts": {"services": self.data["services"]}}


STATE_WORDS = {RUNNING: "running", STARTING: "starting", FAILED: "failed"}


@register
class ServiceFacts(Module):
    """Every service the host's manager knows, in Ansible's shape (ansible_facts.services).

    {name: {name, state: running|stopped|failed|..., status: enabled|disabled|...|unknown,
    source: the manager}}.

    Changed: never.
    Check mode: runs as usual (it changes nothing).
    Example:
        - service_facts:
        - debug:
            msg: "{{ ansible_facts.services['titan-execution'].state }}"
    """

    name = "service_facts"
    args = {}
    defines = frozenset({"ansible_facts"})

    def run(self, ctx: TaskContext, args: dict) -> Result:
        control = control_for(ctx)
        adapter = control.adapter
        try:
            services = list_services(adapter, lambda line: _run(ctx, control, line, "", acting=False))
        except (RipcordError, ValueError) as exc:
            return Result(failed=True, msg=f"cannot list {adapter.manager} services: {exc}")
        facts = dict(ctx.vars.get("ansible_facts") or {})
        facts["services"] = services
        return _FactsResult(msg=f"{len(services)} services ({adapter.manager})",
                            data={"services": services, "commands": control.commands,
                                  "ansible_facts": {"ansible_facts": facts}})


def _fact(name: str, state: str, source: str, status: str = "unknown") -> dict[str, str]:
    return {"name": name, "state": state, "status": status, "source": source}


def list_services(adapter, run) -> dict[str, dict[str, str]]:
    """The manager's services as Ansible's service_facts shows them. `run(line)` runs a command
    on the host and returns its output (rc, stdout, stderr)."""
    if isinstance(adapter, Supervisor):
        conf = ("-c", adapter.config) if adapter.config else ()
        out = run(" ".join(shlex.quote(w) for w in ("supervisorctl", *conf, "status")))
        found = {}
        for line in out.stdout.splitlines():
            words = line.split(None, 2)
            if len(words) >= 2 and words[1] in SUPERVISOR_STATES:
                state, _ = SUPERVISOR_STATES[words[1]]
                found[words[0]] = _fact(words[0], STATE_WORDS.get(state, "stopped"), "supervisor")
        if out.rc not in (0, 3) or (not found and out.stdout.strip()):
            raise ServiceError(f"supervisorctl status (rc={out.rc}): "
                               f"{(out.stderr or out.stdout).strip()[:200]}")
        return found
    if isinstance(adapter, Systemd):
        return _systemd_services(run)
    if isinstance(adapter, DockerCompose):
        out = run(adapter._compose("ps", "--all", "--format", "json"))
        if out.rc != 0:
            raise ServiceError(f"docker compose ps (rc={out.rc}): {out.stderr.strip()[:200]}")
        found = {}
        for record in _json_records(out.stdout):
            service = str(record.get("Service") or record.get("Name") or "?")
            state = adapter._container(service, record).state
            worse = found.get(service, {}).get("state") == "failed"
            found[service] = _fact(service, "failed" if worse else STATE_WORDS.get(state, "stopped"),
                                   "docker_compose")
        return found
    if isinstance(adapter, Pm2):
        out = run("pm2 jlist")
        processes = _pm2_list(out) if out.rc == 0 else None
        if processes is None:
            raise ServiceError(f"cannot read pm2 jlist (rc={out.rc})")
        found = {}
        for proc in processes:
            name = str(proc.get("name"))
            raw = str(proc.get("pm2_env", {}).get("status", "unknown"))
            found[name] = _fact(name, {"online": "running", "launching": "starting",
                                       "errored": "failed"}.get(raw, "stopped"), "pm2")
        return found
    raise ServiceError(f"no service listing for {adapter.manager}")


SYSTEMD_BAD = ("not-found", "masked", "failed")


def _systemd_services(run) -> dict[str, dict[str, str]]:
    """Ansible's reading of `systemctl list-units` then `list-unit-files` (the status)."""
    units = run("systemctl list-units --no-pager --type service --all --plain --no-legend")
    if units.rc != 0:
        raise ServiceError(f"systemctl list-units (rc={units.rc}): {units.stderr.strip()[:200]}")
    found = {}
    for line in (ln for ln in units.stdout.split("\n") if ".service" in ln):
        fields = line.split()
        if len(fields) < 4:
            continue
        status = next((bad for bad in SYSTEMD_BAD if bad in fields[:-1]), fields[2])
        found[fields[0]] = _fact(fields[0], "running" if fields[3] == "running" else "stopped",
                                 "systemd", status)
    files = run("systemctl list-unit-files --no-pager --type service --all --no-legend")
    if files.rc == 0:
        for line in (ln for ln in files.stdout.split("\n") if ".service" in ln):
            words = line.split()
            if len(words) < 2:
                continue
            name, status = words[:2]
            if name not in found:
                found[name] = _fact(name, "inactive", "systemd", status)  # not loaded: inactive
            elif found[name]["status"] not in SYSTEMD_BAD:
                found[name]["status"] = status
    return found
