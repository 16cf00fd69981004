"""Host-side files on a sandbox host (issue 15): an env write that sourcing never runs, a lock that
two runs never both take, a lock record without secrets, a pg_dump that only its owner reads.

Outcomes are read over the system ssh client (access.ssh), not from ripcord's report.
"""

from __future__ import annotations

import json
import secrets
import shlex
import threading
import uuid
from pathlib import Path

import pytest

from ripcord.connection import Connection
from ripcord.lock import LOCK_NAME, HostLock, LockHeld, owner_record
from tests.integration.helpers import commands_sent

HOST = "exec-1"


@pytest.fixture
def host_dir(access):
    """A fresh directory in exec-1's titan_home, removed afterwards."""
    path = f"{access.plan.host(HOST).titan_home}/hostside-{uuid.uuid4().hex[:8]}"
    access.ssh(HOST, f"mkdir -m 700 {shlex.quote(path)}")
    yield path
    access.ssh(HOST, f"rm -rf {shlex.quote(path)}")


def test_an_env_value_with_shell_metacharacters_is_sourced_back_byte_for_byte(
        access, run_module, host_dir, monkeypatch):
    marker = f"/tmp/ripcord-hostside-{uuid.uuid4().hex}"
    value = (f"p@ss $(touch {marker}-a) `touch {marker}-b`; touch {marker}-c & "
             "it's \"q\" \\ \\n  #x $HOME ~ * | > <\t end ")
    env = f"{host_dir}/.env"
    access.ssh(HOST, f"printf 'A=1\\nSECRET=old\\nB=two\\n' > {env} && chmod 600 {env}")
    sent = commands_sent(monkeypatch)

    result = run_module("env", {"path": env, "key": "SECRET", "value": value}, host=HOST)
    assert result.changed and not result.failed, result.msg
    assert sent and all(value not in command for command in sent), "the value went into argv"

    sourced = access.ssh(HOST, f'set -a; . {env}; printf %s "$SECRET"').stdout
    assert sourced == value
    others = access.ssh(HOST, f'set -a; . {env}; printf "%s|%s" "$A" "$B"').stdout
    assert others == "1|two"
    for suffix in "abc":
        assert access.ssh(HOST, f"test -e {marker}-{suffix}", check=False).returncode == 1, \
            f"sourcing the .env ran a command ({suffix})"
    assert access.ssh(HOST, f"stat -c %a {env}").stdout.strip() == "600"
    assert access.ssh(HOST, f"ls -A {host_dir}").stdout.split().count(".env") == 1
    again = run_module("env", {"path": env, "key": "SECRET", "value": value}, host=HOST)
    assert not again.changed and not again.failed, again.msg


def _second_connection(inventory) -> Connection:
    conn = Connection(HOST, inventory.connection_for(HOST))
    conn.open()
    return conn


def race(locks: list[HostLock]) -> list[bool]:
    """Each lock's acquire(wait_s=0), started together from its own thread: who got it."""
    won = [False] * len(locks)
    start = threading.Barrier(len(locks))

    def take(index: int) -> None:
        start.wait()
        try:
            locks[index].acquire(wait_s=0)
            won[index] = True
        except LockHeld:
            pass

    threads = [threading.Thread(target=take, args=(i,)) for i in range(len(locks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won


def test_two_runs_racing_for_a_host_lock_never_both_take_it(inventory, connect, host_dir):
    first, second = connect(HOST), _second_connection(inventory)
    try:
        both, wins = [], 0
        for attempt in range(300):
            locks = [HostLock(first, host_dir, owner_record(f"a-{attempt}", "alice", "ripcord x")),
                     HostLock(second, host_dir, owner_record(f"b-{attempt}", "bob", "ripcord y"))]
            won = race(locks)
            if all(won):
                both.append(attempt)
            wins += any(won)
            for lock, ok in zip(locks, won, strict=True):
                if ok:
                    lock.release()
        assert both == [], f"both runs held the lock in attempts {both[:10]}"
        assert wins == 300  # and one of them always got it
    finally:
        second.close()


def test_a_lock_without_its_owner_record_yet_is_held_not_broken(access, connect, host_dir):
    """The moment between a lock's mkdir and its record: another run must see it as held."""
    lock = f"{host_dir}/{LOCK_NAME}"
    access.ssh(HOST, f"mkdir {lock}")
    with pytest.raises(LockHeld, match="no owner record"):
        HostLock(connect(HOST), host_dir, owner_record("late", "bob", "ripcord y")).acquire(wait_s=0)
    assert access.ssh(HOST, f"test -d {lock} && ls -A {lock}").stdout == "", "the lock was touched"


def test_a_lock_record_holds_no_option_values_and_never_travels_in_argv(access, connect, host_dir,
                                                                         monkeypatch):
    token = secrets.token_hex(12)
    command = f"ripcord play playbooks/rotate.yml --host exec-1 -e api_key={token} -e 'x {token}'"
    sent = commands_sent(monkeypatch)
    lock = HostLock(connect(HOST), host_dir, owner_record("r1", "alice", command))
    lock.acquire(wait_s=0)
    try:
        record = json.loads(access.ssh(HOST, f"cat {host_dir}/{LOCK_NAME}/owner.json").stdout)
    finally:
        lock.release()
    assert token not in json.dumps(record)
    assert record["command"].startswith("ripcord play playbooks/rotate.yml --host")
    assert "-e" in record["command"]
    assert all("alice" not in c for c in sent), "the record went into argv"
    assert access.ssh(HOST, f"test -e {host_dir}/{LOCK_NAME}", check=False).returncode == 1


def test_a_database_dump_is_created_mode_600_and_follows_no_planted_link(access, run_module):
    db = access.plan.host("db-1")
    dest = f"{db.titan_home}/backups/hostside-{uuid.uuid4().hex[:8]}.sql"
    victim = f"{dest}.victim"
    access.ssh("db-1", f"printf keep > {victim} && ln -s {victim} {dest}.partial")
    try:
        result = run_module("postgres", {"action": "dump", "dest": dest}, host="db-1")
        assert result.changed and not result.failed, result.msg
        assert access.ssh("db-1", f"stat -c %a {dest}").stdout.strip() == "600"
        assert access.ssh("db-1", f"cat {victim}").stdout == "keep", "the dump went through a link"
        assert "CREATE TABLE" in access.ssh("db-1", f"cat {dest}").stdout
        left = access.ssh("db-1", f"ls -A {Path(dest).parent}").stdout.split()
        assert not [name for name in left if ".partial-" in name], left
    finally:
        access.ssh("db-1", f"rm -f {dest} {dest}.partial {victim}")
