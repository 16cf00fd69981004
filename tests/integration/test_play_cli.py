"""`invoke play` end to end, as an operator runs it: idempotence, --check, exit codes, --json,
the journal, and secrets. Outcomes are read back over the system ssh client, not from ripcord.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ripcord.journal import Journal

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SECRET = "e2e-secret-value-never-shown"


@pytest.fixture
def play(fleet, tmp_path):
    """play(playbook, *args) -> CompletedProcess of `invoke play` against the test fleet."""
    journal = tmp_path / "journal.jsonl"

    def run(playbook: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "invoke", "--search-root", str(REPO), "play",
                str(HERE / "playbooks" / playbook), "--inventory", str(fleet.inventory), *args]
        env = {**os.environ, "RIPCORD_JOURNAL": str(journal), "RIPCORD_E2E_SECRET": SECRET,
               "RIPCORD_OPERATOR": "e2e"}
        return subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env,
                              input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)

    run.journal = Journal(journal)
    return run


@pytest.fixture(autouse=True)
def clean_hosts(access):
    yield
    for host in ("exec-1", "exec-2"):
        access.ssh(host, 'rm -rf "$TITAN_HOME"/state/e2e* && supervisorctl start titan-hunter >/dev/null',
                   check=False)


def test_every_module_is_idempotent_run_twice(play, access):
    first = play("idempotence.yml", "--host", "exec", "--json")
    assert first.returncode == 0, first.stderr + first.stdout
    report = json.loads(first.stdout)
    assert report["ok"] is True and all(h["changed"] > 0 for h in report["hosts"].values())
    assert access.ssh("exec-2", 'cat "$TITAN_HOME/state/e2e/copied"').stdout == "hello exec-2\n"
    assert access.ssh("exec-1", 'stat -c %a "$TITAN_HOME/state/e2e/test.env"').stdout.strip() == "600"

    second = play("idempotence.yml", "--host", "exec", "--json")
    assert second.returncode == 0, second.stderr
    changed = {h: v["changed"] for h, v in json.loads(second.stdout)["hosts"].items()}
    assert changed == {"exec-1": 0, "exec-2": 0}, [
        r for r in json.loads(second.stdout)["results"] if r["outcome"] == "changed"]


def test_check_mode_changes_nothing_on_the_hosts(play, access):
    assert play("idempotence.yml", "--host", "exec-1").returncode == 0
    before = access.ssh("exec-1", 'sha256sum "$TITAN_HOME/state/e2e/copied"').stdout
    result = play("check_mode.yml", "--host", "exec-1", "--check", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["hosts"]["exec-1"]["changed"] >= 2  # it says what would change
    assert access.ssh("exec-1", 'sha256sum "$TITAN_HOME/state/e2e/copied"').stdout == before
    assert access.ssh("exec-1", 'test -e "$TITAN_HOME/state/e2e/new-under-check"',
                      check=False).returncode == 1
    assert "RUNNING" in access.ssh("exec-1", "supervisorctl status titan-hunter").stdout


def test_an_invalid_playbook_exits_2_naming_file_and_line_and_touches_nothing(play, access):
    result = play("invalid.yml", "--host", "exec")
    assert result.returncode == 2
    assert "invalid.yml:7: unknown module 'comand' (did you mean 'command'?)" in result.stderr
    for host in ("exec-1", "exec-2"):
        assert access.ssh(host, 'test -e "$TITAN_HOME/state/e2e-invalid-mark"',
                          check=False).returncode == 1
        assert access.ssh(host, 'test -e "$TITAN_HOME/.ripcord.lock"', check=False).returncode == 1


def test_a_pattern_that_matches_nothing_exits_2(play):
    result = play("tagged.yml", "--host", "exec-99")
    assert result.returncode == 2 and "matched no hosts" in result.stderr


def test_a_declined_confirmation_exits_4_and_nothing_after_it_runs(play, access):
    declined = play("confirm.yml", "--host", "exec")  # no terminal, no --yes: declined
    assert declined.returncode == 4
    assert "pass --yes" in declined.stderr
    assert access.ssh("exec-1", 'test -e "$TITAN_HOME/state/e2e-confirm-mark"',
                      check=False).returncode == 1
    confirmed = play("confirm.yml", "--host", "exec", "--yes")
    assert confirmed.returncode == 0, confirmed.stderr
    assert access.ssh("exec-2", 'test -e "$TITAN_HOME/state/e2e-confirm-mark"').returncode == 0


def test_an_unreachable_host_exits_3(play, fleet, tmp_path):
    ghost = tmp_path / "ghost.yml"
    ghost.write_text(f"all:\n  children:\n    exec:\n      hosts:\n        exec-ghost:\n"
                     f"          ansible_host: 127.0.0.1\n"
                     f"          ansible_port: {fleet.plan.base_port + 9}\n")
    playbook = tmp_path / "ping.yml"
    playbook.write_text("- hosts: exec\n  tasks:\n    - command: 'true'\n")
    result = play(str(playbook), "--host", "exec", "--inventory", str(ghost), "--json")
    assert result.returncode == 3
    report = json.loads(result.stdout)
    assert report["hosts"]["exec-ghost"]["unreachable"] is True
    assert report["hosts"]["exec-1"]["ok"] is True


def test_json_is_the_only_stdout_and_the_journal_has_the_run(play):
    result = play("tagged.yml", "--host", "exec-1", "--json", "--tags", "write",
                  "-e", "word=from-cli")
    report = json.loads(result.stdout)  # the whole of stdout is one JSON object
    for key in ("ok", "task", "hosts", "checks", "duration_s", "journal_id"):
        assert key in report
    assert set(report["hosts"]["exec-1"]) >= {"ok", "changed", "failed", "skipped", "unreachable"}
    record = next(r for r in play.journal.records() if r["id"] == report["journal_id"])
    assert record["operator"] == "e2e" and record["hosts"]["exec-1"]["changed"] == 1
    assert play.journal.verify() == []


def test_tags_and_extra_vars(play, access):
    assert play("tagged.yml", "--host", "exec-1", "--tags", "write", "-e", "word=from-cli").returncode == 0
    assert access.ssh("exec-1", 'cat "$TITAN_HOME/state/e2e-tagged"').stdout == "from-cli\n"
    assert play("tagged.yml", "--host", "exec-1", "--skip-tags", "other").returncode == 0
    assert access.ssh("exec-1", 'cat "$TITAN_HOME/state/e2e-tagged"').stdout == "from-play\n"


def test_a_lookup_secret_never_reaches_output_or_journal(play, access):
    result = play("idempotence.yml", "--host", "exec-1", "--json", "--diff")
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout and SECRET not in result.stderr
    assert SECRET not in play.journal.path.read_text()
    env = access.ssh("exec-1", 'cat "$TITAN_HOME/state/e2e/test.env"').stdout
    assert f"TEST_KEY={SECRET}" in env  # it did arrive where it was meant to
