"""Waivers and check selection, without hosts."""

import datetime

import pytest

from ripcord.errors import InputError
from ripcord.verify import CHECKS, CheckResult, _selection, apply_waivers, load_waivers


def results():
    return [CheckResult("exec-1", "test_disk.py::test_disk_usage", "failed", "disk 91% used"),
            CheckResult("exec-2", "test_disk.py::test_disk_usage", "failed", "disk 93% used"),
            CheckResult("exec-1", "test_logs.py::test_error_rate", "failed", "12 errors/min")]


def test_a_waived_failure_is_reported_as_waived_until_it_expires(tmp_path):
    path = tmp_path / "waivers.yml"
    path.write_text("- check: 'test_disk.py::*'\n  hosts: exec-1\n"
                    "  reason: disk grows until the log rotation fix lands (OPS-123)\n"
                    "  expires: 2026-12-31\n")
    waivers = load_waivers(path)
    before = apply_waivers(results(), waivers, today=datetime.date(2026, 12, 1))
    assert [r.outcome for r in before] == ["waived", "failed", "failed"]
    assert "OPS-123" in before[0].message
    after = apply_waivers(results(), waivers, today=datetime.date(2027, 1, 1))
    assert [r.outcome for r in after] == ["failed", "failed", "failed"]
    assert "waiver expired 2026-12-31" in after[0].message


@pytest.mark.parametrize("text, message", [
    ("- check: x\n  reason: r\n", "waiver 1 needs check, reason and expires"),
    ("- check: x\n  reason: r\n  expires: soon\n", "expires must be a date"),
    ("- [unclosed\n", "not valid YAML"),
])
def test_a_malformed_waivers_file_is_an_input_error(tmp_path, text, message):
    path = tmp_path / "waivers.yml"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as error:
        load_waivers(path)
    assert error.value.exit_code == 2 and str(path) in str(error.value)


def test_the_shipped_waivers_file_is_valid():
    load_waivers(CHECKS / "waivers.yml")


def test_selection_is_node_ids_or_a_marker_expression():
    assert _selection("halt and not resume") == [str(CHECKS), "-m",
                                                  "(halt and not resume) and not situational"]
    assert _selection("halt and situational") == [str(CHECKS), "-m", "halt and situational"]
    assert _selection("test_halt.py::test_engine_is_trading") == [
        str(CHECKS / "test_halt.py::test_engine_is_trading")]
    assert _selection("") == [str(CHECKS)]
