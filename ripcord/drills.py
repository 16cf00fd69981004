"""Scenario drills on the sandbox: inject a scenario's fault, wait for triage to name it, run its
recovery and validation, and time each part (MTTD, MTTR). The fault is undone afterwards whatever
happened (`sandbox.heal`), so a failed drill leaves the fleet as it found it.

A drill starts only on a fleet triage finds healthy: a scenario already matching would let triage
"detect" what the drill did not cause.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Console

from ripcord import scenarios as catalogue
from ripcord import triage
from ripcord.errors import EXIT_FAILED, EXIT_OK, RipcordError
from ripcord.report import inert
from ripcord.sandbox import chaos

DETECT_TIMEOUT_S = 60.0


@dataclass
class DrillResult:
    scenario: int
    title: str
    fault: str
    detect_s: float | None = None  # inject -> triage names the scenario
    recover_s: float | None = None  # recovery + validation
    code: int = EXIT_FAILED
    problem: str = ""

    @property
    def total_s(self) -> float | None:
        return None if self.detect_s is None or self.recover_s is None else self.detect_s + self.recover_s

    def record(self) -> dict:
        return {"kind": "drill", "scenario": self.scenario, "fault": self.fault, "ok": self.code == 0,
                "detect_s": _round(self.detect_s), "recover_s": _round(self.recover_s),
                "total_s": _round(self.total_s), "problem": self.problem}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def injectable(ids: str) -> list[catalogue.Scenario]:
    """The scenarios `--scenario` names (a number, or all) that the sandbox can show."""
    known = catalogue.load_all()
    if ids == "all":
        return [s for s in known if s.fault]
    scenario = catalogue.get(ids)
    if not scenario.fault:
        raise RipcordError(f"scenario {scenario.id} cannot be drilled on the sandbox: "
                           f"{scenario.cannot_simulate}", hint="`invoke scenario.list` marks those that can")
    return [scenario]


def drill(scenario: catalogue.Scenario, plan, *, pattern: str, inventory_paths: list[str] | None,
          out: Console) -> DrillResult:
    result = DrillResult(scenario.id, scenario.title, scenario.fault or "")
    out.rule(f"[bold]DRILL[/] scenario {scenario.id}: {inert(scenario.title)}", align="left")
    before = triage.diagnose(pattern, inventory_paths)
    if before.code != EXIT_OK:
        result.problem = "the fleet was not healthy before the drill: " + (
            ", ".join(f"scenario {m.scenario.id}" for m in before.matches) or
            ", ".join(before.unreachable) + " unreachable")
        triage.show(before, out)
        return result
    try:
        host = chaos.inject(plan, scenario.fault)
        injected = time.monotonic()
        out.print(f"  injected [bold]{scenario.fault}[/] on {host.name}: "
                  f"{chaos.FAULTS[scenario.fault].what}")
        seen = None
        while time.monotonic() - injected < DETECT_TIMEOUT_S:
            seen = triage.diagnose(pattern, inventory_paths)
            if any(m.scenario.id == scenario.id for m in seen.matches):
                result.detect_s = time.monotonic() - injected
                break
        if result.detect_s is None:
            named = ", ".join(str(m.scenario.id) for m in seen.matches) if seen else ""
            result.problem = (f"triage did not name scenario {scenario.id} within "
                              f"{DETECT_TIMEOUT_S:.0f} s (it named: {named or 'none'})")
            return result
        triage.show(seen, out)
        started = time.monotonic()
        result.code = triage.recover(scenario, pattern=pattern, inventory_paths=inventory_paths,
                                     yes=True, out=out)
        result.recover_s = time.monotonic() - started
        if result.code:
            result.problem = f"recovery or validation failed (exit {result.code})"
        return result
    finally:
        healed = chaos.heal(plan)
        if healed:
            out.print(f"  healed: {', '.join(healed)}")


def table(results: list[DrillResult], out: Console) -> None:
    out.rule("[bold]DRILLS[/] time to detect (MTTD), to recover (MTTR)", align="left")
    out.print(f"  {'scenario':<44} {'fault':<14} {'detect':>8} {'recover':>8} {'total':>8}  result")
    for r in results:
        cells = [f"{v:7.1f}s" if v is not None else f"{'-':>8}" for v in (r.detect_s, r.recover_s, r.total_s)]
        verdict = "ok" if r.code == 0 else f"FAILED: {r.problem}"
        out.print(f"  {f'{r.scenario} {r.title}'[:44]:<44} {r.fault:<14} {' '.join(cells)}  "
                  f"{inert(verdict)}", soft_wrap=True)
