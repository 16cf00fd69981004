"""`invoke rotate`: a new secret on every host, each reader restarted and proven on it, or the
previous one back everywhere.

Outcomes are read independently: each host's .env with the system ssh client, the engines'
/health fingerprints with curl (computed here from the .env's value), psql with the new password,
the exchange's API with the new and old keys, commands from a plain NATS client. The fleet is
left trading on the rotated secrets: the other tests read them from the hosts at use time.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import exchange, publish, trading_again

from ripcord import bus

REPO = Path(__file__).resolve().parents[2]

HOSTS = ("db-1", "core-1", "exec-1", "exec-2")
ENGINES = ("exec-1", "exec-2")
HMAC, PREVIOUS = "TITAN_HMAC_SECRET", "TITAN_HMAC_SECRET_PREVIOUS"


def fingerprint(key: str, value: str) -> str:
    """As the stand-ins show a secret in /health (sandbox/titan/common.py), computed here."""
    return hashlib.sha256(f"titan-secret-fingerprint\0{key}\0{value}".encode()).hexdigest()[:12]


def shown(access, host: str) -> dict:
    return access.health(host, "titan-execution")["secret_fingerprints"]


def rejections(access, host: str) -> int:
    log = '"$TITAN_HOME/logs/titan-execution.log"'
    out = access.ssh(host, f"grep -c -F 'HMAC Verification Failed' {log}", check=False).stdout
    return int(out.strip() or 0)


def no_value_leaked(result, tmp_path, *values: str) -> None:
    journal = (tmp_path / "journal.jsonl").read_text()
    for value in values:
        assert value not in result.stdout + result.stderr, "a secret value in ripcord's output"
        assert value not in journal, "a secret value in the journal"


@pytest.fixture(autouse=True)
def trading_afterwards(access):
    yield
    trading_again(access, access.env("exec-1")[HMAC], ENGINES, timeout=20)


def test_bad_input_is_refused_and_check_changes_nothing(access, ripcord):
    before = {h: access.env(h) for h in HOSTS}
    uptime = access.health("exec-1", "titan-execution")["uptime_s"]
    for args, says in ((("--secret", "nope", "--host", "sandbox"), "--secret hmac|db|exchange"),
                       (("--secret", "hmac", "--host", "exec-1"), "leaves out exec-2"),
                       (("--secret", "db", "--host", "exec"), "selects no host that runs postgresql")):
        result = ripcord("rotate", *args, "--yes")
        assert result.returncode == 2, result.stdout[-1000:] + result.stderr[-1000:]
        assert says in result.stdout + result.stderr
    result = ripcord("rotate", "--secret", "hmac", "--host", "sandbox", "--check", "--json")
    assert result.returncode == 0, result.stdout[-1000:] + result.stderr[-1000:]
    assert "would write a new TITAN_HMAC_SECRET" in result.stdout
    assert {h: access.env(h) for h in HOSTS} == before
    assert access.health("exec-1", "titan-execution")["uptime_s"] >= uptime  # not restarted


def test_hmac_rotation_every_engine_runs_the_new_secret_and_rejects_the_old(access, ripcord, tmp_path):
    old = access.env("exec-1")[HMAC]
    held = tmp_path / "hmac.secret"  # the controller's copy, which ripcord signs with first
    held.write_text(old + "\n")
    held.chmod(0o600)
    extra = tmp_path / "controller.yml"
    extra.write_text(f"all:\n  vars:\n    titan_hmac_secret_file: {held}\n")
    result = ripcord("rotate", "--secret", "hmac", "--host", "sandbox", "--yes", "--json",
                     inventories=(extra,))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    envs = {h: access.env(h) for h in HOSTS}
    new = envs["exec-1"][HMAC]
    assert new != old and {e[HMAC] for e in envs.values()} == {new}
    assert held.read_text().strip() == new and held.stat().st_mode & 0o077 == 0
    assert not any(e.get(PREVIOUS) for e in envs.values()), "a previous secret is left"
    for host in ENGINES:  # each engine read the new secret, and no previous one
        assert shown(access, host).get(HMAC) == fingerprint(HMAC, new)
        assert PREVIOUS not in shown(access, host)
    no_value_leaked(result, tmp_path, old, new)

    # a command signed with the old secret is rejected by every engine (it would halt them)
    before = {h: rejections(access, h) for h in ENGINES}
    publish(access, bus.HALT_SUBJECT, {"state": "HARD_HALT", "reason": "old secret",
                                       "operator": "pytest", "source": "test"}, old)
    for host in ENGINES:
        access.wait_for(lambda h=host: rejections(access, h) > before[h], timeout=10,
                        what=f"{host} rejecting the old secret")
        assert not access.health(host, "titan-execution")["halted"]

    # ripcord signs with what the hosts hold now: every engine takes its command and answers
    result = ripcord("cancel-all", "--host", "exec", "--yes", "--json")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_a_host_lost_midway_puts_the_old_secret_back_everywhere(access, ripcord, tmp_path):
    """exec-2 goes away (its sshd and the connection it serves) while exec-1 restarts on the new
    secret: every host ends on the old one, every engine trading, and the run names exec-2."""
    fleet, old = access.fleet, access.env("exec-1")[HMAC]
    started = access.health("exec-1", "titan-execution")["uptime_s"]
    sshd_pid = fleet._supervisorctl(fleet.plan.control_conf, "pid", "sshd-exec-2").strip()
    assert sshd_pid.isdigit(), sshd_pid
    env = {**os.environ, "RIPCORD_JOURNAL": str(tmp_path / "journal.jsonl"),
           "RIPCORD_APPROVALS": str(tmp_path / "approvals")}
    argv = [sys.executable, "-m", "invoke", "--search-root", str(REPO), "rotate", "--inventory",
            str(fleet.inventory), "--secret", "hmac", "--host", "sandbox", "--yes", "--json"]
    run = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           stdin=subprocess.DEVNULL)
    try:
        def restarting() -> bool:  # exec-1's engine restarting: exec-2 is next
            try:
                return access.health("exec-1", "titan-execution")["uptime_s"] < started
            except AssertionError:
                return True
        access.wait_for(restarting, timeout=30, what="exec-1's engine restarting")
        sessions = subprocess.run(["pgrep", "-P", sshd_pid], capture_output=True, text=True).stdout
        fleet._supervisorctl(fleet.plan.control_conf, "stop", "sshd-exec-2", check=False)
        for pid in sessions.split():  # the connections it serves (ripcord's): each in its own session
            subprocess.run(["kill", "-TERM", pid], check=False)
        stdout, stderr = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
        fleet._supervisorctl(fleet.plan.control_conf, "start", "sshd-exec-2", check=False)
        access.wait_for(lambda: access.ssh("exec-2", "true", check=False).returncode == 0,
                        timeout=20, what="exec-2's sshd back")
    assert run.returncode == 3, stdout[-2000:] + stderr[-2000:]  # a host was unreachable
    assert "failed at exec-2" in stdout and "previous TITAN_HMAC_SECRET is back" in stdout, stdout[-2000:]
    envs = {h: access.env(h) for h in HOSTS}
    assert {e[HMAC] for e in envs.values()} == {old}, "a host is left on another secret"
    for host in ENGINES:
        assert shown(access, host).get(HMAC) == fingerprint(HMAC, old)
        assert not access.health(host, "titan-execution")["halted"]
    for value in {old} | {e.get(PREVIOUS) for e in envs.values() if e.get(PREVIOUS)}:
        assert value not in stdout + stderr


def test_db_rotation_logs_in_with_the_new_password_only(access, ripcord, tmp_path):
    old = access.env("db-1")["TITAN_DB_PASSWORD"]
    result = ripcord("rotate", "--secret", "db", "--host", "sandbox", "--yes", "--json")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    new = access.env("db-1")["TITAN_DB_PASSWORD"]
    assert new != old and {access.env(h)["TITAN_DB_PASSWORD"] for h in HOSTS} == {new}

    def login(password: str) -> subprocess.CompletedProcess:
        return subprocess.run(["psql", "-X", "-w", "-tA", "-h", "127.0.0.1", "-p",
                               str(access.plan.postgres_port), "-U", "titan", "-d", "titan",
                               "-c", "SELECT count(*) FROM orders"], capture_output=True, text=True,
                              timeout=10, env={**os.environ, "PGPASSWORD": password})
    assert login(new).returncode == 0, login(new).stderr
    assert "password authentication failed" in login(old).stderr
    for host in ENGINES:
        health = access.health(host, "titan-execution")
        assert health["secret_fingerprints"]["TITAN_DB_PASSWORD"] == fingerprint("TITAN_DB_PASSWORD", new)
        assert health["db_connected"] is True
    no_value_leaked(result, tmp_path, old, new)


def test_exchange_rotation_new_keys_work_and_old_keys_are_revoked(access, ripcord, tmp_path):
    key = "EXCHANGE_API_KEY"
    old = {h: access.env(h)[key] for h in HOSTS}
    result = ripcord("rotate", "--secret", "exchange", "--host", "sandbox", "--yes", "--json")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    new = {h: access.env(h)[key] for h in HOSTS}
    for host in HOSTS:
        assert new[host] != old[host]
        assert exchange(access, "GET", "/api/v1/positions", new[host])[0] == 200
        assert exchange(access, "GET", "/api/v1/positions", old[host])[0] == 401
    for host in ENGINES:
        assert shown(access, host)[key] == fingerprint(key, new[host])
        access.wait_for(lambda h=host: access.health(h, "titan-execution")["status"] == "ok",
                        timeout=10, what=f"{host}'s engine healthy on its new key")
    no_value_leaked(result, tmp_path, *old.values(), *new.values())
