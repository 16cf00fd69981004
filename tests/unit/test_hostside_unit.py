"""Host-side files without a fleet (issue 15): the .env quoting read back by sh, ripcord and the
Titan stand-ins; the lock over the real host-side commands run by a local /bin/sh; the lock
record's command line; the journal's creation mode and its corrupt lines; backups that follow no
planted link.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from ripcord import dotenv
from ripcord.connection import CommandResult
from ripcord.journal import GENESIS, Journal
from ripcord.lock import LOCK_NAME, HostLock, LockHeld, owner_record, public_command
from ripcord.modules import REGISTRY, TaskContext, envfile, filesupport
from ripcord.templating import Secrets

STANDINS = Path(__file__).resolve().parents[2] / "sandbox" / "titan"
NASTY = ["$(touch {m}-a)", "`touch {m}-b`", "x; touch {m}-c", "it's", "'", "''", '"q"', "\\",
         "\\'", "a b  c ", " lead", "#hash", "x #not a comment", "~root", "$HOME", "*", "a=b",
         "\t\x0b\x0c\x1c\x1d\x1e\x85\u2028 end", "ünïcode ✓", "", "plain-value_1.2:3/4@5%6+7,8"]


class Shell:
    """Stands in for a Connection: the command line runs in a local /bin/sh, stdin attached."""

    name = "local"

    def __init__(self):
        self.commands: list[str] = []

    def run(self, command: str, *, timeout=None, stdin=None) -> CommandResult:
        self.commands.append(command)
        done = subprocess.run(["/bin/sh", "-c", command], input=stdin, capture_output=True,
                              text=True, timeout=30)
        return CommandResult(done.returncode, done.stdout, done.stderr)


def standin_reader():
    spec = importlib.util.spec_from_file_location("titan_common", STANDINS / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.read_env_file


def sourced(path: Path, key: str) -> str:
    return subprocess.run(["/bin/sh", "-c", f'set -a; . "$1"; printf %s "${key}"', "sh", str(path)],
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("template", NASTY)
def test_env_module_values_are_sourced_and_read_back_byte_for_byte(tmp_path, template):
    marker = tmp_path / "ran"
    value = template.format(m=marker)
    path = tmp_path / ".env"
    path.write_text("A=1\nKEY=old\nB=2\n")
    shell = Shell()
    ctx = TaskContext(host="local", vars={}, conn=shell, secrets=Secrets())
    module = REGISTRY["env"]
    result = module().run(ctx, module.with_defaults({"path": str(path), "key": "KEY", "value": value}))
    assert result.changed and not result.failed, result.msg
    args = [command.replace(filesupport.q(envfile.SCRIPT), "") for command in shell.commands]
    assert len(value) < 3 or all(value not in rest for rest in args), "the value went into argv"
    assert sourced(path, "KEY") == value
    assert (sourced(path, "A"), sourced(path, "B")) == ("1", "2")
    assert dotenv.read(path) == {"A": "1", "KEY": value, "B": "2"}
    assert standin_reader()(path) == {"A": "1", "KEY": value, "B": "2"}
    assert not list(tmp_path.glob("ran*")), "sourcing the .env ran a command"


def test_plain_env_files_read_as_before(tmp_path):
    text = ("# c\nexport A=1\nB = two \nC=\"dq value\"\nD='sq value'\nE=x'y\nF='unterminated\n"
            "G=a=b\nH=\n")
    want = {"A": "1", "B": "two", "C": "dq value", "D": "sq value", "E": "x'y", "F": "'unterminated",
            "G": "a=b", "H": ""}
    assert dotenv.parse(text) == want
    path = tmp_path / ".env"
    path.write_text(text.replace("export ", ""))  # the stand-ins never took export lines
    assert standin_reader()(path) == want


def test_plain_values_stay_unquoted():
    """Existing sandbox .env lines (hex secrets, URLs, numbers) are written as they were, so
    rewriting one with the same value is no change."""
    for value in ("0123abcdef", "nats://127.0.0.1:4222", "BTCUSDT,ETHUSDT", "/a/b.halt", "3", ""):
        assert dotenv.quote(value) == value


def test_env_backup_is_not_written_through_a_link_at_its_name(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    path = tmp_path / ".env"
    path.write_text("K=1\n")
    backup = tmp_path / ".env.fixed.bak"
    backup.symlink_to(victim)
    monkeypatch.setattr(envfile, "backup_name", lambda _path: str(backup))
    ctx = TaskContext(host="local", vars={}, conn=Shell(), secrets=Secrets())
    module = REGISTRY["env"]
    result = module().run(ctx, module.with_defaults({"path": str(path), "key": "K", "value": "2"}))
    assert result.changed and not result.failed, result.msg
    assert victim.read_text() == "keep"
    assert not backup.is_symlink() and backup.read_text() == "K=1\n"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600


def test_file_backup_is_not_written_through_a_link_at_its_name(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("keep")
    path = tmp_path / "app.conf"
    path.write_text("old")
    backup = tmp_path / "app.conf.fixed.bak"
    backup.symlink_to(victim)
    monkeypatch.setattr(filesupport, "backup_name", lambda _path: str(backup))
    ctx = TaskContext(host="local", vars={}, conn=Shell(), secrets=Secrets())
    assert filesupport.make_backup(ctx, str(path)) == str(backup)
    assert victim.read_text() == "keep"
    assert not backup.is_symlink() and backup.read_text() == "old"


# --- the host lock, over the real host-side commands --------------------------------------------

def lock(directory: Path, run: str) -> HostLock:
    return HostLock(Shell(), str(directory), owner_record(run, "alice", "ripcord x"))


def test_a_lock_directory_without_its_owner_record_is_held(tmp_path):
    (tmp_path / LOCK_NAME).mkdir()
    with pytest.raises(LockHeld, match="no owner record"):
        lock(tmp_path, "late").acquire(wait_s=0)
    assert (tmp_path / LOCK_NAME).is_dir()


def test_concurrent_acquisitions_never_both_succeed(tmp_path):
    both = []
    for attempt in range(300):
        locks = [lock(tmp_path, f"a{attempt}"), lock(tmp_path, f"b{attempt}")]
        won = [False, False]
        start = threading.Barrier(2)

        def take(i, locks=locks, won=won, start=start):
            start.wait()
            try:
                locks[i].acquire(wait_s=0)
                won[i] = True
            except LockHeld:
                pass

        threads = [threading.Thread(target=take, args=(i,)) for i in (0, 1)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        if all(won):
            both.append(attempt)
        assert any(won)
        for held, ok in zip(locks, won, strict=True):
            if ok:
                held.release()
    assert both == []


def test_a_stale_lock_is_broken_only_if_its_record_is_unchanged(tmp_path):
    dead = {"run": "dead", "since": 0, "controller": "x", "pid": 1}
    (tmp_path / LOCK_NAME).mkdir()
    (tmp_path / LOCK_NAME / "owner.json").write_text(json.dumps(dead))
    mine = lock(tmp_path, "mine")
    mine.acquire(wait_s=0)  # older than the lease: broken, then taken
    assert json.loads((tmp_path / LOCK_NAME / "owner.json").read_text())["run"] == "mine"
    from ripcord.lock import BREAK
    mine._script(BREAK, "0" * 64)  # a breaker that judged some other record stale
    assert (tmp_path / LOCK_NAME / "owner.json").exists()
    mine.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_the_lock_record_keeps_no_option_values():
    shown = public_command("ripcord play p.yml --host exec-1 -e token=s3cr3t -e 'k=v w' --extra-vars=@x "
                           "--yes --reason 'why'")
    assert shown == "ripcord play p.yml --host … -e … -e … --extra-vars=… --yes --reason …"
    assert "s3cr3t" not in json.dumps(owner_record("r", "alice", "ripcord x -e token=s3cr3t"))


# --- the journal -------------------------------------------------------------------------------

def test_the_journal_is_created_0600_by_open_not_by_a_later_chmod(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "chmod", lambda *a, **k: None)  # a chmod after the fact does nothing
    old = os.umask(0o022)
    try:
        Journal(tmp_path / "j" / "journal.jsonl").append({"kind": "test"})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "j" / "journal.jsonl").stat().st_mode) == 0o600


def test_the_journal_is_never_opened_through_a_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("")
    (tmp_path / "journal.jsonl").symlink_to(victim)
    with pytest.raises(OSError):
        Journal(tmp_path / "journal.jsonl").append({"kind": "test"})
    assert victim.read_text() == ""


def test_a_corrupt_journal_line_is_reported_and_the_run_still_journaled(tmp_path, capsys):
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append({"kind": "one"})
    with open(journal.path, "ab") as handle:
        handle.write(b'{"half": \n\xff\xfe not json\n')
    last_good = journal.records()[-1]["hash"]
    new_id = journal.append({"kind": "two"})
    warning = capsys.readouterr().err
    assert "the last 2 line(s) are not journal records" in warning and str(journal.path) in warning
    records = journal.records()
    assert [r["kind"] for r in records] == ["one", "two"] and records[-1]["id"] == new_id
    assert records[-1]["prev"] == last_good != GENESIS
    assert records[-1]["journal_problems"] == ["2 lines before this record: not a journal record"]
    assert journal.verify() == ["line 2: not a journal record (corrupt)",
                                "line 3: not a journal record (corrupt)"]
