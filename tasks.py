"""The operator's interface: thin invoke tasks that parse options and call ripcord.

    invoke sandbox.up [--hosts N] [--base-port P]    bring the local fleet up (idempotent)
    invoke sandbox.status [--json]                   hosts, services, health, how to reach them
    invoke sandbox.down [--purge]                    stop everything; --purge deletes its files
    invoke play PLAYBOOK --host PATTERN [...]         run a playbook (--check, --diff, --tags, -e)
    invoke inventory --list | --host NAME | --graph   what ripcord resolved, as ansible-inventory
    invoke verify --host PATTERN [--checks EXPR]      run checks/ on hosts (--junit FILE, --json)

The runbooks' procedures (docs/runbook.md), each a playbook in playbooks/, verified by checks:
    invoke halt --host PATTERN [--reason TEXT]        the kill switch ladder; never prompts
    invoke resume | flatten [--symbol S] | cancel-all | isolate --host PATTERN
    invoke master-arm --enable|--disable | breaker --reset --host PATTERN
    invoke restart --host PATTERN [--service NAME] [--force] | recover-crash --service NAME
    invoke status --host PATTERN                      one screen: the fleet's trading state
    invoke approve REQUEST_ID                         the second operator of the two-person rule

Exit codes (docs/exit-codes.md): 0 ok, 1 failed, 2 invalid input, 3 unreachable, 4 declined.
"""

from __future__ import annotations

import os
from pathlib import Path

from invoke import Collection, task

from ripcord.cli import emit_json, run_task
from ripcord.errors import InputError


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


def _csv(values) -> frozenset[str]:
    return frozenset(v.strip() for item in values or [] for v in item.split(",") if v.strip())


@task(iterable=["extra_vars", "tags", "skip_tags", "inventory"],
      help={"host": "host pattern to run on (required): limits every play's hosts",
            "inventory": "inventory file or directory (repeatable; default: inventory/)",
            "check": "dry run: report what would change, change nothing",
            "diff": "show file changes as diffs",
            "tags": "only tasks with these tags (comma-separated or repeated)",
            "skip-tags": "skip tasks with these tags",
            "extra-vars": "key=value or a JSON/YAML mapping; highest precedence (repeatable)",
            "forks": "hosts worked on at once (default 20)",
            "yes": "answer yes to every confirmation",
            "reason": "why: recorded in the journal",
            "approval": "the id of an approval another operator granted (two-person rule)",
            "json": "one JSON object on stdout", "debug": "show tracebacks"})
def play(c, playbook, host=None, inventory=None, check=False, diff=False, tags=None,
         skip_tags=None, extra_vars=None, forks=20, yes=False, reason="", approval=None,
         json_=False, debug=False):
    """Run a playbook on the hosts a pattern selects (validated before anything is touched)."""
    from invoke import Exit

    from ripcord.approvals import ApprovalRequired
    from ripcord.execute import parse_extra_vars, run_playbook
    from ripcord.runner import Options

    def body(out):
        if not host:
            raise InputError("--host PATTERN is required", hint="e.g. --host sandbox or --host exec-1")
        try:
            fork_count = int(forks)
        except ValueError:
            raise InputError(f"--forks must be a whole number, not {forks!r}") from None
        options = Options(check=check, diff=diff, tags=_csv(tags), skip_tags=_csv(skip_tags),
                          extra_vars=parse_extra_vars(extra_vars or []), forks=max(1, fork_count))
        try:
            outcome = run_playbook(playbook, pattern=host, inventory_paths=inventory,
                                   options=options, yes=yes, console=out, reason=reason,
                                   approval=approval)
        except ApprovalRequired as exc:
            if json_:
                emit_json({"ok": False, "task": "play", "approval_required": exc.request_id})
            raise
        if json_:
            emit_json(outcome.payload)
        if outcome.code:
            raise Exit(code=outcome.code)

    run_task(body, json_mode=json_, debug=debug)


@task(name="inventory", iterable=["inventory"],
      help={"list": "every group and host, as `ansible-inventory --list`",
            "host": "one host's merged variables, as `ansible-inventory --host`",
            "graph": "the group tree (optionally from one group), as `ansible-inventory --graph`",
            "vars": "with --graph: show variables too",
            "inventory": "inventory file or directory (repeatable; default: inventory/)"})
def inventory_(c, list_=False, host=None, graph=False, group="all", vars_=False, inventory=None):
    """Show what ripcord resolved from the inventory, in ansible-inventory's shapes."""
    from ripcord.inventory import dumps, load_operator_inventory

    def body(out):
        inv = load_operator_inventory(inventory)
        if host:
            print(dumps(inv.to_host_json(host)))
        elif graph:
            print(inv.graph(group, show_vars=vars_))
        elif list_:
            print(dumps(inv.to_list_json()))
        else:
            raise InputError("say what to show: --list, --host NAME or --graph")

    run_task(body)


@task(iterable=["inventory"],
      help={"host": "host pattern to verify (required)",
            "checks": "a marker expression (`halt and not resume`) or node ids; default: all",
            "junit": "also write JUnit XML here, for a CI server",
            "inventory": "inventory file or directory (repeatable; default: inventory/)",
            "json": "one JSON object on stdout", "debug": "show tracebacks"})
def verify(c, host=None, checks="", junit=None, inventory=None, json_=False, debug=False):
    """Run the checks (checks/) on the hosts a pattern selects; changes nothing."""
    from invoke import Exit

    from ripcord.execute import run_verify

    def body(out):
        if not host:
            raise InputError("--host PATTERN is required", hint="e.g. --host sandbox")
        outcome = run_verify(pattern=host, select=checks, inventory_paths=inventory, junit=junit,
                             console=out)
        if json_:
            emit_json(outcome.payload)
        if outcome.code:
            raise Exit(code=outcome.code)

    run_task(body, json_mode=json_, debug=debug)


# --- the runbooks' procedures ----------------------------------------------------------------

COMMON_HELP = {
    "host": "host pattern (required)",
    "inventory": "inventory file or directory (repeatable; default: inventory/)",
    "check": "dry run: say what would change, change nothing",
    "reason": "why: given to the engines where they take one, and journaled",
    "json": "one JSON object on stdout", "debug": "show tracebacks",
}


def _help(**more: str) -> dict[str, str]:
    """Help for a procedure that may ask for confirmation and approval."""
    return {**COMMON_HELP, "yes": "answer yes to every confirmation (typed ones too)",
            "approval": "the id of an approval another operator granted (two-person rule)", **more}


def _known_service(service: str) -> None:
    """An unknown --service is invalid input, found before any host is touched."""
    from ripcord.topology import find_topology, load_cached

    load_cached(find_topology()).require(service)


def _procedure(name: str, *, host, inventory, check, yes, reason, approval, json_, debug,
               extra: dict | None = None, problem: str | None = None,
               service: str | None = None) -> None:
    from invoke import Exit

    from ripcord.approvals import ApprovalRequired
    from ripcord.procedures import run_procedure
    from ripcord.runner import Options

    def body(out):
        if problem:
            raise InputError(problem)
        if service:
            _known_service(service)
        if not host:
            raise InputError("--host PATTERN is required", hint="e.g. --host sandbox or --host exec-1")
        options = Options(check=check, extra_vars=dict(extra or {}), reason=reason or "")
        try:
            outcome = run_procedure(name, pattern=host, inventory_paths=inventory, options=options,
                                    yes=yes, console=out, approval=approval)
        except ApprovalRequired as exc:
            if json_:
                emit_json({"ok": False, "task": name, "approval_required": exc.request_id})
            raise
        if json_:
            emit_json(outcome.payload)
        if outcome.code:
            raise Exit(code=outcome.code)

    run_task(body, json_mode=json_, debug=debug)


@task(iterable=["inventory"], help={
      **COMMON_HELP, "deadline": "seconds for every engine to be halted before its service is stopped (5)"})
def halt(c, host=None, reason="", deadline=None, inventory=None, check=False, json_=False,
         debug=False):
    """Halt trading: signed NATS halt + halt file at once, verified, exchange, last resort."""
    try:
        extra = {"halt_deadline_s": float(deadline)} if deadline else {}
        problem = None
    except ValueError:
        extra, problem = {}, f"--deadline must be a number of seconds, not {deadline!r}"
    _procedure("halt", host=host, inventory=inventory, check=check, yes=True, reason=reason,
               approval=None, json_=json_, debug=debug, extra=extra, problem=problem)


@task(iterable=["inventory"], help=_help())
def resume(c, host=None, reason="", yes=False, approval=None, inventory=None, check=False,
           json_=False, debug=False):
    """Resume trading after pre-checks: clear halt files, signed NORMAL, verify it trades."""
    _procedure("resume", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug)


@task(iterable=["inventory"], help=_help(symbol="a symbol, or ALL (default)"))
def flatten(c, host=None, symbol="ALL", reason="", yes=False, approval=None, inventory=None,
            check=False, json_=False, debug=False):
    """Close positions at market (typed confirmation FLATTEN); verify they reach 0."""
    _procedure("flatten", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug,
               extra={"flatten_symbol": str(symbol).upper()})


@task(name="cancel-all", iterable=["inventory"], help=_help())
def cancel_all(c, host=None, reason="", yes=False, approval=None, inventory=None, check=False,
               json_=False, debug=False):
    """Cancel every open order (signed command to every engine); verify none is left."""
    _procedure("cancel-all", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug)


@task(name="master-arm", iterable=["inventory"],
      help=_help(enable="let the brain send signals", disable="stop it"))
def master_arm(c, host=None, enable=False, disable=False, reason="", yes=False, approval=None,
               inventory=None, check=False, json_=False, debug=False):
    """Master arm on or off, through the brain's API with the operator's id."""
    _procedure("master-arm", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug, extra={"master_arm_enabled": enable},
               problem="say --enable or --disable (exactly one)" if enable == disable else None)


@task(iterable=["inventory"], help=_help(reset="reset the breaker to CLOSED"))
def breaker(c, host=None, reset=False, reason="", yes=False, approval=None, inventory=None,
            check=False, json_=False, debug=False):
    """Reset the brain's circuit breaker, with the operator's id."""
    _procedure("breaker", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug,
               problem=None if reset else "say --reset (`invoke status` shows the breaker)")


@task(iterable=["inventory"], help=_help())
def isolate(c, host=None, reason="", yes=False, approval=None, inventory=None, check=False,
            json_=False, debug=False):
    """Stop the strategy services; verify the engines see no new signal."""
    _procedure("isolate", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug)


@task(iterable=["inventory"],
      help=_help(service="this service and whatever depends on it (default: all)",
                 force="restart engines even though they are trading (not halted)"))
def restart(c, host=None, service="", force=False, reason="", yes=False, approval=None,
            inventory=None, check=False, json_=False, debug=False):
    """Restart services in dependency order (inventory/topology.yml), healthy between tiers."""
    _procedure("restart", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug,
               extra={"restart_service": service or "", "restart_force": bool(force)},
               service=service)


@task(name="recover-crash", iterable=["inventory"],
      help=_help(service="the crashed service (required)",
                 force="restart an engine that is up and trading (not halted)"))
def recover_crash(c, service=None, host=None, force=False, reason="", yes=False, approval=None,
                  inventory=None, check=False, json_=False, debug=False):
    """The crash runbook: show its last 200 log lines, restart it, check its health."""
    _procedure("recover-crash", host=host, inventory=inventory, check=check, yes=yes,
               reason=reason, approval=approval, json_=json_, debug=debug,
               extra={"crash_service": service, "crash_force": bool(force)},
               problem=None if service else "--service NAME is required", service=service)


@task(name="status", iterable=["inventory"],
      help={"host": "host pattern to look at (required)",
            "inventory": "inventory file or directory (repeatable; default: inventory/)",
            "json": "one JSON object on stdout", "debug": "show tracebacks"})
def status_(c, host=None, inventory=None, json_=False, debug=False):
    """One screen of the fleet's trading state (hosts, services, halts, brain, orders); read-only."""
    from invoke import Exit

    from ripcord.errors import EXIT_UNREACHABLE
    from ripcord.status import fleet_status, render

    def body(out):
        if not host:
            raise InputError("--host PATTERN is required", hint="e.g. --host sandbox")
        report = fleet_status(host, inventory)
        emit_json(report) if json_ else render(report, out)
        if not report["ok"]:
            raise Exit(code=EXIT_UNREACHABLE)

    run_task(body, json_mode=json_, debug=debug)


@task(iterable=["inventory"], help={"host": "host pattern (default: sandbox)",
                                    "inventory": COMMON_HELP["inventory"], "debug": "show tracebacks"})
def drill(c, host="sandbox", inventory=None, debug=False):
    """A real kill-switch drill: halt, verify halted, resume, verify trading; with timings."""
    import time

    from invoke import Exit

    from ripcord.execute import run_verify
    from ripcord.procedures import run_procedure
    from ripcord.runner import Options

    def body(out):
        steps = [
            ("halt", lambda: run_procedure("halt", pattern=host, inventory_paths=inventory,
                                           options=Options(reason="drill"), yes=True, console=out)),
            ("verify halted", lambda: run_verify(pattern=host, select="halt and situational",
                                                 inventory_paths=inventory, junit=None, console=out)),
            ("resume", lambda: run_procedure("resume", pattern=host, inventory_paths=inventory,
                                             options=Options(reason="drill"), yes=True, console=out)),
            ("verify trading", lambda: run_verify(pattern=host, select="", inventory_paths=inventory,
                                                  junit=None, console=out)),
        ]
        timings = []
        for name, step in steps:
            out.rule(f"[bold]DRILL[/] {name}", align="left")
            started = time.monotonic()
            outcome = step()
            timings.append((name, time.monotonic() - started, outcome.code))
            if outcome.code:
                break
        out.rule("[bold]DRILL[/] timings", align="left")
        for name, seconds, code in timings:
            out.print(f"  {name:<15} {seconds:6.2f} s  {'ok' if code == 0 else f'FAILED (exit {code})'}")
        if timings[-1][2]:
            raise Exit(code=timings[-1][2])

    run_task(body, debug=debug)


@task(help={"request-id": "the id the requester's run printed", "debug": "show tracebacks"})
def approve(c, request_id, debug=False):
    """Approve another operator's request (two-person rule): you cannot approve your own."""
    from rich.markup import escape

    from ripcord.approvals import Approvals
    from ripcord.journal import operator

    def body(out):
        req = Approvals().approve(request_id, operator())
        what = req.binding
        out.print(escape(f"approved {req.id}: {req.procedure} --host {req.pattern} requested by "
                         f"{req.requested_by}; valid for {req.ttl_s / 60:g} minutes, once\n"
                         f"  playbook {what['playbook']}\n  hosts {', '.join(what['hosts'])}\n"
                         f"  options {what['options'] or 'none'}"), highlight=False)

    run_task(body, debug=debug)


sandbox = Collection("sandbox", up, down, status)
ns = Collection(sandbox, play, inventory_, verify, drill, halt, resume, flatten, cancel_all, master_arm,
                breaker, isolate, restart, recover_crash, status_, approve)
