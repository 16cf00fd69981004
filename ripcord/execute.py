"""One operator command, start to finish: load, validate, confirm, run, journal, report.

Everything that can be wrong with the input is found before the first connection; everything
that happened is journaled, with secrets redacted, whatever the outcome.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.prompt import Prompt

from ripcord.cli import print_error
from ripcord.errors import (
    EXIT_DECLINED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    DeclinedError,
    InputError,
    RipcordError,
)
from ripcord.inventory import Inventory, load_operator_inventory
from ripcord.journal import Journal, operator
from ripcord.playbook import load_playbook
from ripcord.report import CHECK_COLUMNS, Display, exit_code, result_json
from ripcord.runner import Options, Runner, TaskRecord
from ripcord.unsafe import wrap


@dataclass
class Outcome:
    code: int
    payload: dict[str, Any]


def parse_extra_vars(items: list[str]) -> dict[str, Any]:
    """-e key=value (value read as YAML, so numbers and booleans keep their type) or -e '{json}'."""
    import yaml

    from ripcord import yamlbounds

    values: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")  # a mapping or key=value: either way the YAML is bounded
        yamlbounds.check(item if item.lstrip().startswith("{") else raw, f"-e {key[:40]}", line=0)
        if item.lstrip().startswith("{"):
            try:
                values.update(yaml.safe_load(item))
            except yaml.YAMLError as exc:
                why = getattr(exc, "problem", None) or str(exc).splitlines()[0]  # one line
                raise InputError(f"-e {item!r} is not a valid mapping: {why}") from None
            continue
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise InputError(f"-e {item!r}: expected key=value with a valid variable name")
        try:
            values[key] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            values[key] = raw
    return values


def confirmer(yes: bool, console: Console):
    """How `confirm` tasks ask: --yes answers; a terminal asks; anything else declines."""
    def confirm(prompt: str, typed: str | None = None) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise DeclinedError(f"{prompt}: no terminal to ask on", hint="pass --yes to confirm")
        if typed:
            answer = Prompt.ask(f"{prompt}\nType [bold]{typed}[/] to continue", console=console)
            return answer.strip() == typed
        return Prompt.ask(prompt, choices=["yes", "no"], default="no", console=console) == "yes"
    return confirm


def run_playbook(path: str, *, pattern: str, options: Options, yes: bool, console: Console,
                 reason: str = "", inventory_paths: list[str] | None = None,
                 inventory: Inventory | None = None,
                 approval: str | None = None, procedure: str | None = None) -> Outcome:
    """Load, validate and run a playbook; journal the run whatever happens (an error, Ctrl-C).

    For a procedure, a pattern that selects no host of the playbook's plays is invalid input,
    never an ok that did nothing.
    """
    started = time.monotonic()
    inventory = inventory or load_operator_inventory(inventory_paths)
    inventory.select(pattern)  # a pattern that matches nothing is an error before anything else
    options.limit = pattern
    options.reason = reason
    options.extra_vars = wrap(options.extra_vars)  # operator text is data, never a template
    options.playbook_dir = str(Path(path).resolve().parent)
    playbook = load_playbook(path, extra_vars=options.extra_vars, inventory=inventory)
    command = "ripcord " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    runner = Runner(inventory, options, confirm=confirmer(yes, console), display=Display(console),
                    run_id=f"{os.getpid()}-{time.time_ns()}", operator=operator(), command=command)
    if procedure and not any(runner.play_hosts(play) for play in playbook.plays):
        raise InputError(f"--host {pattern} selects no host this procedure acts on",
                         hint="its plays run on: " + ", ".join(p.hosts for p in playbook.plays))
    from ripcord.procedures import guard  # the two-person rule, on every path to a playbook

    guard(playbook, inventory, pattern, options, approval=approval, procedure=procedure)
    declined: DeclinedError | None = None
    interrupted = False
    code = EXIT_FAILED
    try:
        runner.run(playbook)
    except DeclinedError as exc:
        declined = exc
    except KeyboardInterrupt:
        interrupted = True
    finally:  # journaled whatever happened, even an exception on its way out
        summary, checks = runner.summary(), runner.check_summary()
        code = EXIT_INTERRUPTED if interrupted else EXIT_DECLINED if declined else \
            exit_code(summary, checks)
        duration = time.monotonic() - started
        journal_id, head = _journal(runner.secrets.redact({
            "kind": "play", "playbook": str(path), "pattern": pattern, "check": options.check,
            "reason": reason, "command": command, "extra_vars": options.extra_vars,
            "hosts": summary, "tasks": [vars(r) for r in runner.records], "checks": checks,
            "exit_code": code, "declined": str(declined) if declined else None,
            "interrupted": interrupted, "duration_s": round(duration, 3)}), runner.secrets.values)
    if journal_id is None:
        code = code or EXIT_FAILED
    Display(console).recap(summary, checks)
    if declined:
        print_error(declined)
    if interrupted:
        print_error(RipcordError("interrupted (Ctrl-C): tasks under way were stopped (a fleet "
                                 "task, the halt, finishes first) and are reported above; "
                                 "nothing after them ran"))
    payload = result_json("play", summary, runner.records, duration, journal_id, head, checks=checks,
                          playbook=str(path), check=options.check)
    if declined or interrupted or journal_id is None:
        payload["ok"] = False
    if declined:
        payload["declined"] = str(declined)
    if interrupted:
        payload["interrupted"] = True
    return Outcome(code, runner.secrets.redact(payload))


def _journal(record: dict[str, Any], secrets: set[str] | None = None,
             ) -> tuple[str | None, dict[str, Any] | None]:
    """Append record to the journal; None (said on stderr) when it cannot be written. The run's
    secrets go with it: an open incident keeps their digests, for its notes to redact."""
    try:
        journal = Journal()
        return journal.append(record, secrets), journal.head
    except (OSError, ValueError, RipcordError) as exc:
        print_error(RipcordError(f"the run could not be journaled: {exc}",
                                 hint="check RIPCORD_JOURNAL / the state directory"))
        return None, None


def run_verify(*, pattern: str, select: str, inventory_paths: list[str] | None,
               junit: str | None, console: Console, forks: int = 20,
               retry_s: float | None = None, inventory: Inventory | None = None) -> Outcome:
    """`invoke verify`: the checks selected, on the hosts a pattern selects, read-only (failing
    checks retried up to retry_s, as after a recovery while services settle)."""
    from ripcord.templating import Templar, resolve_vars
    from ripcord.verify import DEFAULT_SELECTION, WAIVERS, connect, load_waivers, run_checks

    started = time.monotonic()
    select = select or DEFAULT_SELECTION
    inventory = inventory or load_operator_inventory(inventory_paths)
    hosts = inventory.select(pattern)
    load_waivers(WAIVERS)  # a malformed waivers file is an input error, before any connection
    connections, unreachable = connect(inventory, hosts, forks)
    display = Display(console)
    try:
        templar = Templar()
        hostvars = {h: resolve_vars(templar, dict(inventory.host_vars(h))) for h in connections}
        display.verify_start(select, list(connections))
        report = (run_checks(select, connections, hostvars, junit=junit, retry_s=retry_s)
                  if connections else None)
    finally:
        for conn in connections.values():
            conn.close()
    results = report.results if report else []
    for host, why in unreachable.items():
        display.host_result(TaskRecord("verify", "connect", host, "unreachable", why))
    for result in results:
        display.check_result(result)
    checks = report.summary() if report else {"passed": 0, "failed": 0, "waived": 0, "results": []}
    summary = {h: {**dict.fromkeys(("ok", "changed", "rescued", "ignored"), 0),
                   **{o: sum(r.host == h and r.outcome == o for r in results)
                      for o in ("passed", "failed", "waived", "skipped")},
                   "unreachable": int(h in unreachable)} for h in hosts}
    duration = time.monotonic() - started
    code = exit_code(summary, checks)
    journal_id, head = _journal({"kind": "verify", "pattern": pattern, "select": select,
                                 "hosts": summary, "checks": checks, "exit_code": code,
                                 "duration_s": round(duration, 3)})
    display.recap(summary, checks, title="VERIFY RECAP", columns=CHECK_COLUMNS)
    payload = result_json("verify", summary, [], duration, journal_id, head, checks=checks)
    if journal_id is None:
        code, payload["ok"] = code or EXIT_FAILED, False
    return Outcome(code, payload)
