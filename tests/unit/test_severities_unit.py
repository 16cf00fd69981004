"""Each SEV level's response time has one source, an escalation file: the shipped
inventory/escalation.yml for the generated docs/scenarios.md, the operator's (RIPCORD_ESCALATION)
for what `invoke triage` prints. SEV4 is the runbooks' stricter answer (004: < 4 hours)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from ripcord import scenarios
from ripcord.errors import InputError
from ripcord.verify import CheckReport, CheckResult

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "inventory" / "escalation.yml"


def test_the_shipped_file_holds_the_runbooks_response_times():
    assert scenarios.SHIPPED_ESCALATION == SHIPPED
    assert scenarios.severities(SHIPPED) == {
        1: {"name": "SEV1 critical", "respond_minutes": 5},
        2: {"name": "SEV2 high", "respond_minutes": 15},
        3: {"name": "SEV3 medium", "respond_minutes": 60},
        4: {"name": "SEV4 low", "respond_minutes": 240}}


def only_scenario_3(tmp_path: Path, monkeypatch) -> None:
    """The catalogue cut to scenario 3 (a procedure recovery: valid with a one-host inventory)."""
    (tmp_path / "scenarios").mkdir()
    for path in (REPO / "playbooks" / "scenarios").glob("03-*.yml"):
        (tmp_path / "scenarios" / path.name).write_text(path.read_text())
    monkeypatch.setattr(scenarios, "SCENARIOS", tmp_path / "scenarios")


def operators_escalation(tmp_path: Path, monkeypatch, old: str, new: str, *, host: str) -> Path:
    """Scenario 3 alone; the operator's escalation file (RIPCORD_ESCALATION): the shipped one
    with `old` made `new`; a one-host inventory (a closed port), whose path is returned."""
    only_scenario_3(tmp_path, monkeypatch)
    own = tmp_path / "escalation.yml"
    own.write_text(SHIPPED.read_text().replace(old, new))
    monkeypatch.setenv("RIPCORD_ESCALATION", str(own))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(f"all:\n  hosts:\n    {host}: {{ansible_host: 127.0.0.1, ansible_port: 9}}\n")
    return inventory


def test_triage_prints_the_operators_response_time_and_the_docs_the_shipped_one(tmp_path, monkeypatch):
    from ripcord import triage, verify

    inventory = operators_escalation(tmp_path, monkeypatch, "respond_within_s: 900",
                                     "respond_within_s: 1200", host="core-1")
    stale = CheckResult("core-1", "test_market_data.py::test_order_books_are_fresh", "failed",
                        "every order book is stale")  # scenario 3 (SEV2), as the check says it
    monkeypatch.setattr(verify, "connect", lambda *a: ({"core-1": SimpleNamespace(close=lambda: None)}, {}))
    monkeypatch.setattr(verify, "run_checks", lambda *a: CheckReport([stale]))

    found = triage.diagnose("all", [str(inventory)])
    out = Console(record=True, width=200)
    triage.show(found, out)
    assert "scenario 3 Market data feed loss  SEV2 high (respond within 20 min)" in out.export_text()
    assert "**Market data feed loss**: SEV2 high, respond within 15 min;" in \
        scenarios.markdown(scenarios.load_all())


def test_a_bad_operator_escalation_file_stops_triage_before_any_host(tmp_path, monkeypatch):
    from ripcord import triage, verify

    inventory = operators_escalation(tmp_path, monkeypatch, "respond_within_s: 14400",
                                     "respond_within_s: soon", host="nowhere")
    own = tmp_path / "escalation.yml"
    monkeypatch.setattr(verify, "connect", lambda *a, **k: pytest.fail("a host was touched"))
    with pytest.raises(InputError, match=rf"^{own}:\d+: severity 4: respond_within_s"):
        triage.diagnose("all", [str(inventory)])
