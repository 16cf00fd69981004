"""The runbooks' procedures (docs/runbook.md), each a shipped playbook verified by checks:
halt, resume, flatten, cancel-all, master-arm, breaker, isolate, restart, recover-crash, and the
database's backup-db, restore-db, migrate-db; and the read-only `status` and the `drill` that
exercises the kill switch."""

from __future__ import annotations

from pathlib import Path

from invoke import Collection

from ripcord.cli import emit_json, finish, run_task
from ripcord.errors import InputError
from ripcord.tasks.options import COMMON_HELP, task, verbosity


def _help(**more: str) -> dict[str, str]:
    """Help for a procedure that may ask for confirmation and approval."""
    return {**COMMON_HELP, "yes": "answer yes to every confirmation (typed ones too)",
            "approval": "the id of an approval another operator granted (two-person rule)", **more}


def _known_service(service: str) -> None:
    """An unknown --service is invalid input, found before any host is touched."""
    from ripcord.topology import find_topology, load_cached

    load_cached(find_topology()).require(service)


def _procedure(name: str, *, host, inventory, check, yes, reason, approval, json_, debug,
               verbose=0, extra: dict | None = None, problem: str | None = None,
               service: str | None = None) -> None:
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
        verbosity(verbose)
        options = Options(check=check, extra_vars=dict(extra or {}), reason=reason or "")
        try:
            outcome = run_procedure(name, pattern=host, inventory_paths=inventory, options=options,
                                    yes=yes, console=out, approval=approval)
        except ApprovalRequired as exc:
            if json_:
                emit_json({"ok": False, "task": name, "approval_required": exc.request_id})
            raise
        finish(outcome, json_)

    run_task(body, json_mode=json_, debug=debug)


@task(iterable=["inventory"], help={
      **COMMON_HELP, "deadline": "seconds for every engine to be halted before its service is stopped (5)"})
def halt(c, host=None, reason="", deadline=None, inventory=None, check=False, verbose=0, json_=False,
         debug=False):
    """Halt trading: signed NATS halt + halt file at once, verified, exchange, last resort."""
    from ripcord import fasthalt

    if host and not check:  # published already if the command line said so (ripcord.tasks)
        fasthalt.begin(host, reason, list(inventory or []))
    try:
        extra = {"halt_deadline_s": float(deadline)} if deadline else {}
        problem = fasthalt.refusal()
    except ValueError:
        extra, problem = {}, f"--deadline must be a number of seconds, not {deadline!r}"
    _procedure("halt", host=host, inventory=inventory, check=check, yes=True, reason=reason,
               approval=None, json_=json_, debug=debug, verbose=verbose, extra=extra, problem=problem)


@task(iterable=["inventory"], help=_help())
def resume(c, host=None, reason="", yes=False, approval=None, inventory=None, check=False,
           verbose=0, json_=False, debug=False):
    """Resume trading after pre-checks: clear halt files, signed NORMAL, verify it trades."""
    _procedure("resume", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug, verbose=verbose)


@task(iterable=["inventory"], help=_help(symbol="a symbol, or ALL (default)"))
def flatten(c, host=None, symbol="ALL", reason="", yes=False, approval=None, inventory=None,
            check=False, verbose=0, json_=False, debug=False):
    """Close positions at market (typed confirmation FLATTEN); verify they reach 0."""
    _procedure("flatten", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug, verbose=verbose,
               extra={"flatten_symbol": str(symbol).upper()})


@task(name="cancel-all", iterable=["inventory"], help=_help())
def cancel_all(c, host=None, reason="", yes=False, approval=None, inventory=None, check=False,
               verbose=0, json_=False, debug=False):
    """Cancel every open order (signed command to every engine); verify none is left."""
    _procedure("cancel-all", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug, verbose=verbose)


@task(name="master-arm", iterable=["inventory"],
      help=_help(enable="let the brain send signals", disable="stop it"))
def master_arm(c, host=None, enable=False, disable=False, reason="", yes=False, approval=None,
               inventory=None, check=False, verbose=0, json_=False, debug=False):
    """Master arm on or off, through the brain's API with the operator's id."""
    _procedure("master-arm", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug, verbose=verbose,
               extra={"master_arm_enabled": enable},
               problem="say --enable or --disable (exactly one)" if enable == disable else None)


@task(iterable=["inventory"], help=_help(reset="reset the breaker to CLOSED"))
def breaker(c, host=None, reset=False, reason="", yes=False, approval=None, inventory=None,
            check=False, verbose=0, json_=False, debug=False):
    """Reset the brain's circuit breaker, with the operator's id."""
    _procedure("breaker", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug, verbose=verbose,
               problem=None if reset else "say --reset (`invoke status` shows the breaker)")


@task(iterable=["inventory"], help=_help())
def isolate(c, host=None, reason="", yes=False, approval=None, inventory=None, check=False,
            verbose=0, json_=False, debug=False):
    """Stop the strategy services; verify the engines see no new signal."""
    _procedure("isolate", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug, verbose=verbose)


@task(iterable=["inventory"],
      help=_help(service="this service and whatever depends on it (default: all)",
                 force="restart engines even though they are trading (not halted)"))
def restart(c, host=None, service="", force=False, reason="", yes=False, approval=None,
            inventory=None, check=False, verbose=0, json_=False, debug=False):
    """Restart services in dependency order (inventory/topology.yml), healthy between tiers."""
    _procedure("restart", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug, verbose=verbose,
               extra={"restart_service": service or "", "restart_force": bool(force)},
               service=service)


@task(name="recover-crash", iterable=["inventory"],
      help=_help(service="the crashed service (required)",
                 force="restart an engine that is up and trading (not halted)"))
def recover_crash(c, service=None, host=None, force=False, reason="", yes=False, approval=None,
                  inventory=None, check=False, verbose=0, json_=False, debug=False):
    """The crash runbook: show its last 200 log lines, restart it, check its health."""
    _procedure("recover-crash", host=host, inventory=inventory, check=check, yes=yes,
               reason=reason, approval=approval, json_=json_, debug=debug, verbose=verbose,
               extra={"crash_service": service, "crash_force": bool(force)},
               problem=None if service else "--service NAME is required", service=service)


@task(name="status", iterable=["inventory"],
      help={"host": "host pattern to look at (required)", "inventory": COMMON_HELP["inventory"],
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
                                    "inventory": COMMON_HELP["inventory"],
                                    "scenario": "drill a failure scenario instead (a number, or all): "
                                                "inject its fault, triage, recover, validate",
                                    "dir": "the sandbox fleet's directory (for --scenario)",
                                    "verbose": COMMON_HELP["verbose"], "debug": "show tracebacks"})
def drill(c, host="sandbox", inventory=None, scenario=None, dir=None, verbose=0, debug=False):
    """A real kill-switch drill: halt, verify halted, resume, verify trading; with timings."""
    import time

    from invoke import Exit

    from ripcord.execute import run_verify
    from ripcord.procedures import run_procedure
    from ripcord.runner import Options

    def body(out):
        verbosity(verbose)
        if scenario:
            return _scenario_drills(scenario, host, inventory, dir, out)
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


def _scenario_drills(which: str, host: str, inventory, dir: str | None, out) -> None:
    from invoke import Exit

    from ripcord import drills
    from ripcord.journal import Journal
    from ripcord.sandbox.fleet import Fleet

    chosen = drills.injectable(str(which))
    fleet = Fleet(Path(dir) if dir else None)
    if not fleet.running():
        raise InputError("the sandbox is not running: scenario drills inject faults into it",
                         hint="invoke sandbox.up")
    results = []
    for scenario in chosen:
        result = drills.drill(scenario, fleet.plan, pattern=host, inventory_paths=inventory, out=out)
        Journal().append(result.record())
        results.append(result)
    drills.table(results, out)
    if any(r.code for r in results):
        raise Exit(code=1)


collection = Collection(drill, halt, resume, flatten, cancel_all, master_arm, breaker, isolate, restart,
                        recover_crash, status_)


# --- the database: backup-db, restore-db, migrate-db (docs/runbook.md) --------------------------

@task(name="backup-db", iterable=["inventory"], help=_help())
def backup_db(c, host=None, reason="", yes=False, approval=None, inventory=None, check=False,
              verbose=0, json_=False, debug=False):
    """pg_dump (custom) into the backup directory with a manifest (sha256, rows per table); retention."""
    _procedure("backup-db", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug, verbose=verbose)


@task(name="restore-db", iterable=["inventory"],
      help=_help(backup="the backup's name, e.g. titan-20261206T112600Z (required)"))
def restore_db(c, backup=None, host=None, reason="", yes=False, approval=None, inventory=None,
               check=False, verbose=0, json_=False, debug=False):
    """Restore a backup (fleet halted first): snapshot, stop dependents, restore, compare, start."""
    _procedure("restore-db", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug, verbose=verbose,
               extra={"restore_backup": backup or ""},
               problem=None if backup else "--backup NAME is required (a backup's name)")


@task(name="migrate-db", iterable=["inventory"],
      help=_help(up="apply migrations (all, or up to --to)", down="revert (the newest, or down to --to)",
                 to="a migration number"))
def migrate_db(c, up=False, down=False, to=None, host=None, reason="", yes=False, approval=None,
               inventory=None, check=False, verbose=0, json_=False, debug=False):
    """Schema migrations up or down (numbered SQL files in migrations/, ledger schema_migrations)."""
    problem = "say --up or --down (exactly one)" if up == down else None
    if to is not None and not str(to).isdigit():
        problem = f"--to must be a migration number, not {to!r}"
    _procedure("migrate-db", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug, verbose=verbose,
               extra={"migrate_direction": "up" if up else "down",
                      "migrate_to": int(to) if problem is None and to is not None else ""},
               problem=problem)


collection.add_task(backup_db)
collection.add_task(restore_db)
collection.add_task(migrate_db)
