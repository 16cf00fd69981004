"""Supervisor: every service the inventory gives a host is RUNNING under its supervisord."""

import pytest

pytestmark = [pytest.mark.supervisor, pytest.mark.restart, pytest.mark.deploy,
              pytest.mark.rollback, pytest.mark.scenario01, pytest.mark.scenario05,
              pytest.mark.scenario15, pytest.mark.scenario17]


def test_every_service_is_running(host, hostvars, services):
    if not services:
        pytest.skip("no services on this host")
    conf = hostvars.get("supervisor_config")
    # One `supervisorctl status` for all (each call costs a Python start-up on the host); its
    # exit code is 3 when any program is not running, which is what we are here to report.
    out = host.run("supervisorctl -c %s status", conf) if conf else host.run("supervisorctl status")
    parse = host.supervisor._parse_status
    known = {a["name"]: a["status"] for a in map(parse, out.stdout.splitlines()) if a.get("name")}
    reason = "unknown to supervisord" if out.rc in (0, 3) else \
        f"supervisord does not answer ({(out.stderr or out.stdout).strip()[:80]})"
    states = {name: known.get(name, reason) for name in services}
    down = {name: state for name, state in states.items() if state != "RUNNING"}
    assert not down, f"not RUNNING on {host.backend.hostname}: " + ", ".join(
        f"{name} ({state})" for name, state in sorted(down.items()))
