"""The pure parts of checks/: log timestamps, expected ports, required .env keys, markers."""

from __future__ import annotations

from pathlib import Path

import pytest

CHECKS = Path(__file__).resolve().parents[2] / "checks"


def test_log_timestamps(load_check):
    logs = load_check("test_logs")
    assert logs._stamp("2026-11-21T08:33:07.766Z INFO titan-execution: Starting") == \
        pytest.approx(1795249987.766, abs=0.001)
    assert logs._stamp("2026-11-21 08:33:05,954 INFO supervisord") is None
    assert logs._stamp("Traceback (most recent call last):") is None


def test_expected_ports_by_service(load_check):
    ports = load_check("test_ports").expected_ports
    db = {"services": ["postgresql", "redis", "nats"], "health_urls": {}, "postgres_port": 24003,
          "redis_url": "redis://127.0.0.1:24004/0", "nats_url": "nats://127.0.0.1:24001",
          "nats_monitor_url": "http://127.0.0.1:24002"}
    assert ports(db) == {"postgresql": 24003, "redis": 24004, "nats": 24001,
                         "nats monitoring": 24002}
    exec_host = {**db, "services": ["titan-execution"],
                 "health_urls": {"titan-execution": "http://127.0.0.1:24031/health"}}
    assert ports(exec_host) == {"titan-execution": 24031}  # data services only where they run


def test_required_env_keys_by_role(load_check):
    drift = load_check("test_drift")
    core = drift.required_keys({"services": ["titan-brain", "titan-console"]})
    execution = drift.required_keys({"services": ["titan-execution"]})
    assert "EXCHANGE_OPS_API_KEY" in core and "EXCHANGE_OPS_API_KEY" not in execution
    assert {"TITAN_HMAC_SECRET", "TITAN_DB_PASSWORD", "EXCHANGE_API_KEY"} <= execution
    assert drift.required_keys({"env_required_keys": ["A"], "services": []}) == {"A"}


@pytest.mark.parametrize("path", sorted(CHECKS.glob("test_*.py")), ids=lambda p: p.name)
def test_every_check_module_names_a_known_concern(path, load_check):
    """Selection by concern (`invoke verify security`) needs each module marked with one."""
    conftest = load_check("conftest")
    module = load_check(path.stem)
    marks = {m.name for m in getattr(module, "pytestmark", [])}
    assert marks & set(conftest.CONCERNS), f"{path.name} carries no concern marker: {marks}"
    assert marks <= {*conftest.CONCERNS, *conftest.PROCEDURES, *conftest.SCENARIOS, "situational"}, marks
