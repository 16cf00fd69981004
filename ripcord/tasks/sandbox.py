"""`sandbox.up`, `sandbox.down`, `sandbox.status`: the local fleet the tests and the demo run on."""

from __future__ import annotations

import os
from pathlib import Path

from invoke import Collection

from ripcord.cli import emit_json, run_task
from ripcord.errors import InputError
from ripcord.tasks.options import task


def _fleet(dir: str | None, base_port: str | None = None, hosts: str | None = None, say=None):
    from ripcord.sandbox.fleet import Fleet

    def number(value: str | None, name: str) -> int | None:
        if value in (None, ""):
            return None
        try:
            return int(value)
        except ValueError:
            raise InputError(f"--{name} must be a whole number, not {value!r}") from None

    base = number(base_port or os.environ.get("RIPCORD_SANDBOX_BASE_PORT"), "base-port")
    return Fleet(Path(dir) if dir else None, base_port=base, hosts=number(hosts, "hosts"),
                 say=say or (lambda _: None))


@task(help={"hosts": "total hosts: db-1, core-1 and N-2 exec hosts (default 4)",
            "base-port": "first of the loopback ports the fleet uses (default 24000)",
            "dir": "where the fleet's files live (default /var/lib/ripcord/sandbox as root)",
            "json": "print the resulting status as one JSON object",
            "debug": "show tracebacks"})
def up(c, hosts=None, base_port=None, dir=None, json_=False, debug=False):
    """Bring the sandbox fleet up (a no-op when it already runs) and show it."""
    from ripcord.sandbox.show import render_status

    def body(out):
        fleet = _fleet(dir, base_port, hosts, say=lambda m: out.print(f"[dim]>[/] {m}"))
        status = fleet.up()
        emit_json(status) if json_ else render_status(status, out)

    run_task(body, json_mode=json_, debug=debug)


@task(help={"purge": "also delete the fleet's directory and its generated inventory",
            "dir": "the fleet's directory", "debug": "show tracebacks"})
def down(c, purge=False, dir=None, debug=False):
    """Stop every process of the sandbox fleet; no port is left listening."""

    def body(out):
        _fleet(dir, say=lambda m: out.print(f"[dim]>[/] {m}")).down(purge=purge)
        out.print("sandbox down")

    run_task(body, debug=debug)


@task(help={"json": "one JSON object on stdout: hosts, ports, URLs, health",
            "dir": "the fleet's directory", "debug": "show tracebacks"})
def status(c, json_=False, dir=None, debug=False):
    """Show the sandbox fleet: hosts, services, health, and how to reach each piece."""
    from ripcord.sandbox.show import render_status

    def body(out):
        result = _fleet(dir).status()
        emit_json(result) if json_ else render_status(result, out)

    run_task(body, json_mode=json_, debug=debug)


@task(positional=["fault"], help={"fault": "what to break (`list`: the faults, each with its scenario)",
                                  "host": "the sandbox host to strike (default: the fault's own)",
                                  "dir": "the fleet's directory", "debug": "show tracebacks"})
def chaos(c, fault, host=None, dir=None, debug=False):
    """Inject a failure scenario's fault into the sandbox (`sandbox.heal` undoes them all)."""
    from ripcord.sandbox import chaos as faults

    def body(out):
        if fault == "list":
            for name, f in faults.FAULTS.items():
                out.print(f"{name:<14} scenario {f.scenario:>2}  {f.what} (on {f.default_host})",
                          soft_wrap=True)
            return
        fleet = _fleet(dir)
        if not fleet.running():
            raise InputError("the sandbox is not running", hint="invoke sandbox.up")
        struck = faults.inject(fleet.plan, fault, host)
        out.print(f"injected {fault} on {struck.name}: {faults.FAULTS[fault].what}; "
                  f"`invoke triage --host sandbox` should name scenario {faults.FAULTS[fault].scenario}")

    run_task(body, debug=debug)


@task(help={"dir": "the fleet's directory", "debug": "show tracebacks"})
def heal(c, dir=None, debug=False):
    """Undo every fault `sandbox.chaos` injected."""
    from ripcord.sandbox import chaos as faults

    def body(out):
        healed = faults.heal(_fleet(dir).plan)
        out.print("healed: " + ", ".join(healed) if healed else "nothing to heal")

    run_task(body, debug=debug)


collection = Collection("sandbox", up, down, status, chaos, heal)
