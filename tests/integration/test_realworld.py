"""A dozen small ops playbooks written as public ones are (rolling restarts, health checks, log
rotation, patching), their groups mapped onto the sandbox's hosts (playbooks/realworld/groups.yml),
each run with --check on the sandbox: it runs, changing nothing (exec-1's engine and .env read
back over the system ssh client), or it is refused before any host is touched, every problem
saying `not supported by ripcord: X`. docs/playbooks.md has the table."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from ripcord.execute import run_playbook
from ripcord.inventory import Inventory
from ripcord.playbook import PlaybookError
from ripcord.runner import Options

HERE = Path(__file__).resolve().parent / "playbooks" / "realworld"
REFUSED = re.compile(r"not supported by ripcord: (.+?)[;:]")
# playbook: what ripcord refuses in it (X of each `not supported by ripcord: X`), or [] (runs)
EXPECTED = {
    "rolling_restart.yml": [],
    "rolling_update_roles.yml": ["roles"],
    "health_check.yml": [],
    "log_rotation.yml": ["find"],
    "log_cleanup_shell.yml": ["key=value arguments"],
    "patching.yml": ["package managers", "rebooting hosts"],
    "apt_upgrade.yml": ["package managers", "rebooting hosts"],
    "service_status.yml": [],
    "disk_space_check.yml": [],
    "config_change_restart.yml": [],
    "async_restart.yml": ["async", "poll", "async jobs"],
    "notify_and_check.yml": [],
    "db_ready.yml": [],
    "per_os_include.yml": [],
}
MUTATING = {"rolling_restart.yml", "config_change_restart.yml", "notify_and_check.yml"}  # but for --check
UNCHANGED = ('supervisorctl -c "$TITAN_HOME/../etc/supervisord.conf" pid titan-execution; '
             'sha256sum < "$TITAN_HOME/.env"')


@pytest.fixture(scope="module")
def mapped(fleet) -> Inventory:
    return Inventory.load([fleet.inventory, HERE / "groups.yml"])


def test_every_realworld_playbook_is_in_the_table():
    assert sorted(p.name for p in HERE.glob("*.yml") if p.name != "groups.yml") == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_public_ops_playbook_runs_under_check_or_is_refused_saying_so(name, mapped, access,
                                                                        monkeypatch, tmp_path):
    monkeypatch.setenv("RIPCORD_JOURNAL", str(tmp_path / "journal.jsonl"))
    before = access.ssh("exec-1", UNCHANGED).stdout if name in MUTATING else None
    out = io.StringIO()
    try:
        outcome = run_playbook(str(HERE / name), pattern="all", options=Options(check=True), yes=True,
                               console=Console(file=out, width=200), inventory=mapped)
    except PlaybookError as exc:
        messages = [problem.message for problem in exc.problems]
        assert [m for m in messages if not REFUSED.search(m)] == [], messages
        assert [REFUSED.search(m)[1] for m in messages] == EXPECTED[name], messages
        assert not (tmp_path / "journal.jsonl").exists()  # refused before anything ran
        return
    assert EXPECTED[name] == [], f"{name} was expected to be refused, and ran"
    assert outcome.code == 0, out.getvalue()
    if name in MUTATING:  # --check: nothing restarted or edited
        assert access.ssh("exec-1", UNCHANGED).stdout == before
