"""The sandbox's status as a rich table: hosts, services, supervisor state and health."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

STATE_STYLE = {"RUNNING": "green", "STARTING": "yellow", "BACKOFF": "red", "FATAL": "bold red",
               "STOPPED": "dim", "EXITED": "red"}


def _health_cell(health: dict | None) -> str:
    if health is None:
        return "[red]no answer[/]"
    status = health.get("status", "?")
    colour = "green" if status == "ok" else "yellow"
    extra = []
    if "halted" in health:
        extra.append("[bold red]HALTED[/]" if health["halted"] else "trading")
    if "armed" in health:
        extra.append(f"armed={health['armed']} breaker={health.get('breaker')}")
    return f"[{colour}]{status}[/] " + " ".join(extra)


def render_status(status: dict, console: Console) -> None:
    if not status["running"]:
        console.print(f"sandbox in {status['root']} is [bold]down[/]")
        return
    table = Table(title=f"ripcord sandbox ({status['root']})", title_justify="left")
    for column in ("host", "ssh", "service", "state", "health"):
        table.add_column(column)
    for name, host in status["hosts"].items():
        first = True
        for service, info in host["services"].items():
            state = info["state"]
            health = _health_cell(info["health"]) if info["health_url"] else "[dim]-[/]"
            table.add_row(name if first else "", f"127.0.0.1:{host['ssh_port']}" if first else "",
                          service, f"[{STATE_STYLE.get(state, 'white')}]{state}[/]", health)
            first = False
        table.add_section()
    console.print(table)
    reach = Table.grid(padding=(0, 2))
    for label, value in (("NATS", status["nats_url"]), ("PostgreSQL", status["postgres_dsn"]),
                         ("Redis", status["redis_url"]), ("exchange", status["exchange_url"]),
                         ("inventory", status["inventory"]),
                         ("ssh", f"{status['ssh_user']}@127.0.0.1 -p PORT -i {status['ssh_key']}"),
                         ("known_hosts", status["known_hosts"])):
        reach.add_row(f"[bold]{label}[/]", value)
    console.print(reach)
