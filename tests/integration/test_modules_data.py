"""postgres and redis against the sandbox fleet's real PostgreSQL and Redis.

Every outcome is read back independently: psql and redis-cli run here with the password taken
from db-1's .env over ssh (in the environment, not argv), and files are checked with stat and
sha256sum over ssh. Round trips that rewrite data (restore) use a scratch database, so the
engines keep trading on `titan` undisturbed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess

import pytest
from helpers import argv_recorded, commands_sent

SCRATCH = "ripcord_scratch"


@pytest.fixture(scope="module")
def db_password(access) -> str:
    return access.env("db-1")["TITAN_DB_PASSWORD"]


@pytest.fixture(scope="module")
def psql(access, db_password):
    """psql(sql, db) -> stdout, as titan over TCP: the same path the engines use."""

    def run(sql: str, db: str = "titan") -> str:
        result = subprocess.run(
            ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(access.plan.postgres_port), "-U", "titan", "-d", db],
            input=sql, capture_output=True, text=True, timeout=30,
            env={**os.environ, "PGPASSWORD": db_password})
        assert result.returncode == 0, result.stderr
        return result.stdout

    return run


@pytest.fixture(scope="module")
def scratch(access, psql):
    """A database owned by titan with one known row, made by the superuser over db-1's socket."""
    superuser = (f"psql -X -q -v ON_ERROR_STOP=1 -h {shlex.quote(str(access.plan.db.run))} "
                 f"-p {access.plan.postgres_port} -d postgres -c ")
    access.ssh("db-1", superuser + shlex.quote(f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)"))
    access.ssh("db-1", superuser + shlex.quote(f"CREATE DATABASE {SCRATCH} OWNER titan"))
    psql("CREATE TABLE kv (k text PRIMARY KEY, v text); INSERT INTO kv VALUES ('btc', 'original');",
         SCRATCH)
    yield SCRATCH
    access.ssh("db-1", superuser + shlex.quote(f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)"))


@pytest.fixture
def backups(access):
    """db-1's backups directory; whatever a test writes there is removed afterwards."""
    directory = f"{access.plan.db.titan_home}/backups"
    before = set(access.ssh("db-1", f"ls -1 {directory} 2>/dev/null", check=False).stdout.split())
    yield directory
    after = set(access.ssh("db-1", f"ls -1 {directory} 2>/dev/null", check=False).stdout.split())
    for name in after - before:
        access.ssh("db-1", f"rm -f {shlex.quote(f'{directory}/{name}')}")


def remote_file(access, path: str) -> tuple[int, str]:
    """(size, sha256) of a file on db-1, by stat and sha256sum over ssh."""
    out = access.ssh("db-1", f"stat -c %s {shlex.quote(path)} && sha256sum {shlex.quote(path)}")
    size, digest = out.stdout.split()[:2]
    return int(size), digest


# --- postgres: query -------------------------------------------------------------------------

def test_query_returns_what_psql_sees_and_changes_nothing(run_module, psql):
    sql = "SELECT host, symbol FROM positions ORDER BY host, symbol"
    first = run_module("postgres", {"sql": sql}, host="db-1")
    again = run_module("postgres", {"sql": sql}, host="db-1")
    assert not first.failed and not first.changed and not again.changed, first.msg
    expected = [dict(zip(("host", "symbol"), line.split("|"), strict=True))
                for line in psql(sql).splitlines()]
    assert first.data["rows"] == expected and first.data["rowcount"] == len(expected) > 0


def test_query_keeps_null_empty_and_awkward_text_apart(run_module):
    result = run_module("postgres", {"sql": "SELECT NULL::text AS n, ''::text AS e, "
                                            "E'a,\"b\"\\nc' AS w, 42 AS i"}, host="exec-1")
    assert result.data["rows"] == [{"n": None, "e": "", "w": 'a,"b"\nc', "i": "42"}]


def test_a_query_not_marked_write_cannot_write(run_module, psql, scratch):
    result = run_module("postgres", {"sql": "UPDATE kv SET v = 'sneaky'", "db": scratch},
                        host="db-1")
    assert result.failed and result.msg == "ERROR: cannot execute UPDATE in a read-only transaction"
    assert psql("SELECT v FROM kv WHERE k = 'btc'", scratch).strip() == "original"


def test_write_query_changes_only_when_rows_are_affected(run_module, psql, scratch):
    args = {"sql": "UPDATE kv SET v = 'written' WHERE k = 'eth'", "write": True, "db": scratch}
    assert not run_module("postgres", args, host="db-1").changed  # no such row
    psql("INSERT INTO kv VALUES ('eth', 'before')", scratch)
    assert run_module("postgres", args, host="db-1", check=True).skipped
    assert psql("SELECT v FROM kv WHERE k = 'eth'", scratch).strip() == "before"
    result = run_module("postgres", args, host="db-1")
    assert result.changed and result.data["rowcount"] == 1
    assert psql("SELECT v FROM kv WHERE k = 'eth'", scratch).strip() == "written"
    psql("DELETE FROM kv WHERE k = 'eth'", scratch)


def test_query_errors_are_one_clear_line(run_module):
    result = run_module("postgres", {"sql": "SELECT * FROM no_such_table"}, host="db-1")
    assert result.failed and result.msg == 'ERROR: relation "no_such_table" does not exist'
    result = run_module("postgres", {"sql": "SELECT 1", "password_key": "NO_SUCH_KEY"}, host="db-1")
    assert result.failed and result.msg.startswith("cannot read NO_SUCH_KEY from ")


# --- postgres: dump and restore --------------------------------------------------------------

def test_dump_defaults_to_a_timestamped_file_under_titan_home(run_module, access, backups):
    result = run_module("postgres", {"action": "dump"}, host="db-1")
    assert result.changed and not result.failed, result.msg
    path = result.data["path"]
    assert re.fullmatch(re.escape(backups) + r"/titan-\d{8}T\d{6}Z\.sql", path), path
    assert remote_file(access, path) == (result.data["size"], result.data["sha256"])
    access.ssh("db-1", f"grep -q 'CREATE TABLE public.positions' {shlex.quote(path)}")
    assert access.ssh("db-1", f"test -e {shlex.quote(path)}.partial", check=False).returncode != 0


@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_restore_brings_back_what_was_dumped(run_module, access, psql, scratch, backups, fmt):
    dest = f"{backups}/ripcord-test-{fmt}.dump"
    dump = run_module("postgres", {"action": "dump", "db": scratch, "dest": dest, "format": fmt},
                      host="db-1")
    assert dump.changed and dump.data["path"] == dest, dump.msg
    assert remote_file(access, dest) == (dump.data["size"], dump.data["sha256"])

    psql("UPDATE kv SET v = 'tampered' WHERE k = 'btc'", scratch)
    assert run_module("postgres", {"action": "restore", "src": dest, "db": scratch},
                      host="db-1", check=True).skipped
    assert psql("SELECT v FROM kv WHERE k = 'btc'", scratch).strip() == "tampered"

    restore = run_module("postgres", {"action": "restore", "src": dest, "db": scratch}, host="db-1")
    assert restore.changed and not restore.failed and restore.data["format"] == fmt, restore.msg
    assert psql("SELECT v FROM kv WHERE k = 'btc'", scratch).strip() == "original"


def test_dump_in_check_mode_writes_no_file(run_module, access, backups):
    dest = f"{backups}/ripcord-test-check.sql"
    result = run_module("postgres", {"action": "dump", "dest": dest}, host="db-1", check=True)
    assert result.skipped and result.msg == "skipped in check mode"
    assert access.ssh("db-1", f"test -e {shlex.quote(dest)}", check=False).returncode != 0


def test_restore_of_a_missing_file_fails_clearly(run_module):
    result = run_module("postgres", {"action": "restore", "src": "/nonexistent/dump.sql"},
                        host="db-1")
    assert result.failed and result.msg == "cannot read /nonexistent/dump.sql"


def test_the_password_is_in_no_result_and_no_command_line(run_module, access, db_password, scratch,
                                                         backups, monkeypatch):
    """Read where it cannot be missed: every command ripcord sends, and the argv the database
    clients themselves record on db-1 (the password is expanded on the host, if anywhere)."""
    sent = commands_sent(monkeypatch)
    with argv_recorded(access.plan.db, "psql", "pg_dump", "pg_restore") as recorded:
        results = [
            run_module("postgres", {"sql": "SELECT current_user"}, host="db-1"),
            run_module("postgres", {"action": "dump", "db": scratch, "format": "custom",
                                    "dest": f"{backups}/ripcord-test-argv.dump"}, host="db-1"),
            run_module("postgres", {"action": "restore", "db": scratch,
                                    "src": f"{backups}/ripcord-test-argv.dump"}, host="db-1"),
        ]
        argvs = recorded()
    assert all(not r.failed for r in results), [r.msg for r in results]
    assert {argv[0].rsplit("/", 1)[-1] for argv in argvs} == {"psql", "pg_dump", "pg_restore"}, argvs
    assert sent and not any(db_password in command for command in sent)
    assert not any(db_password in word for argv in argvs for word in argv)
    for result in results:
        assert db_password not in json.dumps(result.registered())


# --- redis ------------------------------------------------------------------------------------

@pytest.fixture
def redis_cli(access):
    def run(*words: str) -> str:
        return subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(access.plan.redis_port),
                               *words], capture_output=True, text=True, check=True).stdout.strip()

    yield run
    run("DEL", "ripcord:test")


def test_set_and_get_round_trip_through_redis_cli(run_module, redis_cli):
    result = run_module("redis", {"command": ["SET", "ripcord:test", "a value; $(not run)"]},
                        host="db-1")
    assert result.changed and result.data["reply"] == "OK"
    assert redis_cli("GET", "ripcord:test") == "a value; $(not run)"

    redis_cli("SET", "ripcord:test", "from redis-cli")
    result = run_module("redis", {"command": ["GET", "ripcord:test"]}, host="exec-1")
    assert not result.changed and result.data["reply"] == "from redis-cli"


def test_check_mode_skips_writes_and_still_reads(run_module, redis_cli):
    redis_cli("SET", "ripcord:test", "kept")
    result = run_module("redis", {"command": ["SET", "ripcord:test", "lost"]}, host="db-1",
                        check=True)
    assert result.skipped and redis_cli("GET", "ripcord:test") == "kept"
    read = run_module("redis", {"command": ["GET", "ripcord:test"]}, host="db-1", check=True)
    assert not read.skipped and read.data["reply"] == "kept"


def test_del_is_idempotent_and_replies_keep_their_types(run_module, redis_cli):
    redis_cli("SET", "ripcord:test", "x")
    assert run_module("redis", {"command": ["DEL", "ripcord:test"]}, host="db-1").changed
    again = run_module("redis", {"command": ["DEL", "ripcord:test"]}, host="db-1")
    assert not again.changed and again.data["reply"] == 0
    assert redis_cli("EXISTS", "ripcord:test") == "0"
    book = run_module("redis", {"command": ["GET", "orderbook:BTCUSDT"]}, host="core-1")
    assert json.loads(book.data["reply"])["symbol"] == "BTCUSDT"
    missing = run_module("redis", {"command": ["GET", "ripcord:test"]}, host="db-1")
    assert missing.data["reply"] is None and not missing.failed


def test_redis_errors_fail_clearly(run_module, access):
    result = run_module("redis", {"command": ["INCR", "orderbook:BTCUSDT"]}, host="db-1")
    assert result.failed and result.msg == "INCR: ERR value is not an integer or out of range"
    closed = access.plan.base_port + 98
    result = run_module("redis", {"command": ["PING"], "url": f"redis://127.0.0.1:{closed}/0"},
                        host="db-1")
    assert result.failed and "Connection refused" in result.msg
