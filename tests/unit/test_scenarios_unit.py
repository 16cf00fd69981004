"""The scenario catalogue (playbooks/scenarios/): every file valid, the docs generated from them
current, each detection check marked with its scenario, and bad files refused with file:line."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from ripcord import scenarios
from ripcord.errors import InputError

REPO = Path(__file__).resolve().parents[2]
GOOD = """\
id: 3
title: Market data feed loss
severity: 2
runbook: "004 #3"
question: market-data
detection:
  - test_market_data.py::test_order_books_are_fresh
recovery:
  procedure: restart
  vars: {restart_service: titan-market-data}
validation: "test_market_data.py"
escalation: {to: lead, after_minutes: 30}
sandbox: {fault: stuck-feed}
"""


def test_the_twenty_scenarios_load():
    known = scenarios.load_all()
    assert [s.id for s in known] == list(range(1, 21))
    assert {s.severity for s in known} <= {1, 2, 3, 4}
    assert all(s.fault or s.cannot_simulate for s in known)
    assert sum(1 for s in known if s.fault) >= 9


def test_docs_are_generated_from_the_files():
    text = (REPO / "docs" / "scenarios.md").read_text()
    assert text == scenarios.markdown(scenarios.load_all()), "run `invoke scenario.docs`"


def _markers(path: Path, function: str) -> set[str]:
    """scenarioNN markers of a check: its module's pytestmark and its own decorators."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
            found |= {n.attr for n in ast.walk(node.value) if isinstance(n, ast.Attribute)}
        if isinstance(node, ast.FunctionDef) and node.name == function:
            found |= {n.attr for d in node.decorator_list for n in ast.walk(d)
                      if isinstance(n, ast.Attribute)}
    return {m for m in found if m.startswith("scenario")}


def test_each_detection_check_carries_its_scenario_marker():
    """`invoke verify -s scenarioNN` selects the scenario's symptoms (test_drift.py was marked
    scenario 15, strategy malfunction; drift is 19)."""
    for scenario in scenarios.load_all():
        for symptom in scenario.detection:
            file, _, name = symptom.check.partition("::")
            marked = _markers(REPO / "checks" / file, name)
            assert f"scenario{scenario.id:02d}" in marked, f"{symptom.check} lacks scenario{scenario.id:02d}"


@pytest.mark.parametrize(("edit", "line", "message"), [
    (("test_order_books_are_fresh", "test_no_such_check"), 7, "has no check test_no_such_check"),
    (("test_market_data.py::", "test_nothing.py::"), 7, "no check file test_nothing.py"),
    (("procedure: restart", "procedure: reboot"), 9, "no procedure 'reboot'"),
    (("fault: stuck-feed", "fault: meteor"), 13, "no fault 'meteor'"),
    (("severity: 2", "severity: 5"), 3, "severity must be 1, 2, 3 or 4"),
    (("validation: \"test_market_data.py\"", "validation: \"helth\""), 11, "no check marker 'helth'"),
    (("question: market-data", "question: why"), 5, "question must be one of"),
    (("  vars:", "  varz:"), 9, "unknown key 'varz'"),
    (("escalation: {to: lead, after_minutes: 30}", "escalation: {to: lead}"), 12, "escalation is"),
])
def test_a_bad_scenario_is_refused_naming_file_and_line(tmp_path, edit, line, message):
    path = tmp_path / "03-market-data.yml"
    path.write_text(GOOD.replace(*edit))
    with pytest.raises(InputError) as exc:
        scenarios.load_all(tmp_path)
    assert str(exc.value).startswith(f"{path}:{line}: "), str(exc.value)
    assert message in str(exc.value)


def test_a_detection_message_must_be_a_regular_expression(tmp_path):
    path = tmp_path / "03-market-data.yml"
    check = "test_market_data.py::test_order_books_are_fresh"
    path.write_text(GOOD.replace(f"  - {check}", f'  - {{check: {check}, message: "(("}}'))
    with pytest.raises(InputError, match=f"^{path}:7: detection: message is not a regular expression"):
        scenarios.load_all(tmp_path)


def test_two_files_for_one_scenario_and_a_misnamed_file_are_refused(tmp_path):
    (tmp_path / "03-market-data.yml").write_text(GOOD)
    shutil.copy(tmp_path / "03-market-data.yml", tmp_path / "03-again.yml")
    with pytest.raises(InputError, match="scenario 3 is also defined in"):
        scenarios.load_all(tmp_path)
    (tmp_path / "03-again.yml").rename(tmp_path / "3-feed.yml")
    with pytest.raises(InputError, match="must be named 03-<slug>.yml"):
        scenarios.load_all(tmp_path)


def test_a_recovery_playbook_must_exist_beside_the_scenario(tmp_path):
    path = tmp_path / "03-market-data.yml"
    path.write_text(GOOD.replace("  procedure: restart\n  vars: {restart_service: titan-market-data}",
                                 "  playbook: recovery/nothing.yml"))
    with pytest.raises(InputError, match=f"^{path}:9: recovery: no playbook recovery/nothing.yml"):
        scenarios.load_all(tmp_path)


def test_triage_with_a_bad_scenario_touches_no_host(tmp_path, monkeypatch):
    """Invalid input before any connection: triage opens none when a scenario is bad."""
    from ripcord import triage, verify

    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    nowhere: {ansible_host: 127.0.0.1, ansible_port: 9}\n")
    (tmp_path / "03-market-data.yml").write_text(GOOD.replace("test_order_books_are_fresh", "test_gone"))
    monkeypatch.setattr(scenarios, "SCENARIOS", tmp_path)
    monkeypatch.setattr(verify, "connect", lambda *a, **k: pytest.fail("a host was touched"))
    with pytest.raises(InputError, match=f"^{tmp_path}/03-market-data.yml:7: detection: "
                                         "test_market_data.py has no check test_gone"):
        triage.diagnose("all", [str(inventory)])


def test_a_stuck_feed_and_a_desynced_book_name_different_scenarios():
    """The market-data check's own words: every book stale is scenario 3 (feed lost), one book
    behind while the others update is 13 (desync), never 3."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("market_check", REPO / "checks" / "test_market_data.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    lost = check.stale_message("core-1", 2.0, symbols, dict.fromkeys(symbols, "3.1s old"))
    behind = check.stale_message("core-1", 2.0, symbols, {"BTCUSDT": "3.1s old"})
    known = {s.id: s for s in scenarios.load_all()}
    named = {message: {n for n in (3, 13) if all(
        symptom.seen_in("test_market_data.py::test_order_books_are_fresh", message)
        for symptom in known[n].detection)} for message in (lost, behind)}
    assert named == {lost: {3}, behind: {13}}, named
