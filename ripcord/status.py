"""`invoke status`: the fleet's trading state on one screen, read-only.

In an incident the first question is "where are we now?": which hosts answer, what the service
manager says, whether each engine is halted and by what, whether the brain may send signals,
what is open at the exchange, whether prices are fresh, whether the engines run one release.
Every fact is read over the host's own SSH connection (so URLs are seen as the host sees them);
nothing is changed and no host lock is taken, so status can run beside a procedure that holds one.
"""

from __future__ import annotations

import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rich.console import Console
from rich.table import Table

from ripcord.errors import RipcordError, UnreachableError
from ripcord.inventory import load_operator_inventory
from ripcord.modules.base import TaskContext
from ripcord.modules.httpchannel import ChannelError, request
from ripcord.modules.service import control_for
from ripcord.modules.trading import ExchangeAccount
from ripcord.report import inert
from ripcord.services import ServiceControl
from ripcord.templating import Secrets, Templar, resolve_vars
from ripcord.verify import connect

ENGINE, BRAIN, MARKET_DATA = "titan-execution", "titan-brain", "titan-market-data"
HTTP_TIMEOUT_S = 3.0
COMMAND_TIMEOUT_S = 10.0
STALE_PRICE_S = 5.0  # the market-data service calls itself degraded past this age too
STATE_STYLE = {"RUNNING": "green", "STARTING": "yellow", "STOPPED": "dim", "FATAL": "bold red",
               "BACKOFF": "red", "EXITED": "red"}


def _health(ctx: TaskContext, url: str | None) -> tuple[dict | None, str | None]:
    """A /health answer as (JSON object, None), or (None, why there is none)."""
    if not url:
        return None, None
    try:
        answer = request(ctx, url, timeout=HTTP_TIMEOUT_S)
    except ChannelError as exc:
        return None, str(exc)
    if answer.status != 200 or not isinstance(answer.json, dict):
        return None, f"{url} answered HTTP {answer.status}"
    return answer.json, None


def _service(control: ServiceControl, ctx: TaskContext, name: str, url: str | None) -> dict:
    """The manager's own word for the service (RUNNING, FATAL...) and what its /health says."""
    try:
        state, error = control.status(name).raw, None
    except UnreachableError:
        raise
    except RipcordError as exc:
        state, error = "?", str(exc)
    health, why = _health(ctx, url)
    fact = {"state": state, "health": (health or {}).get("status") or ("no answer" if url else None),
            "version": (health or {}).get("version"), "error": error or why, "_json": health}
    if name == MARKET_DATA and health and health.get("last_price_ts"):
        fact["last_price_age_s"] = round(time.time() - float(health["last_price_ts"]), 1)
    return fact


def _engine(ctx: TaskContext, health: dict | None) -> dict:
    """Halt state two ways: what the engine says, and whether the halt file is on disk."""
    path = ctx.vars.get("titan_halt_file") or f"{ctx.vars.get('titan_home')}/system.halt"
    present = ctx.run(f"test -e {shlex.quote(str(path))}").rc == 0
    health = health or {}
    return {"state": health.get("state"), "halted": health.get("halted"),
            "halt_source": health.get("halt_source"), "halt_file": present, "halt_file_path": path,
            "positions": health.get("positions"), "open_orders": health.get("open_orders"),
            "version": health.get("version")}


def host_facts(ctx: TaskContext) -> dict:
    """Everything status shows about one host, over its connection; a lost connection says so."""
    urls = ctx.vars.get("health_urls") or {}
    names = list(dict.fromkeys([*(ctx.vars.get("services") or []), *urls]))
    control = control_for(ctx)
    try:
        services = {n: _service(control, ctx, n, urls.get(n)) for n in names}
        engine = _engine(ctx, services[ENGINE]["_json"]) if ENGINE in services else None
    except UnreachableError as exc:
        return {"reachable": False, "error": str(exc), "services": {}, "engine": None}
    for fact in services.values():
        del fact["_json"]
    return {"reachable": True, "error": None, "services": services, "engine": engine}


def brain_facts(ctx: TaskContext | None) -> dict:
    """The brain's master arm and breaker, asked from a core host (where the brain is reached)."""
    if ctx is None:
        return {"host": None, "armed": None, "breaker": None, "breaker_reason": None,
                "version": None, "error": "no reachable host with brain_url"}
    base = str(ctx.vars["brain_url"]).rstrip("/")
    try:
        health, why = _health(ctx, f"{base}/health")
        breaker, _ = _health(ctx, f"{base}/api/breaker") if health else (None, None)
    except UnreachableError as exc:
        health, breaker, why = None, None, str(exc)
    health, breaker = health or {}, breaker or {}
    return {"host": ctx.host, "armed": health.get("armed"), "breaker": health.get("breaker"),
            "breaker_reason": breaker.get("reason"), "version": health.get("version"), "error": why}


def exchange_facts(ctx: TaskContext | None) -> dict:
    """The account's open orders at the exchange, asked from an exec host with its API key."""
    if ctx is None:
        return {"host": None, "open_orders": None, "error": "no reachable host with exchange_url"}
    try:
        return {"host": ctx.host, "open_orders": len(ExchangeAccount(ctx).open_orders()),
                "error": None}
    except RipcordError as exc:
        return {"host": ctx.host, "open_orders": None, "error": str(exc)}


def _first(contexts: dict[str, TaskContext], var: str, preferred: set[str]) -> TaskContext | None:
    with_var = [c for c in contexts.values() if c.vars.get(var)]
    return next((c for c in with_var if c.host in preferred), with_var[0] if with_var else None)


def fleet_status(pattern: str, inventory_paths: list[str] | None = None, forks: int = 20) -> dict:
    """The --json object of `invoke status`; `ok` is false when any host was unreachable."""
    started = time.monotonic()
    inventory = load_operator_inventory(inventory_paths)
    hosts = inventory.select(pattern)
    connections, unreachable = connect(inventory, hosts, forks)
    templar, secrets = Templar(), Secrets()
    try:
        contexts = {h: TaskContext(h, resolve_vars(templar, dict(inventory.host_vars(h))), conn,
                                   timeout=COMMAND_TIMEOUT_S, templar=templar, secrets=secrets)
                    for h, conn in connections.items()}
        core, execs = (set(inventory.group_hosts(g)) if g in inventory.groups else set()
                       for g in ("core", "exec"))
        with ThreadPoolExecutor(max_workers=max(1, min(forks, len(contexts) + 2))) as pool:
            found = {h: pool.submit(host_facts, c) for h, c in contexts.items()}
            brain = pool.submit(brain_facts, _first(contexts, "brain_url", core))
            exchange = pool.submit(exchange_facts, _first(contexts, "exchange_url", execs))
            facts = {h: f.result() for h, f in found.items()}
            brain, exchange = brain.result(), exchange.result()
    finally:
        for conn in connections.values():
            conn.close()
    for host, why in unreachable.items():
        facts[host] = {"reachable": False, "error": why, "services": {}, "engine": None}
    facts = {h: facts[h] for h in hosts}
    engines = {h: f["engine"]["version"] for h, f in facts.items() if f["engine"]}
    report = {"ok": all(f["reachable"] for f in facts.values()), "task": "status", "hosts": facts,
              "brain": brain, "exchange": exchange,
              "versions": {"engines": engines, "engines_differ": len(set(engines.values()) - {None}) > 1},
              "duration_s": round(time.monotonic() - started, 3)}
    return secrets.redact(report)  # nothing here should hold a secret; if one slips in, it is hidden


def _cell(value: Any, style: str = "") -> str:
    text = "-" if value is None else inert(value)  # facts come from hosts: shown, never obeyed
    return f"[{style}]{text}[/]" if style else text


def _hosts_table(report: dict) -> Table:
    table = Table(title="hosts and services", title_justify="left")
    for column in ("host", "service", "state", "health", "version"):
        table.add_column(column)
    for name, host in report["hosts"].items():
        if not host["reachable"]:
            table.add_row(_cell(name), _cell("UNREACHABLE", "bold magenta"), "", _cell(host["error"]),
                          "")
        for i, (service, fact) in enumerate(host["services"].items()):
            state, health = fact["state"], fact["health"]
            table.add_row(_cell(name) if i == 0 else "", _cell(service),
                          _cell(state, STATE_STYLE.get(state, "red")),
                          _cell(health, "green" if health == "ok" else "yellow" if health else "dim"),
                          _cell(fact["version"]))
        table.add_section()
    return table


def _engines_table(report: dict) -> Table:
    table = Table(title="execution engines", title_justify="left")
    for column in ("host", "trading", "source", "halt file", "positions", "orders", "version"):
        table.add_column(column)
    differ = report["versions"]["engines_differ"]
    for name, host in report["hosts"].items():
        engine = host["engine"]
        if engine is None:
            continue
        trading = {True: ("HALTED", "bold red"), False: ("trading", "green")}.get(
            engine["halted"], ("unknown", "yellow"))
        positions = "\n".join(f"{s} {q:g}" for s, q in (engine["positions"] or {}).items() if q)
        table.add_row(_cell(name), _cell(*trading), _cell(engine["halt_source"]),
                      _cell("present", "red") if engine["halt_file"] else "absent",
                      _cell(positions or "flat"), _cell(engine["open_orders"]),
                      _cell(engine["version"], "bold red" if differ else ""))
    return table


def _summary(report: dict) -> Table:
    brain, exchange, versions = report["brain"], report["exchange"], report["versions"]
    lines = Table.grid(padding=(0, 2))
    if brain["error"]:
        lines.add_row("[bold]brain[/]", _cell(brain["error"], "red"))
    else:
        breaker = str(brain["breaker"]) + (f" ({brain['breaker_reason']})" if brain["breaker_reason"] else "")
        lines.add_row("[bold]brain[/]", f"master arm {_cell('ON' if brain['armed'] else 'OFF', 'bold')}, "
                      f"breaker {_cell(breaker, 'green' if brain['breaker'] == 'CLOSED' else 'bold red')}")
    lines.add_row("[bold]exchange[/]", _cell(exchange["error"], "red") if exchange["error"] else
                  f"{exchange['open_orders']} open orders (asked from {inert(exchange['host'])})")
    for name, host in report["hosts"].items():
        if MARKET_DATA in host["services"]:
            age = host["services"][MARKET_DATA].get("last_price_age_s")
            shown = "no price" if age is None else f"{age:g}s ago"
            lines.add_row("[bold]last price[/]", _cell(f"{shown} ({name})", "red" if age is None
                                                       or age > STALE_PRICE_S else ""))
    found = sorted(set(versions["engines"].values()) - {None})
    if found:
        lines.add_row("[bold]versions[/]", _cell(f"engines DIFFER: {', '.join(found)}", "bold red")
                      if versions["engines_differ"] else f"engines agree: {inert(found[0])}")
    return lines


def render(report: dict, console: Console) -> None:
    """Hosts and services, then the engines, then one line each for brain, exchange, prices."""
    console.print(_hosts_table(report))
    engines = _engines_table(report)
    if engines.row_count:
        console.print(engines)
    console.print(_summary(report))
    console.print(f"[dim]{len(report['hosts'])} hosts in {report['duration_s']:g}s; read-only[/]")
