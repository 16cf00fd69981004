"""The fleet is real: sshd with pinned host keys, supervisord, PostgreSQL, Redis, NATS, health."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_every_host_logs_in_as_the_unprivileged_user_with_the_pinned_key(access):
    hosts = access.plan.hosts
    assert [h.name for h in hosts] == ["db-1", "core-1", "exec-1", "exec-2"]
    for host in hosts:
        out = access.ssh(host.name, 'echo "$TITAN_HOME"; id -un; id -u; stat -c %a "$TITAN_HOME/.env"')
        titan_home, user, uid, env_mode = out.stdout.split()
        assert titan_home == str(host.titan_home)
        assert user == access.fleet.user
        assert uid != "0", "sandbox hosts must not log in as root"  # whoever brought them up
        assert env_mode == "600"


def login_user_as(access, user: str | None) -> str:
    """login_user() as the sandbox would compute it when run by `user` (None: as we are)."""
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); "
            "from ripcord.sandbox.plan import login_user; print(login_user())")
    python = str(access.fleet.runtime / "bin" / "python")  # a Python the login user may run
    argv = ["runuser", "-u", user, "--", python, "-c", code] if user else [python, "-c", code]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd="/",
                            env={k: v for k, v in os.environ.items() if k != "RIPCORD_SANDBOX_USER"})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_run_as_root_the_hosts_log_in_as_the_dedicated_user(access):
    if os.geteuid() != 0:
        pytest.skip("needs root: the root path of login_user")
    assert login_user_as(access, None) == "ripcord" == access.fleet.user


def test_run_as_another_user_the_hosts_log_in_as_that_user(access):
    """The non-root path, run as the sandbox's (unprivileged) login user itself."""
    user = access.fleet.user if os.geteuid() == 0 else None
    assert login_user_as(access, user) == access.fleet.user
    assert pwd.getpwnam(access.fleet.user).pw_uid != 0


def test_a_changed_host_key_is_refused(access, tmp_path):
    """Pin a different key for exec-1: the client must refuse to talk to the real one."""
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    port = access.plan.host("exec-1").ssh_port
    lines = access.plan.known_hosts.read_text().splitlines()
    fake_type, fake_key = other.with_suffix(".pub").read_text().split()[:2]
    changed = [f"[127.0.0.1]:{port} {fake_type} {fake_key}" if line.startswith(f"[127.0.0.1]:{port} ")
               else line for line in lines]
    known = tmp_path / "known_hosts"
    known.write_text("\n".join(changed) + "\n")
    result = access.ssh("exec-1", "true", check=False, known_hosts=known)
    assert result.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr
    assert access.ssh("exec-2", "true", check=False, known_hosts=known).returncode == 0

    unknown = tmp_path / "empty_known_hosts"
    unknown.write_text("")
    result = access.ssh("exec-1", "true", check=False, known_hosts=unknown)
    assert result.returncode == 255
    assert "Host key verification failed" in result.stderr


def test_password_login_is_not_offered(access):
    argv = access.ssh_argv("core-1") + ["true"]
    argv[argv.index("BatchMode=yes")] = "PreferredAuthentications=password"
    result = subprocess.run(argv, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert result.returncode == 255
    assert "Permission denied" in result.stderr


def test_every_health_url_answers_over_http(access):
    for host in access.plan.hosts:
        for service in host.services:
            if not service.health_url:
                continue
            health = access.curl_json(service.health_url)
            assert health["status"] == "ok", (host.name, service.name, health)
            assert health["service"] == service.name
            assert health["version"] == "1.4.2"
    engine = access.health("exec-1", "titan-execution")
    for field in ("halted", "state", "positions", "open_orders", "last_order_ts",
                  "secret_fingerprint"):
        assert field in engine
    assert engine["halted"] is False and engine["state"] == "NORMAL"


def test_the_database_is_real_and_seeded(access):
    password = access.env("db-1")["TITAN_DB_PASSWORD"]
    query = ("SELECT (SELECT count(*) FROM positions), (SELECT count(*) FROM orders),"
             " (SELECT count(*) FROM fills), (SELECT count(*) FROM audit_log)")
    result = subprocess.run(["psql", "-X", "-tA", "-F", ",", access.plan.postgres_dsn, "-c", query],
                            capture_output=True, text=True, timeout=20,
                            env={**os.environ, "PGPASSWORD": password})
    assert result.returncode == 0, result.stderr
    positions, orders, fills, audit = map(int, result.stdout.strip().split(","))
    assert positions >= 3 and orders >= 1 and fills >= 1 and audit >= 1
    wrong = subprocess.run(["psql", "-X", "-tA", access.plan.postgres_dsn, "-c", "SELECT 1"],
                           capture_output=True, text=True, timeout=20,
                           env={**os.environ, "PGPASSWORD": "wrong"})
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr


def test_redis_holds_fresh_order_books(access):
    def book():
        out = subprocess.run(["redis-cli", "-p", str(access.plan.redis_port), "GET",
                              "orderbook:BTCUSDT"], capture_output=True, text=True, timeout=5)
        return json.loads(out.stdout) if out.stdout.strip() else None

    first = access.wait_for(book, timeout=5, what="orderbook:BTCUSDT in Redis")
    assert first["bids"] and first["asks"]
    access.wait_for(lambda: book()["ts"] > first["ts"], timeout=5, what="a newer order book")


def test_nats_runs_jetstream_with_the_execution_stream_and_consumer(access):
    jsz = access.curl_json(f"http://127.0.0.1:{access.plan.nats_monitor_port}/jsz?consumers=true")
    streams = {s["name"]: s for account in jsz["account_details"] for s in account["stream_detail"]}
    assert "TITAN_EXECUTION" in streams
    consumers = [c["name"] for c in streams["TITAN_EXECUTION"]["consumer_detail"]]
    assert "execution_group" in consumers


def test_supervisorctl_over_ssh_stops_and_starts_a_service(access):
    url = access.plan.host("core-1").service("titan-console").health_url
    try:
        access.ssh("core-1", "supervisorctl stop titan-console")
        status = access.ssh("core-1", "supervisorctl status titan-console", check=False).stdout
        assert "STOPPED" in status
        refused = subprocess.run(["curl", "-sS", "--max-time", "2", url], capture_output=True)
        assert refused.returncode != 0
    finally:
        access.ssh("core-1", "supervisorctl start titan-console")
    assert "RUNNING" in access.ssh("core-1", "supervisorctl status titan-console").stdout
    access.wait_for(lambda: access.curl_json(url)["status"] == "ok", timeout=10,
                    what="titan-console healthy again")


def test_bad_configuration_makes_a_service_fatal_with_one_clear_line(access):
    """A service missing its HMAC secret exits with one log line; supervisord shows BACKOFF/FATAL."""
    host = "exec-2"
    access.ssh(host, 'cp -p "$TITAN_HOME/.env" "$TITAN_HOME/.env.test-backup" && '
                     'sed -i "/^TITAN_HMAC_SECRET=/d" "$TITAN_HOME/.env"')
    try:
        access.ssh(host, "supervisorctl restart titan-execution", check=False)

        def broken():
            out = access.ssh(host, "supervisorctl status titan-execution", check=False).stdout
            return any(state in out for state in ("BACKOFF", "FATAL"))

        access.wait_for(broken, timeout=15, interval=0.2, what="titan-execution BACKOFF/FATAL")
        assert access.log_has(host, "titan-execution",
                              "FATAL config: missing TITAN_HMAC_SECRET in")
    finally:
        access.ssh(host, 'mv "$TITAN_HOME/.env.test-backup" "$TITAN_HOME/.env"')
        access.ssh(host, "supervisorctl start titan-execution", check=False)
    access.wait_for(lambda: access.health(host, "titan-execution")["status"] == "ok",
                    timeout=20, interval=0.2, what="titan-execution healthy again")
    access.wait_for(lambda: "RUNNING" in access.ssh(host, "supervisorctl status titan-execution",
                                                    check=False).stdout,
                    timeout=10, interval=0.2, what="titan-execution RUNNING again")


def test_status_json_says_how_to_reach_every_piece_and_prints_no_secret(access, fleet):
    result = subprocess.run([sys.executable, "-m", "invoke", "sandbox.status", "--json",
                             "--dir", str(fleet.root)],
                            capture_output=True, text=True, timeout=60,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["running"] is True
    assert status["nats_url"] == access.plan.nats_url
    assert status["postgres_dsn"] == access.plan.postgres_dsn
    for host in access.plan.hosts:
        info = status["hosts"][host.name]
        assert info["ssh_port"] == host.ssh_port
        assert info["titan_home"] == str(host.titan_home)
        for service in host.services:
            assert info["services"][service.name]["state"] == "RUNNING"
            assert info["services"][service.name]["health_url"] == service.health_url
    secrets = [v for k, v in access.env("core-1").items()
               if any(s in k for s in ("SECRET", "PASSWORD", "KEY")) and v]
    assert secrets
    inventory = fleet.inventory.read_text()
    for secret in secrets:
        assert secret not in result.stdout and secret not in inventory
    groups = yaml.safe_load(inventory)["all"]["children"]["sandbox"]["children"]
    assert set(groups) == {"db", "core", "exec"}
