"""Which service a refused port belongs to, and the command that brings it back.

`127.0.0.1:24041: connect failed` is true but leaves the operator to work out, at the worst
moment, that it is titan-execution on exec-1 and that supervisor has it STOPPED (a halt's last
resort stops engines). The host's inventory says which service listens where (`health_urls`,
and the topology's health templates for the databases), and its service manager says the state,
so the message can name both and the fix:

    titan-execution on exec-1 is not running (supervisor: STOPPED; 127.0.0.1:24041: connect
    failed); start it: ripcord restart --host exec-1 --service titan-execution
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ripcord.errors import RipcordError
from ripcord.modules.base import TaskContext

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def _same_host(a: str | None, b: str | None) -> bool:
    return a == b or (a in LOOPBACK and b in LOOPBACK)


def service_at(ctx: TaskContext, host: str, port: int) -> str | None:
    """The service of ctx.host that listens on host:port, as its inventory says, or None."""
    urls: dict[str, Any] = dict(ctx.vars.get("health_urls") or {})
    try:
        from ripcord.topology import find_topology, load_cached

        topology = load_cached(find_topology())
        for name in ctx.vars.get("services") or ():
            node = topology.nodes.get(name)
            if node and node.health and name not in urls and ctx.templar:
                urls[name] = ctx.templar.render(node.health, ctx.vars)
    except (RipcordError, OSError, TypeError):
        pass  # no topology here: health_urls alone
    for name, url in urls.items():
        try:
            parts = urlsplit(str(url))
            if parts.port == port and _same_host(parts.hostname, host):
                return str(name)
        except ValueError:
            continue
    return None


def explain(ctx: TaskContext, host: str, port: int, error: str) -> str:
    """`error` (a refused connection to host:port, seen from ctx.host) with the service it
    belongs to, its state, and the command that brings it back; `error` alone when unknown."""
    name = service_at(ctx, host, port)
    if name is None or ctx.conn is None:
        return error
    return state_and_fix(ctx, name, error) or error


def down(ctx: TaskContext, host: str, port: int) -> str | None:
    """The service of ctx.host at host:port is not running: which, its state, and the fix."""
    name = service_at(ctx, host, port)
    return state_and_fix(ctx, name) if name else None


def state_and_fix(ctx: TaskContext, name: str, error: str = "") -> str | None:
    """`NAME on HOST is not running (MANAGER: STATE[; error]); start it: COMMAND`, asking the
    host's service manager; None when it cannot be asked or (without `error`) the service runs."""
    if ctx.conn is None:
        return None
    manager = ctx.vars.get("service_manager") or "supervisor"
    from ripcord.cli import program  # the command word only: rich stays out of the modules' imports

    try:
        from ripcord.modules.service import control_for

        status = control_for(ctx).status(name)
    except (RipcordError, OSError) as exc:  # a hint: never a reason to fail differently
        return f"{error} ({name} on {ctx.host}; its state is unknown: {exc})" if error else None
    fix = f"{program()} restart --host {ctx.host} --service {name}"
    said = f"; {error}" if error else ""
    if not status.active:
        return f"{name} on {ctx.host} is not running ({manager}: {status.raw}{said}); start it: {fix}"
    if error:
        return (f"{name} on {ctx.host} is {status.state.lower()} ({manager}: {status.raw}) but "
                f"refuses connections ({error}); if it does not recover, restart it: {fix}")
    return None


def nats_hint(ctx: TaskContext, error: str) -> str:
    """A refused NATS connection (`error`) with the inventory host that runs nats and the command
    that restarts it there; `error` alone for anything else, or when no host lists nats."""
    if not error.startswith("cannot connect to NATS") or "connection refused" not in error:
        return error
    hostvars = ctx.vars.get("hostvars")  # looked up lazily: an empty dict until asked
    every = (ctx.vars.get("groups") or {}).get("all") or ()
    runs = [h for h in every if hostvars is not None and h in hostvars
            and "nats" in (hostvars[h].get("services") or ())]
    if not runs:
        return error
    from ripcord.cli import program

    return (f"{error}; nats runs on {', '.join(runs)}: see `{program()} status --host {runs[0]}`, "
            f"and if it is stopped there, start it: {program()} restart --host {runs[0]} --service nats")
