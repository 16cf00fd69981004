"""Triage, a scenario's recovery, and drills: the scenario layer (ripcord.scenarios) at work.

Triage is runbook 004's decision tree done by machine: every scenario's detection checks run in
one round on the hosts selected; a scenario matches when each of its symptoms failed somewhere;
the tree's three questions are answered from those matches; the matches are printed worst first
with their evidence and the command that fixes each. `--fix` runs the top scenario's recovery
and validation, but no more than `triage_max_recoveries` times a scenario and host pattern in
`triage_window_minutes` (counted in the journal, so every terminal sees the same count): past
that it stops acting and escalates, since a recovery that keeps being needed is not recovering.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Console

from ripcord import scenarios as catalogue
from ripcord.errors import EXIT_DECLINED, EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, InputError
from ripcord.report import inert
from ripcord.scenarios import QUESTIONS, Scenario

if TYPE_CHECKING:
    from ripcord.inventory import Inventory

# Defaults of the inventory's triage_* variables (group all): recoveries of one scenario on one
# host pattern allowed in a window, and how long its validation may take to pass after one.
MAX_RECOVERIES, WINDOW_MINUTES, VALIDATE_SECONDS = 3, 60, 30


@dataclass
class Match:
    scenario: Scenario
    evidence: list[tuple[str, str, str]]  # (host, check, message)

    @property
    def hosts(self) -> list[str]:
        return sorted({host for host, _, _ in self.evidence})


@dataclass
class Triage:
    pattern: str
    hosts: list[str]
    matches: list[Match] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)
    answers: dict[str, bool] = field(default_factory=dict)  # question -> yes (healthy)
    duration_s: float = 0.0
    severities: dict[int, dict[str, Any]] = field(default_factory=dict)  # the operator's escalation

    @property
    def code(self) -> int:
        return EXIT_UNREACHABLE if self.unreachable else EXIT_FAILED if self.matches else EXIT_OK

    def payload(self) -> dict[str, Any]:
        return {"ok": self.code == EXIT_OK, "task": "triage", "pattern": self.pattern,
                "hosts": self.hosts, "unreachable": self.unreachable,
                "answers": {QUESTIONS[q]: yes for q, yes in self.answers.items()},
                "scenarios": [{"id": m.scenario.id, "title": m.scenario.title,
                               "severity": m.scenario.severity, "hosts": m.hosts,
                               "evidence": [{"host": h, "check": c, "message": msg}
                                            for h, c, msg in m.evidence],
                               "fix": m.scenario.fix_command(self.pattern)} for m in self.matches],
                "duration_s": round(self.duration_s, 3)}


def load_inventory(paths: list[str] | None) -> Inventory:
    from ripcord.inventory import load_operator_inventory

    return load_operator_inventory(paths)


def diagnose(pattern: str, inventory_paths: list[str] | None = None, forks: int = 20, *,
             inventory: Inventory | None = None) -> Triage:
    """Every scenario's detection, in one round of checks on the hosts selected (`inventory`, when
    given, is used instead of reading the files again, as by every step of a `--fix` run)."""
    from ripcord.templating import Templar, resolve_vars
    from ripcord.verify import connect, run_checks

    started = time.monotonic()
    inventory = inventory or load_inventory(inventory_paths)
    hosts = inventory.select(pattern)
    known = catalogue.load_all(inventory=inventory)  # a bad scenario is exit 2 before any host
    levels = catalogue.severities()  # so is a bad escalation file
    select = " ".join(sorted({s.check for sc in known for s in sc.detection}))
    connections, unreachable = connect(inventory, hosts, forks)
    try:
        templar = Templar()
        hostvars = {h: resolve_vars(templar, dict(inventory.host_vars(h))) for h in connections}
        report = run_checks(select, connections, hostvars) if connections else None
    finally:
        for conn in connections.values():
            conn.close()
    failed = [r for r in (report.results if report else []) if r.outcome == "failed"]
    result = Triage(pattern, hosts, unreachable=unreachable, severities=levels)
    for scenario in known:
        evidence = [(r.host, r.id, r.message) for symptom in scenario.detection
                    for r in failed if symptom.seen_in(r.id, r.message)]
        if all(any(symptom.seen_in(r.id, r.message) for r in failed) for symptom in scenario.detection):
            result.matches.append(Match(scenario, evidence))
    order = list(QUESTIONS)
    result.matches.sort(key=lambda m: (m.scenario.severity,
                                       order.index(m.scenario.question) if m.scenario.question
                                       else len(order), m.scenario.id))
    for question in QUESTIONS:  # the tree: "no" where a scenario of that question matched
        result.answers[question] = not any(m.scenario.question == question for m in result.matches)
    result.duration_s = time.monotonic() - started
    return result


def show(triage: Triage, out: Console) -> None:
    out.print(f"[bold]TRIAGE[/] {inert(triage.pattern)}  [dim]({len(triage.hosts)} hosts, "
              f"{triage.duration_s:.1f} s)[/]")
    for question, yes in triage.answers.items():
        out.print(f"  {QUESTIONS[question]:<36} {'[green]yes[/]' if yes else '[bold red]NO[/]'}")
    for host, why in triage.unreachable.items():
        out.print(f"  [bold red]unreachable[/]: {inert(host)}: {inert(why)}", soft_wrap=True)
    if not triage.matches:
        if not triage.unreachable:
            out.print("  [green]no scenario matches[/]: every detection check passed")
        return
    for match in triage.matches:
        sc = match.scenario
        severity = triage.severities[sc.severity]
        out.print(f"[bold red]scenario {sc.id}[/] {inert(sc.title)}  [bold]{severity['name']}[/]"
                  f" (respond within {severity['respond_minutes']} min)")
        for host, check, message in match.evidence:
            out.print(f"    {inert(f'[{host}]')} {inert(check)}: {inert(message)}", soft_wrap=True)
        out.print(f"    fix: {inert(sc.fix_command(triage.pattern))}", soft_wrap=True)


def recover(scenario: Scenario, *, pattern: str, inventory_paths: list[str] | None = None, yes: bool,
            out: Console, check: bool = False, validate_s: float = 30.0,
            inventory: Inventory | None = None) -> int:
    """A scenario's recovery (procedure or playbook), then its validation checks (retried up to
    validate_s while a recovered service settles). Returns the exit code."""
    from ripcord.execute import run_playbook, run_verify
    from ripcord.procedures import run_procedure
    from ripcord.runner import Options

    if scenario.manual:
        out.print(f"[bold]scenario {scenario.id}[/] has no automated recovery: "
                  f"{inert(scenario.manual)}", soft_wrap=True)
        return EXIT_FAILED
    options = Options(check=check, extra_vars=dict(scenario.recovery_vars))
    reason = f"scenario {scenario.id}: {scenario.title}"
    out.rule(f"[bold]RECOVERY[/] scenario {scenario.id}: {inert(scenario.recovery)}", align="left")
    if scenario.procedure:
        options.reason = reason
        outcome = run_procedure(scenario.procedure, pattern=pattern, inventory_paths=inventory_paths,
                                options=options, yes=yes, console=out, approval=None, inventory=inventory)
    else:
        outcome = run_playbook(str(scenario.playbook), pattern=pattern, options=options, yes=yes,
                               console=out, reason=reason, inventory_paths=inventory_paths,
                               inventory=inventory)
    if outcome.code or check:
        return outcome.code
    out.rule(f"[bold]VALIDATION[/] scenario {scenario.id}: {inert(scenario.validation)}", align="left")
    return run_verify(pattern=pattern, select=scenario.validation, inventory_paths=inventory_paths,
                      junit=None, console=out, retry_s=validate_s, inventory=inventory).code


def fix(scenario: Scenario, *, pattern: str, inventory_paths: list[str] | None = None, yes: bool,
        out: Console, inventory: Inventory | None = None) -> int:
    """triage --fix: the scenario's recovery and validation, within the rate limit; past it,
    no action and an escalation (journaled, as every attempt is)."""
    from ripcord.execute import confirmer

    inventory = inventory or load_inventory(inventory_paths)
    limits = _limits(pattern, inventory)
    used = _recoveries(scenario, pattern, since=time.time() - limits["window"] * 60)
    if used >= limits["max"]:
        out.print(f"[bold red]not acting[/]: scenario {scenario.id}'s recovery ran {used} times on "
                  f"{inert(pattern)} in the last {limits['window']} min (triage_max_recoveries "
                  f"{limits['max']}) and it is back. Escalating to {inert(scenario.escalate_to)}: "
                  "a recovery that keeps being needed is not recovering.", soft_wrap=True)
        _journal({"kind": "triage.escalation", "scenario": scenario.id, "pattern": pattern,
                  "to": scenario.escalate_to, "recoveries": used, "window_minutes": limits["window"]})
        return EXIT_FAILED
    if scenario.manual:
        return recover(scenario, pattern=pattern, inventory=inventory, yes=yes, out=out)
    if not confirmer(yes, out)(f"Run scenario {scenario.id}'s recovery ({scenario.recovery}) on {pattern}?"):
        return EXIT_DECLINED
    # Counted before it runs: an attempt cut short (Ctrl-C, a crash) still used the budget.
    _journal({"kind": "triage.fix", "scenario": scenario.id, "pattern": pattern,
              "attempt": used + 1, "max_recoveries": limits["max"]})
    code = recover(scenario, pattern=pattern, inventory=inventory, yes=yes, out=out,
                   validate_s=limits["validate"])
    _journal({"kind": "triage.fixed" if code == 0 else "triage.fix_failed", "scenario": scenario.id,
              "pattern": pattern, "exit_code": code})
    return code


def _limits(pattern: str, inventory: Inventory) -> dict[str, int]:
    hostvars = inventory.host_vars(inventory.select(pattern)[0])
    try:
        return {"max": int(hostvars.get("triage_max_recoveries", MAX_RECOVERIES)),
                "window": int(hostvars.get("triage_window_minutes", WINDOW_MINUTES)),
                "validate": int(hostvars.get("triage_validate_seconds", VALIDATE_SECONDS))}
    except (TypeError, ValueError):
        raise InputError("triage_max_recoveries, triage_window_minutes and triage_validate_seconds "
                         "must be whole numbers", hint="see docs/scenarios.md#triage") from None


def _recoveries(scenario: Scenario, pattern: str, since: float) -> int:
    from ripcord.journal import Journal

    return sum(1 for r in Journal().records()
               if r.get("kind") == "triage.fix" and r.get("scenario") == scenario.id
               and r.get("pattern") == pattern and float(r.get("ts") or 0) >= since)


def _journal(record: dict[str, Any]) -> None:
    from ripcord.journal import Journal

    Journal().append(record)  # an attempt that cannot be counted must not happen: errors propagate
