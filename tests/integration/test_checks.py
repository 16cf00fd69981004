"""checks/ against the sandbox fleet: each check passes on a healthy fleet, fails on the host
where what it checks was broken (broken by hand, over the system ssh client), with a message an
operator understands, and passes again once repaired.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time

import pytest
from helpers import suite_port

from ripcord.templating import Templar
from ripcord.verify import CheckReport, run_checks

HOSTS = ("db-1", "core-1", "exec-1", "exec-2")
CLOSED_PORT = suite_port(7)  # inside this suite's port range, and nothing listens there
HOME = '"$TITAN_HOME"'


@pytest.fixture(scope="module")
def base_vars(fleet, inventory) -> dict[str, dict]:
    return {h: Templar().render(inventory.host_vars(h), inventory.host_vars(h)) for h in HOSTS}


@pytest.fixture(scope="module")
def check(base_vars, connect):
    """check(select, hosts, **vars) -> CheckReport: run checks on some hosts, with extra vars.
    A marker expression leaves the situational checks out: the fleet here is a healthy one."""
    def run(select: str, hosts: tuple[str, ...] = HOSTS, retry_s: float | None = None,
            **extra) -> CheckReport:
        if "::" not in select:
            select = f"({select}) and not situational"
        hostvars = {h: {**base_vars[h], **extra} for h in hosts}
        return run_checks(select, {h: connect(h) for h in hosts}, hostvars, retry_s=retry_s)
    return run


def passed(report: CheckReport, host: str | None = None) -> None:
    """Nothing failed, and something actually ran (on host, if given)."""
    assert not report.failed, [(r.host, r.id, r.message) for r in report.failed]
    ran = [r for r in report.results if r.outcome == "passed" and host in (None, r.host)]
    assert ran, f"no check passed on {host or 'any host'}: {report.results}"


def failed(report: CheckReport, host: str, check_id: str, *texts: str, alone: bool = True) -> str:
    """check_id failed on host (and, if alone, only there) with a message containing each text."""
    result = next((r for r in report.results if r.host == host and r.id.endswith(check_id)), None)
    assert result is not None, f"{check_id} did not run on {host}: {report.results}"
    assert result.outcome == "failed", f"{check_id} {result.outcome} on {host}: {result.message}"
    for text in texts:
        assert text in result.message, f"{text!r} not in {result.message!r}"
    others = [r for r in report.failed if alone and r.host != host and r.id.endswith(check_id)]
    assert not others, f"{check_id} also failed elsewhere: {[(r.host, r.message) for r in others]}"
    return result.message


def test_healthy_fleet_passes_every_check(check):
    """Every check but the situational ones (which want a procedure's outcome: a halted engine,
    stopped strategies, a flat account) passes on a healthy fleet, and each concern ran somewhere."""
    report = check("not situational", check_load_max_per_core=1000.0)  # the machine's load: not ours
    passed(report)
    ran = {r.id.split("::")[0] for r in report.results if r.outcome == "passed"}
    assert ran >= {f"test_{c}.py" for c in ("supervisor", "ports", "resources", "logs", "database",
                                           "bus", "exchange", "drift", "clock", "backups",
                                           "security", "market_data", "health")}, ran


# --- supervisor, ports --------------------------------------------------------------------

def test_stopped_service_fails_supervisor_ports_and_health(access, check):
    select = "supervisor or ports or health"
    port = access.plan.host("exec-2").service("titan-sentinel").port
    passed(check(select), "exec-2")
    access.ssh("exec-2", "supervisorctl stop titan-sentinel")
    try:
        report = check(select)
        failed(report, "exec-2", "test_every_service_is_running",
               "not RUNNING on exec-2", "titan-sentinel (STOPPED)")
        failed(report, "exec-2", "test_service_ports_are_listening",
               f"titan-sentinel (port {port})")
        message = failed(report, "exec-2", "test_every_service_is_healthy",
                         "unhealthy on exec-2: titan-sentinel (no answer)")
        assert "titan-execution" not in message  # one fetch for all: the others still answer
    finally:
        access.ssh("exec-2", "supervisorctl start titan-sentinel")
    access.wait_for(lambda: access.health("exec-2", "titan-sentinel")["status"] == "ok",
                    what="titan-sentinel healthy again")
    passed(check(select, ("exec-2",)), "exec-2")


def test_supervisord_not_answering(access, check):
    """No unix socket in the config, or none at its path: supervisord does not answer, said once."""
    failed(check("supervisor", ("exec-1",), supervisor_config="/nonexistent/supervisord.conf"),
           "exec-1", "test_every_service_is_running", "supervisord does not answer on exec-1",
           "no serverurl=unix://... in /nonexistent/supervisord.conf")
    conf = "$TITAN_HOME/state/ripcord-check-test.conf"
    access.ssh("exec-1", f"printf '[supervisorctl]\\nserverurl=unix:///nonexistent.sock\\n' > {conf}")
    try:
        path = access.ssh("exec-1", f"echo {conf}").stdout.strip()
        failed(check("supervisor", ("exec-1",), supervisor_config=path), "exec-1",
               "test_every_service_is_running", "supervisord does not answer on exec-1",
               "no socket at /nonexistent.sock")
    finally:
        access.ssh("exec-1", f"rm -f {conf}")


def test_data_service_ports_are_checked_on_db(check):
    """The db host's PostgreSQL/Redis/NATS ports are among what is checked: a wrong port fails."""
    report = check("ports", ("db-1",), postgres_port=CLOSED_PORT)
    failed(report, "db-1", "test_service_ports_are_listening", f"postgresql (port {CLOSED_PORT})")


# --- resources ----------------------------------------------------------------------------

def test_resource_thresholds(access, check):
    """Limits just above the values read by hand pass; limits at or below them fail, naming
    the value: the checks read the same numbers an operator does."""
    disk = int(access.ssh("exec-1", f"df -P {HOME} | tail -n 1").stdout.split()[4].rstrip("%"))
    generous = dict(check_disk_max_percent=disk + 1, check_memory_max_percent=100,
                    check_load_max_per_core=1000)  # a shared test machine's load is not ours
    passed(check("resources", ("exec-1",), **generous), "exec-1")
    report = check("resources", ("exec-1",), check_disk_max_percent=disk,
                   check_memory_max_percent=0.01, check_load_max_per_core=0.0)
    failed(report, "exec-1", "test_disk_use_of_titan_home", f"disk {disk}% full on exec-1",
           f"the limit is {disk}%")
    failed(report, "exec-1", "test_memory_use", "memory", "used on exec-1")
    failed(report, "exec-1", "test_load_per_core", "per core on exec-1")


# --- logs ---------------------------------------------------------------------------------

def _append_errors(access, host: str, service: str, count: int, age_s: float = 0) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - age_s))
    line = f"{stamp} ERROR {service}: ripcord-check-test injected error"
    log = f"{HOME}/logs/{service}.log"
    access.ssh(host, f"for i in $(seq {count}); do echo {shlex.quote(line)} >> {log}; done")


def _drop_test_lines(access, host: str, service: str, marker: str) -> None:
    """Remove our lines in place (same inode: supervisord keeps appending to it)."""
    log = f"{HOME}/logs/{service}.log"
    access.ssh(host, f"grep -v -F {shlex.quote(marker)} {log} > /tmp/ripcord-log.$$; "
                     f"cat /tmp/ripcord-log.$$ > {log}; rm -f /tmp/ripcord-log.$$")


def test_error_lines_in_the_last_minute(access, check):
    select = "logs"
    service = "titan-scavenger"
    try:
        _append_errors(access, "exec-2", service, 20, age_s=300)  # old errors do not count
        _append_errors(access, "exec-2", service, 4)  # below the default limit of 5
        passed(check(select, ("exec-2",)), "exec-2")
        _append_errors(access, "exec-2", service, 1)
        failed(check(select, ("exec-2",)), "exec-2", "test_few_errors_in_the_last_minute",
               "too many errors in the last minute on exec-2 (limit 5)",
               f"{service}.log 5 ERROR lines")
        passed(check(select, ("exec-2",), check_errors_per_minute_max=6), "exec-2")
    finally:
        _drop_test_lines(access, "exec-2", service, "ripcord-check-test")
    passed(check(select, ("exec-2",)), "exec-2")


def test_missing_start_line(access, check):
    select = "logs"
    passed(check(select, ("exec-2",)), "exec-2")
    access.ssh("exec-2", f": > {HOME}/logs/titan-hunter.log")  # in place, as logrotate copytruncate
    try:
        failed(check(select, ("exec-2",)), "exec-2", "test_services_logged_their_start",
               "no start line on exec-2", "titan-hunter.log ('Starting titan-hunter')")
    finally:
        access.ssh("exec-2", "supervisorctl restart titan-hunter")
    passed(check(select, ("exec-2",), retry_s=10), "exec-2")


# --- database -----------------------------------------------------------------------------

def _sql(access, sql: str) -> str:
    """SQL as the services' role, from here: the password goes in the environment, not argv."""
    password = access.env("db-1")["TITAN_DB_PASSWORD"]
    result = subprocess.run(["psql", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                             "-p", str(access.plan.postgres_port), "-U", "titan", "-d", "titan",
                             "-c", sql], capture_output=True, text=True, timeout=30,
                            env={**os.environ, "PGPASSWORD": password})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_database_invariants(access, check):
    password = access.env("db-1")["TITAN_DB_PASSWORD"]
    hosts = ("db-1", "exec-1", "exec-2")
    passed(check("database", hosts), "exec-1")
    try:
        _sql(access, "INSERT INTO orders (client_order_id, host, symbol, side, type, qty, status)"
                     " VALUES ('ripcord-check-test-1', 'exec-1', 'BTCUSDT', 'BUY', 'LIMIT', 1, 'BOGUS'),"
                     " ('ripcord-check-test-2', 'exec-1', 'BTCUSDT', 'BUY', 'LIMIT', 1, 'FILLED')")
        report = check("database", hosts)
        failed(report, "exec-1", "test_row_invariants", "database invariants broken (exec-1's",
               "1 orders with a status outside NEW/FILLED/CANCELED/REJECTED",
               "1 FILLED orders without a fill", alone=False)
        failed(report, "db-1", "test_row_invariants", "(all hosts)", alone=False)
        assert not any(password in r.message for r in report.results)
        # exec-2's own rows are fine: the exec hosts check their own engine's rows only
        exec2 = [r for r in report.results if r.host == "exec-2"]
        assert exec2 and all(r.outcome == "passed" for r in exec2), exec2
    finally:
        _sql(access, "DELETE FROM orders WHERE client_order_id LIKE 'ripcord-check-test-%'")
    passed(check("database", hosts), "exec-1")


def test_database_unreachable(access, check):
    password = access.env("db-1")["TITAN_DB_PASSWORD"]
    report = check("database", ("exec-1",),
                   postgres_port=CLOSED_PORT)
    message = failed(report, "exec-1", "test_database_is_reachable",
                     f"PostgreSQL at 127.0.0.1:{CLOSED_PORT} not reachable from exec-1")
    assert password not in message


# --- bus ------------------------------------------------------------------------------------

def test_bus(check):
    passed(check("bus", ("db-1",)), "db-1")
    report = check("bus", ("db-1",), check_nats_consumer="no_such_group")
    failed(report, "db-1", "test_execution_stream_and_consumer",
           "durable consumer no_such_group missing on stream TITAN_EXECUTION on db-1",
           "execution_group")
    report = check("bus", ("db-1",), check_nats_stream="NO_SUCH_STREAM")
    failed(report, "db-1", "test_execution_stream_and_consumer",
           "JetStream stream NO_SUCH_STREAM missing on db-1", "TITAN_EXECUTION")
    report = check("bus", ("db-1",), nats_monitor_url=f"http://127.0.0.1:{CLOSED_PORT}")
    failed(report, "db-1", "test_nats_is_healthy", "NATS monitoring does not answer on db-1")


# --- exchange ---------------------------------------------------------------------------------

def test_exchange_auth_and_reach(access, check):
    key = access.env("exec-1")["EXCHANGE_API_KEY"]
    passed(check("exchange", ("core-1", "exec-1")), "exec-1")
    bad_env = "$TITAN_HOME/state/ripcord-check-test.env"
    access.ssh("exec-1", f"umask 077; sed 's/^EXCHANGE_API_KEY=.*/EXCHANGE_API_KEY=not-a-key/' "
                         f"{HOME}/.env > {bad_env}")
    try:
        path = access.ssh("exec-1", f"echo {bad_env}").stdout.strip()
        report = check("exchange", ("exec-1",), env_file=path)
        message = failed(report, "exec-1", "test_api_key_is_accepted",
                         "the exchange refuses exec-1's EXCHANGE_API_KEY", "HTTP 401")
        assert key not in message
    finally:
        access.ssh("exec-1", f"rm -f {bad_env}")
    report = check("exchange", ("exec-1",), exchange_url=f"http://127.0.0.1:{CLOSED_PORT}")
    failed(report, "exec-1", "test_exchange_is_reachable",
           f"exchange http://127.0.0.1:{CLOSED_PORT} not reachable from exec-1")


# --- drift, security ----------------------------------------------------------------------------

def test_release_drift(check):
    passed(check("drift", ("exec-1",)), "exec-1")
    failed(check("drift", ("exec-1",), titan_version="9.9.9"), "exec-1",
           "test_current_release_is_the_inventory_version",
           "current on exec-1 points at releases/1.4.2, not releases/9.9.9")


def test_env_missing_key(access, check):
    partial = "$TITAN_HOME/state/ripcord-check-test.env"
    access.ssh("exec-1", f"umask 077; grep -v '^TITAN_HALT_FILE=' {HOME}/.env > {partial}")
    try:
        path = access.ssh("exec-1", f"echo {partial}").stdout.strip()
        failed(check("drift", ("exec-1",), env_file=path), "exec-1", "test_env_has_required_keys",
               "lacks (or has empty) TITAN_HALT_FILE")
    finally:
        access.ssh("exec-1", f"rm -f {partial}")


def test_env_mode(access, check):
    passed(check("security or drift", ("exec-2",)), "exec-2")
    access.ssh("exec-2", f"chmod 644 {HOME}/.env")
    try:
        report = check("security or drift", ("exec-2",))
        failed(report, "exec-2", "test_env_is_private", ".env on exec-2: mode 644, not 600")
        failed(report, "exec-2", "test_env_mode_is_600", "has mode 644, not 600")
    finally:
        access.ssh("exec-2", f"chmod 600 {HOME}/.env")
    passed(check("security or drift", ("exec-2",)), "exec-2")


def test_private_key_readable(access, check):
    select = "security"
    key = "$TITAN_HOME/state/id_ed25519"
    access.ssh("exec-1", f"ssh-keygen -q -t ed25519 -N '' -f {key} && chmod 644 {key}")
    try:
        failed(check(select, ("exec-1",)), "exec-1", "test_private_keys_are_private",
               "private keys readable by group/others on exec-1", "state/id_ed25519 (mode 644)")
        access.ssh("exec-1", f"chmod 600 {key}")
        passed(check(select, ("exec-1",)), "exec-1")
    finally:
        access.ssh("exec-1", f"rm -f {key} {key}.pub")


def test_secret_in_a_log(access, check):
    select = "security"
    secret = access.env("exec-1")["TITAN_HMAC_SECRET"]
    passed(check(select, ("exec-1",)), "exec-1")
    log = f"{HOME}/logs/titan-hunter.log"
    access.ssh("exec-1", f'. {HOME}/.env; printf "%s ripcord-check-test leaked %s\\n" '
                         f'"$(date -u +%Y-%m-%dT%H:%M:%S.000Z)" "$TITAN_HMAC_SECRET" >> {log}')
    try:
        message = failed(check(select, ("exec-1",)), "exec-1", "test_no_secret_in_logs",
                         "secrets in logs on exec-1", "TITAN_HMAC_SECRET in ",
                         "logs/titan-hunter.log")
        assert secret not in message
        assert "EXCHANGE_API_KEY" not in message
    finally:
        _drop_test_lines(access, "exec-1", "titan-hunter", "ripcord-check-test")
    passed(check(select, ("exec-1",)), "exec-1")


# --- certificates, clock, backups, market data ------------------------------------------------------

def test_certificate_expiry(access, check):
    tls = "$TITAN_HOME/state/ripcord-check-tls"
    access.ssh("exec-1", f"umask 077; mkdir -p {tls} && cd {tls} && for d in 5 90; do "
                         "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=exec-1 -days $d "
                         "-keyout days$d.key -out days$d.pem 2>/dev/null || exit 1; done")
    try:
        folder = access.ssh("exec-1", f"echo {tls}").stdout.strip()
        short, long_ = f"{folder}/days5.pem", f"{folder}/days90.pem"
        passed(check("certificates", ("exec-1",), tls_certificates=[long_]), "exec-1")
        report = check("certificates", ("exec-1",), tls_certificates=[long_, short])
        message = failed(report, "exec-1", "test_certificates_valid_long_enough",
                         "certificates on exec-1 not valid for 30 more days", f"{short} expires")
        assert long_ not in message
        failed(check("certificates", ("exec-1",), tls_certificates=[f"{folder}/missing.pem"]),
               "exec-1", "test_certificates_valid_long_enough", "missing.pem unreadable")
        passed(check("certificates", ("exec-1",), tls_certificates=[short], check_cert_min_days=4),
               "exec-1")
    finally:
        access.ssh("exec-1", f"rm -rf {tls}")


def test_clock_skew(access, check):
    shim = access.plan.host("exec-2").bin / "date"
    passed(check("clock", ("exec-2",)), "exec-2")
    shim.write_text('#!/bin/sh\nt=$(/usr/bin/date +%s)\nexec /usr/bin/date -d "@$((t + 5))" "$@"\n')
    shim.chmod(0o755)
    try:
        failed(check("clock", ("exec-2",)), "exec-2", "test_clock_matches_exchange",
               "clock on exec-2 is", "ahead of the exchange's", "the limit is 1s")
    finally:
        shim.unlink()
    passed(check("clock", ("exec-2",)), "exec-2")


def test_backups(access, check):
    """The newest manifest-backed backup (ripcord/modules/backup.py): its age by the manifest,
    its dump by its sha256; a backup without a manifest does not count."""
    backups, aside = f"{HOME}/backups", f"{HOME}/state/ripcord-check-backups"
    name = "test_newest_backup_is_recent_intact_and_complete"
    passed(check("backups", ("db-1",)), "db-1")
    newest = access.ssh("db-1", f"ls -t {backups}/*.manifest.json | head -n 1").stdout.strip()
    assert newest, "sandbox.up left no backup with a manifest on db-1"
    dump = newest.removesuffix(".manifest.json") + ".dump"
    try:
        access.ssh("db-1", f"mkdir -p {aside} && cp -p {backups}/* {aside}/")  # all put back after
        old = access.ssh("db-1", "date -u -d '30 hours ago' +%Y-%m-%dT%H:%M:%SZ").stdout.strip()
        access.ssh("db-1", f"sed -i 's/\"created\": \"[^\"]*\"/\"created\": \"{old}\"/' {newest}")
        failed(check("backups", ("db-1",)), "db-1", name, "is 30.0 h old", "the limit is 24 h")
        access.ssh("db-1", f"cp -p {aside}/{newest.rsplit('/', 1)[1]} {newest} && : > {dump}")
        failed(check("backups", ("db-1",)), "db-1", name, "does not match its manifest's sha256")
        access.ssh("db-1", f"rm -f {backups}/*.manifest.json && : > {backups}/titan-plain.sql")
        failed(check("backups", ("db-1",)), "db-1", name, "no backup with a manifest in", "backups on db-1")
    finally:
        access.ssh("db-1", f"if [ -d {aside} ]; then rm -f {backups}/* && cp -p {aside}/* {backups}/ "
                           f"&& rm -rf {aside}; fi")
    passed(check("backups", ("db-1",)), "db-1")


def test_stale_market_data(access, check):
    select = "scenario03"
    fault = f"{HOME}/state/faults/stale_prices"
    passed(check(select, ("core-1",)), "core-1")
    access.ssh("core-1", f"touch {fault}")

    def stale() -> bool:  # every book in Redis older than the check's 2 s limit, read by hand
        ages = []
        for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
            book = subprocess.run(["redis-cli", "-p", str(access.plan.redis_port), "GET",
                                   f"orderbook:{symbol}"], capture_output=True, text=True, timeout=5)
            ages.append(time.time() - float(json.loads(book.stdout)["ts"]))
        return min(ages) > 2.5

    try:
        access.wait_for(stale, timeout=15, interval=0.2, what="every order book stale")
        failed(check(select, ("core-1",)), "core-1", "test_order_books_are_fresh",
               "stale market data on core-1 (limit 2s)", "BTCUSDT", "s old")
    finally:
        access.ssh("core-1", f"rm -f {fault}")
    access.wait_for(lambda: access.health("core-1", "titan-market-data")["status"] == "ok",
                    timeout=15, what="market data fresh again")
    passed(check(select, ("core-1",), retry_s=5), "core-1")


# --- selection --------------------------------------------------------------------------------

def test_selection_by_marker(check):
    report = check("security", ("exec-1",))
    assert {r.id.split("::")[0] for r in report.results} == {"test_security.py", "test_secrets.py"}
    report = check("scenario16", HOSTS)
    assert {r.id for r in report.results} == {
        "test_backups.py::test_newest_backup_is_recent_intact_and_complete"}


def test_selection_by_node_id(check):
    report = check("test_clock.py::test_clock_matches_exchange", ("exec-1", "exec-2"))
    assert [(r.host, r.id) for r in report.results] == [
        ("exec-1", "test_clock.py::test_clock_matches_exchange"),
        ("exec-2", "test_clock.py::test_clock_matches_exchange")]
