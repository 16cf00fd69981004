"""What the checks read once a host for a run (conftest's read_all: the .env's mode and owner,
supervisord's answer, ...) is read afresh by the next run: a change made between two runs on
the same connections is seen, and put back, seen again. The change is made over the system ssh
client, not through ripcord."""

from __future__ import annotations

from ripcord.templating import Templar, resolve_vars
from ripcord.verify import run_checks

SELECT = "test_security.py::test_env_is_private test_supervisor.py::test_every_service_is_running"


def test_a_change_between_two_runs_is_seen(access, connect, inventory):
    connections = {"exec-2": connect("exec-2")}
    hostvars = {"exec-2": resolve_vars(Templar(), dict(inventory.host_vars("exec-2")))}

    def outcomes() -> dict[str, tuple[str, str]]:
        report = run_checks(SELECT, connections, hostvars)
        return {r.id.split("::")[1]: (r.outcome, r.message) for r in report.results}

    assert {o for o, _ in outcomes().values()} == {"passed"}
    access.ssh("exec-2", 'chmod 640 "$TITAN_HOME/.env"')
    try:
        changed = outcomes()
    finally:
        access.ssh("exec-2", 'chmod 600 "$TITAN_HOME/.env"')
    assert changed["test_env_is_private"][0] == "failed"
    assert "mode 640, not 600" in changed["test_env_is_private"][1]
    assert changed["test_every_service_is_running"][0] == "passed"
    assert {o for o, _ in outcomes().values()} == {"passed"}
