"""Circuit breaker: the brain's breaker is CLOSED, so strategy signals reach the engines
(runbook 004 scenario 6, tilt detection, and 002's "Circuit Breaker Activation")."""

import pytest

pytestmark = [pytest.mark.health, pytest.mark.scenario06]


def test_breaker_is_closed(host, hostvars, health):
    if "titan-brain" not in (hostvars.get("services") or []):
        pytest.skip("no brain on this host")
    answer = health("titan-brain")
    assert answer is not None, f"titan-brain does not answer its health on {host.backend.hostname}"
    assert answer.get("breaker") == "CLOSED", (
        f"the circuit breaker is {answer.get('breaker')} on {host.backend.hostname}: no signal "
        f"reaches the engines; find why it tripped (`invoke status`), then `invoke breaker --reset`")
