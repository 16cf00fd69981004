"""Supervisor: every service the inventory gives a host is RUNNING under its supervisord.

supervisord is asked over its own XML-RPC interface, once a host for the run (conftest's
`supervised`, which the service-memory check shares).
"""

import pytest

pytestmark = [pytest.mark.supervisor, pytest.mark.restart, pytest.mark.deploy,
              pytest.mark.rollback, pytest.mark.scenario01, pytest.mark.scenario05,
              pytest.mark.scenario15, pytest.mark.scenario17]


def test_every_service_is_running(host, services, supervised):
    if not services:
        pytest.skip("no services on this host")
    states = supervised.of(host)
    assert not isinstance(states, str), (f"supervisord does not answer on "
                                         f"{host.backend.hostname}: {states}")
    down = {name: states[name][0] if name in states else "unknown to supervisord"
            for name in services if states.get(name, ("",))[0] != "RUNNING"}
    assert not down, f"not RUNNING on {host.backend.hostname}: " + ", ".join(
        f"{name} ({state})" for name, state in sorted(down.items()))
