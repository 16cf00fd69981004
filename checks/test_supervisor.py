"""Supervisor: every service the inventory gives a host is RUNNING under its supervisord."""

import pytest

pytestmark = [pytest.mark.supervisor, pytest.mark.restart, pytest.mark.deploy,
              pytest.mark.rollback, pytest.mark.scenario01, pytest.mark.scenario05,
              pytest.mark.scenario15, pytest.mark.scenario17]


def test_every_service_is_running(host, hostvars, services):
    if not services:
        pytest.skip("no services on this host")
    conf = hostvars.get("supervisor_config")
    states = {}
    for name in services:
        try:
            states[name] = host.supervisor(name, supervisorctl_conf=conf).status
        except (RuntimeError, AssertionError) as exc:  # unknown program, or supervisord down
            states[name] = f"unknown to supervisord ({str(exc).strip().splitlines()[-1][:80]})"
    down = {name: state for name, state in states.items() if state != "RUNNING"}
    assert not down, f"not RUNNING on {host.backend.hostname}: " + ", ".join(
        f"{name} ({state})" for name, state in sorted(down.items()))
