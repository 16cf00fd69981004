"""service and services: bring a host's services to a state, through its own service manager.

`service` handles one service: started, stopped, restarted, or (no state) just its status.
`services` handles a set in dependency order (inventory/topology.yml): start tier by tier,
waiting for each tier to be healthy before the next, stop in reverse, so that a recovery follows
the runbook's order instead of racing it. Both are idempotent (started on a running service
changes nothing; restarted always changes) and, under --check, only say what they would do.

Health is judged from the host's own network position: the URL is fetched over an SSH
direct-tcpip channel, as `curl` on the host would, so a port bound to the host's loopback works.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ripcord.errors import InputError, RipcordError, UnreachableError
from ripcord.modules import httpchannel
from ripcord.modules.base import Arg, Module, Result, TaskContext, register
from ripcord.services import (
    FAILED,
    RUNNING,
    STARTING,
    ServiceControl,
    ServiceError,
    ServiceStatus,
    adapter_for,
)
from ripcord.topology import Topology, find_topology, load_cached

DEFAULT_TIMEOUT_S = 30.0
PAST = {"start": "started", "stop": "stopped"}
PROBE_TIMEOUT_S = 2.0
POLL_S = 0.25


# --- health, seen from the host -------------------------------------------------------------

@dataclass(frozen=True)
class _Health:
    """One health check: an http URL must answer 200 with JSON status "ok"; any other scheme
    (tcp://, redis://, nats://, postgresql://) must accept a TCP connection."""

    url: str

    def probe(self, ctx: TaskContext) -> tuple[bool, str]:
        parts = urlsplit(self.url)
        try:
            if parts.scheme != "http":
                if not parts.hostname or not parts.port:
                    return False, f"health URL {self.url!r} names no host and port"
                ok, seen = httpchannel.port_open(ctx, parts.hostname, parts.port, PROBE_TIMEOUT_S)
                return ok, f"{parts.hostname}:{parts.port} {'accepts connections' if ok else seen}"
            response = httpchannel.request(ctx, self.url, timeout=PROBE_TIMEOUT_S)
        except httpchannel.ChannelError as exc:
            return False, str(exc)
        if response.status != 200:
            return False, f"{self.url} answered HTTP {response.status}"
        if not isinstance(response.json, dict):
            return False, f"{self.url} answered no JSON object"
        status = response.json.get("status")
        return status == "ok", f"{self.url} status {status!r}"

    def wait(self, ctx: TaskContext, deadline: float) -> tuple[bool, str]:
        while True:
            ok, why = self.probe(ctx)
            if ok or time.monotonic() >= deadline:
                return ok, why
            time.sleep(POLL_S)


# --- shared steps ---------------------------------------------------------------------------

def _render(ctx: TaskContext, value: Any) -> Any:
    return ctx.templar.render(value, ctx.vars) if ctx.templar else value


def control_for(ctx: TaskContext) -> ServiceControl:
    return ServiceControl(adapter_for(ctx.vars, lambda value: _render(ctx, value)), ctx.run)


def _host_health_url(ctx: TaskContext, name: str) -> str | None:
    urls = ctx.vars.get("health_urls") or {}
    return urls.get(name) if isinstance(urls, dict) else None


def _needed(state: str, current: ServiceStatus) -> str | None:
    """The verb that brings `current` to `state`, or None when it is already there."""
    if state == "restarted":
        return "restart"
    if state == "started":
        return None if current.state in (RUNNING, STARTING) else "start"
    return "stop" if current.active else None


def _settle(control: ServiceControl, name: str, want_running: bool,
            deadline: float) -> ServiceStatus:
    """Poll the manager until the service is RUNNING (or no longer active), a dead end, or time.

    supervisorctl and systemctl return once the state is reached; docker compose and pm2 may
    return earlier, hence the polling.
    """
    while True:
        status = control.status(name)
        if (want_running and status.state == RUNNING) or (not want_running and not status.active):
            return status
        gave_up = want_running and status.state == FAILED and not status.active
        if gave_up or time.monotonic() >= deadline:
            raise ServiceError(f"{name} is {status.raw}, not "
                               f"{'running' if want_running else 'stopped'}"
                               + (f" ({status.detail})" if status.detail else ""))
        time.sleep(POLL_S)


def _refresh(control: ServiceControl, name: str, data: dict) -> None:
    """After a failed action, show the state it left (best effort: the host may be gone)."""
    try:
        data.update(control.status(name).as_data())
    except RipcordError:
        pass


def _become_healthy(ctx: TaskContext, name: str, url: str | None, deadline: float) -> str:
    if not url:
        raise ServiceError(f"no health check for {name} on {ctx.host}",
                           hint="set the host's health_urls, or wait_healthy: false")
    ok, why = _Health(url).wait(ctx, deadline)
    if not ok:
        raise ServiceError(f"{name} did not become healthy: {why}")
    return why


# --- service ----------------------------------------------------------------------------------

@register
class Service(Module):
    """One service to a state; without `state`, its status (data.status) and nothing else.

    Through the host's own service manager (supervisor, systemd, docker compose, pm2); after a
    start it waits until the service's health URL answers, when it has one. `enabled` (start at
    boot) as the systemd module does it: under systemd only, elsewhere the task fails saying why.

    Changed: when the state changed (started on a running service changes nothing; restarted always).
    Check mode: changes nothing; says what it would do (`would start titan-execution (now STOPPED)`).
    Example:
        - name: the engine is running again
          service:
            name: titan-execution
            state: started
    """

    name = "service"
    args = {
        "name": Arg(str, required=True),
        "state": Arg(str, choices=("started", "stopped", "restarted")),
        "wait_healthy": Arg(bool, help="default: true when the host has a health URL for it"),
        "health_url": Arg(str, help="default: the host's health_urls entry"),
        "timeout": Arg((int, float), default=DEFAULT_TIMEOUT_S,
                       help="seconds to reach the state and become healthy"),
        "enabled": Arg(bool, help="started at boot: systemd only (as systemd's enabled)"),
    }

    def run(self, ctx: TaskContext, args: dict) -> Result:
        if args.get("enabled") is not None:  # Ansible's service takes it: systemd's does it
            from ripcord.modules.ansiblecompat import SystemdModule

            return SystemdModule().run(ctx, SystemdModule.with_defaults(
                {key: value for key, value in args.items() if value is not None}))
        name, state = args["name"], args.get("state")
        control = control_for(ctx)
        data: dict[str, Any] = {"name": name, "manager": control.adapter.manager,
                                "commands": control.commands}
        try:
            before = control.status(name)
            data.update(before.as_data())
            if state is None:
                return Result(msg=f"{name} is {before.state} ({before.raw})", data=data)
            verb = _needed(state, before)
            data["before"] = before.state
            if verb is None:
                return Result(msg=f"{name} is already {before.state}", data=data)
            if ctx.check:
                return Result(changed=True, msg=f"would {verb} {name} (now {before.state})",
                              data=data)
            return self._act(ctx, control, name, verb, args, data)
        except RipcordError as exc:
            if control.acted:
                _refresh(control, name, data)
            return Result(changed=control.acted, failed=True, msg=str(exc), data=data)

    def _act(self, ctx: TaskContext, control: ServiceControl, name: str, verb: str,
             args: dict, data: dict) -> Result:
        deadline = time.monotonic() + float(args["timeout"])
        control.act(verb, name)
        after = _settle(control, name, verb != "stop", deadline)
        data.update(after.as_data())
        url = args.get("health_url") or _host_health_url(ctx, name)
        wait = args.get("wait_healthy")
        if verb != "stop" and (wait or (wait is None and url)):
            data["health_url"] = url
            data["health"] = _become_healthy(ctx, name, url, deadline)
            data["healthy"] = True
        return Result(changed=True, msg=f"{name}: {verb} done, {after.state}", data=data)


# --- services ---------------------------------------------------------------------------------

@dataclass
class _Plan:
    """What `services` will do on one host, in order."""

    stop: list[str]
    start: list[list[str]]
    not_on_host: list[str] = field(default_factory=list)


@register
class Services(Module):
    """A host's services (or `with_dependents` of one) to a state, in dependency order.

    Started tier by tier (inventory/topology.yml), each tier healthy before the next; stopped in
    the reverse order.

    Changed: when any service's state changed.
    Check mode: changes nothing; lists the actions it would take, in order.
    Example:
        - name: the market-data feed and everything that reads it, restarted in order
          services:
            state: restarted
            with_dependents: titan-market-data
    """

    name = "services"
    args = {
        "state": Arg(str, required=True, choices=("started", "stopped", "restarted")),
        "names": Arg(list, help="default: the host's inventory `services`"),
        "with_dependents": Arg(str, help="this service and everything that depends on it"),
        "topology_file": Arg(str, help="default: inventory/topology.yml"),
        "wait_healthy": Arg(bool, default=True, help="wait for each tier to be healthy"),
        "timeout": Arg((int, float), default=DEFAULT_TIMEOUT_S,
                       help="seconds for each service to reach its state and be healthy"),
    }

    @classmethod
    def topology_problems(cls, path: str | None = None, names: list | None = None) -> list[str]:
        """Problems with a topology file (a cycle, an unknown dependency) and with names that
        it should know: for the playbook validator, before any host is touched."""
        try:
            topology = load_cached(find_topology(path))
        except InputError as exc:
            return [str(exc)]
        return [f"service {n!r} is not in {topology.source}"
                for n in names or () if isinstance(n, str) and n not in topology]

    @classmethod
    def check_combination(cls, args: dict) -> list[str]:
        path = args.get("topology_file")
        if isinstance(path, str) and "{{" in path:
            return []  # known only per host, at run time
        listed = args.get("names") if isinstance(args.get("names"), list) else []  # or a template
        names = [n for n in [*listed, args.get("with_dependents")]
                 if isinstance(n, str) and "{{" not in n]
        return cls.topology_problems(path, names)

    def run(self, ctx: TaskContext, args: dict) -> Result:
        data: dict[str, Any] = {"actions": [], "services": {}}
        control = None
        try:
            topology = load_cached(find_topology(args.get("topology_file")))
            plan = self._plan(ctx, topology, args)
            data.update(stop_order=plan.stop, start_tiers=plan.start, not_on_host=plan.not_on_host)
            control = control_for(ctx)
            data["manager"] = control.adapter.manager
            wanted = plan.stop + [s for tier in plan.start for s in tier]
            before = {s: control.status(s) for s in dict.fromkeys(wanted)}
            for service, status in before.items():
                data["services"][service] = {"before": status.state, "after": status.state,
                                             "done": []}
            if ctx.check:
                would = self._would(args["state"], plan, before)
                return Result(changed=bool(would), data={**data, "actions": would},
                              msg="would " + (", ".join(would) if would else "change nothing"))
            _Run(ctx, control, topology, args, data).apply(plan, before)
        except RipcordError as exc:
            changed = control is not None and control.acted
            return Result(changed=changed, failed=True, msg=str(exc), data=data)
        done = data["actions"]
        return Result(changed=bool(done), data=data,
                      msg=("; ".join(done) if done else "all already " + args["state"]))

    @staticmethod
    def _plan(ctx: TaskContext, topology: Topology, args: dict) -> _Plan:
        names = args.get("names") or ctx.vars.get("services") or []
        if not names:
            raise InputError(f"no services to manage on {ctx.host}",
                             hint="give names:, or list the host's services in the inventory")
        unknown = [n for n in names if n not in topology]
        if unknown:
            raise InputError(f"not in {topology.source}: {', '.join(unknown)}",
                             hint="every service needs an entry in the topology, for its order")
        selected, outside = list(names), []
        root = args.get("with_dependents")
        if root:
            family = {root} | topology.dependents(root)
            selected = [n for n in names if n in family]
            outside = sorted(family - set(names))
        state = args["state"]
        return _Plan(stop=topology.stop_order(selected) if state != "started" else [],
                     start=topology.tiers(selected) if state != "stopped" else [],
                     not_on_host=outside)

    @staticmethod
    def _would(state: str, plan: _Plan, before: dict[str, ServiceStatus]) -> list[str]:
        stops = [f"stop {s}" for s in plan.stop if before[s].active]
        starts = [f"start {s}" for tier in plan.start for s in tier
                  if state == "restarted" or _needed("started", before[s])]
        return stops + starts


class _Run:
    """Carries out a _Plan on one host, recording every action as it happens."""

    def __init__(self, ctx: TaskContext, control: ServiceControl, topology: Topology,
                 args: dict, data: dict):
        self.ctx, self.control, self.topology = ctx, control, topology
        self.args, self.data = args, data
        self.timeout = float(args["timeout"])

    def act(self, verb: str, service: str) -> None:
        """Send one action, recorded first: a failed one still shows as attempted."""
        self.data["actions"].append(f"{verb} {service}")
        self.data["services"][service]["done"].append(PAST[verb])
        self.control.act(verb, service)

    def settled(self, service: str, running: bool) -> None:
        deadline = time.monotonic() + self.timeout
        status = _settle(self.control, service, running, deadline)
        self.data["services"][service].update(after=status.state, raw_status=status.raw)
        url = self.health_url(service) if running and self.args["wait_healthy"] else None
        if url:
            self.data["services"][service]["health"] = _become_healthy(self.ctx, service, url,
                                                                       deadline)
            self.data["services"][service]["healthy"] = True

    def apply(self, plan: _Plan, before: dict[str, ServiceStatus]) -> None:
        for service in plan.stop:
            if before[service].active:
                self.act("stop", service)
                self.settled(service, running=False)
        restarting = self.args["state"] == "restarted"
        for tier in plan.start:
            starting = [s for s in tier if restarting or _needed("started", before[s])]
            for service in starting:
                self.act("start", service)
            for service in starting:  # the whole tier up and healthy before the next
                self.settled(service, running=True)

    def health_url(self, service: str) -> str | None:
        """The topology's check when it names one (rendered for this host), else the host's."""
        named = self.topology.health(service)
        if named is not None:
            return str(_render(self.ctx, named)).strip() or None
        return _host_health_url(self.ctx, service)


# --- restart ------------------------------------------------------------------------------------

@register
class Restart(Module):
    """Restarts services across the batch in dependency order, one tier on every host at once.

    Each tier is healthy everywhere before the next starts (the runbooks' recovery order). An
    engine that is trading (not halted) is refused unless `force`.

    Changed: on every host where a service was restarted.
    Check mode: changes nothing; says which services it would restart.
    Example:
        - name: restart the fleet's services in order
          restart:
            service: titan-market-data
    """

    name = "restart"
    fleet = True
    args = {
        "service": Arg(str, help="this service and whatever depends on it; default: all"),
        "force": Arg(bool, default=False, help="restart engines that are trading (not halted)"),
        "engine": Arg(str, default="titan-execution", help="the service that trades"),
        "topology_file": Arg(str, help="default: inventory/topology.yml"),
        "timeout": Arg((int, float), default=DEFAULT_TIMEOUT_S,
                       help="seconds for each service to be running and healthy"),
    }

    @classmethod
    def check_combination(cls, args: dict) -> list[str]:
        service = args.get("service")
        if not isinstance(service, str) or "{{" in service or not service:
            return []
        return Services.topology_problems(args.get("topology_file"), [service])

    def run_fleet(self, contexts: dict[str, TaskContext], args: dict[str, Any]
                  ) -> dict[str, Result | UnreachableError]:
        from concurrent.futures import ThreadPoolExecutor

        topology = load_cached(find_topology(args.get("topology_file")))
        wanted = self._selection(topology, contexts, args.get("service") or None)
        if not any(wanted.values()):
            return {h: Result(msg=f"{args.get('service')} does not run here") for h in contexts}
        trading = {} if args["force"] else self._trading_engines(contexts, wanted, args["engine"])
        if trading:
            why = "; ".join(f"{h}: {reason}" for h, reason in trading.items())
            return {h: Result(failed=True, msg=f"{why}; halt first (invoke halt) or pass --force")
                    for h in contexts}
        if any(ctx.check for ctx in contexts.values()):
            return {h: Result(changed=bool(s), msg="would restart " + (", ".join(s) or "nothing"))
                    for h, s in wanted.items()}
        done: dict[str, list[str]] = {h: [] for h in contexts}
        failures: dict[str, str] = {}
        lost: dict[str, UnreachableError] = {}
        with ThreadPoolExecutor(max_workers=len(contexts)) as pool:
            for tier in topology.tiers(set().union(*wanted.values())):
                work = {h: [s for s in tier if s in wanted[h]] for h in contexts}
                futures = {h: pool.submit(Services().run, contexts[h], Services.with_defaults(
                               {"state": "restarted", "names": names, "timeout": args["timeout"]}))
                           for h, names in work.items() if names}
                for host, future in futures.items():
                    try:
                        outcome = future.result()
                    except UnreachableError as exc:
                        lost[host] = exc
                        continue
                    done[host] += work[host]
                    if outcome.failed:
                        failures[host] = outcome.msg
                if failures or lost:  # a tier not healthy everywhere: the next would not work
                    break
        results: dict[str, Result | UnreachableError] = dict(lost)
        for host in contexts:
            if host in lost:
                continue
            msg = ("restarted " + ", ".join(done[host])) if done[host] else "nothing to restart"
            if failures.get(host):
                msg += f"; FAILED: {failures[host]}"
            elif failures or lost:
                msg += "; later tiers not restarted: a tier failed elsewhere"
            results[host] = Result(changed=bool(done[host]), failed=bool(failures.get(host)),
                                   msg=msg, data={"restarted": done[host]})
        return results

    @staticmethod
    def _selection(topology: Topology, contexts: dict[str, TaskContext],
                   root: str | None) -> dict[str, list[str]]:
        """Per host: the services to restart (the root's family, or all the host runs)."""
        family = ({root} | topology.dependents(root)) if root else None
        return {h: [s for s in (ctx.vars.get("services") or [])
                    if s in topology and (family is None or s in family)]
                for h, ctx in contexts.items()}

    @staticmethod
    def _trading_engines(contexts: dict[str, TaskContext], wanted: dict[str, list[str]],
                         engine: str) -> dict[str, str]:
        """Hosts whose engine would be restarted while it may trade, and why (asked at once: a
        frozen engine's health takes its whole timeout)."""
        from concurrent.futures import ThreadPoolExecutor

        asked = [h for h in contexts if engine in wanted[h]]
        if not asked:
            return {}
        with ThreadPoolExecutor(max_workers=len(asked)) as pool:
            answers = dict(zip(asked, pool.map(lambda h: may_trade(contexts[h], engine), asked),
                               strict=True))
        return {h: why for h, why in answers.items() if why}


def may_trade(ctx: TaskContext, engine: str) -> str | None:
    """Why the engine on this host may be trading, or None when it cannot be. Fails closed: only
    its own health saying `halted: true`, or a service manager that has no process up for it,
    proves it is not trading; a health that does not answer (a frozen process, a closed port)
    proves nothing."""
    url = _host_health_url(ctx, engine)
    why = f"no health URL for {engine}"
    if url:
        try:
            answer = httpchannel.request(ctx, url, timeout=PROBE_TIMEOUT_S)
            halted = answer.json.get("halted") if isinstance(answer.json, dict) else None
            if halted is True:
                return None
            if halted is False:
                return "the engine is trading"
            why = f"{url} answered HTTP {answer.status} without a halted flag"
        except httpchannel.ChannelError as exc:
            why = f"its health does not answer ({exc})"
    try:
        status = control_for(ctx).status(engine)
    except RipcordError as exc:
        return f"{why}, and its service state is unknown ({exc}): it may be trading"
    if status.active or status.state in (RUNNING, STARTING):
        return f"{why}, but {engine} is {status.raw}: it may be trading"
    return None  # no process up: it cannot trade
