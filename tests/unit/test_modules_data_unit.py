"""The data-plane modules without servers: parsing, command building, check mode, secret handling.

A fake connection records every command line; the tests assert what reaches a host's argv
(never a secret, SQL only on stdin) and that --check sends nothing that could change anything.
"""

from __future__ import annotations

import asyncio
import shlex
import socket
import time

import pytest

from ripcord import bus
from ripcord.connection import CommandResult
from ripcord.dotenv import parse as parse_env
from ripcord.errors import UnreachableError
from ripcord.modules import REGISTRY, TaskContext
from ripcord.modules.bus import EnvFileError, env_secret
from ripcord.modules.data import parse_psql, redis_verb
from ripcord.templating import Secrets, Templar

SECRET = "5e5ame-hmac-secret-value"
HOME = "/srv/titan home"  # a space: every path must be quoted
VARS = {"titan_home": HOME, "env_file": f"{HOME}/.env",  # resolved, as the runner hands vars over
        "nats_url": "nats://127.0.0.1:1",
        "postgres_host": "127.0.0.1", "postgres_port": 5432, "postgres_db": "titan",
        "postgres_user": "titan", "redis_url": "redis://127.0.0.1:6379/2"}


class FakeConn:
    """Records commands; answers with canned output; serves one .env file."""

    def __init__(self, stdout: str = "", rc: int = 0, stderr: str = ""):
        self.commands: list[tuple[str, str | None]] = []
        self.reads: list[str] = []
        self.answer = CommandResult(rc, stdout, stderr)

    def run(self, command: str, *, timeout=None, stdin=None) -> CommandResult:
        if command.startswith("cat -- "):  # the env file, as a host's cat serves it
            path = shlex.split(command)[2]
            self.reads.append(path)
            if path != f"{HOME}/.env":
                return CommandResult(1, "", f"cat: {path}: No such file or directory\n")
            return CommandResult(0, f"# comment\nTITAN_HMAC_SECRET='{SECRET}'\nexport OTHER=x\n",
                                 "")
        self.commands.append((command, stdin))
        return self.answer


def run(name: str, args: dict, conn: FakeConn | None = None, check: bool = False):
    module = REGISTRY[name]
    assert not module.check_args(args), module.check_args(args)
    secrets = Secrets()
    ctx = TaskContext(host="h", vars=VARS, conn=conn or FakeConn(), check=check,
                      templar=Templar(secrets), secrets=secrets)
    return module().run(ctx, module.with_defaults(args)), ctx


# --- postgres -------------------------------------------------------------------------------

def test_psql_csv_is_parsed_with_null_distinct_from_empty():
    rows, count = parse_psql('n,e,w\n\\N,,"a,""b""\nc"\n1\n')
    assert rows == [{"n": None, "e": "", "w": 'a,"b"\nc'}] and count == 1
    assert parse_psql("3\n") == ([], 3)  # an UPDATE: no rows, three affected
    assert parse_psql(":ROW_COUNT\n") == ([], 0)  # nothing ran


def test_query_sends_sql_on_stdin_in_a_read_only_transaction():
    conn = FakeConn("host,qty\nexec-1,0.5\n1\n")
    result, _ = run("postgres", {"sql": "select host, qty from positions"}, conn)
    assert (result.changed, result.data["rows"]) == (False, [{"host": "exec-1", "qty": "0.5"}])
    command, stdin = conn.commands[0]
    assert stdin == "select host, qty from positions" and "positions" not in command
    assert "'SET TRANSACTION READ ONLY'" in command
    assert "'/srv/titan home/.env'" in command  # rendered and quoted
    assert '"$TITAN_DB_PASSWORD"' in command  # expanded on the host, never a value


def test_write_query_is_changed_only_when_rows_were_affected():
    assert run("postgres", {"sql": "update t set a=1", "write": True}, FakeConn("2\n"))[0].changed
    assert not run("postgres", {"sql": "update t set a=1", "write": True}, FakeConn("0\n"))[0].changed
    conn = FakeConn("2\n")
    run("postgres", {"sql": "update t set a=1", "write": True}, conn)
    assert "READ ONLY" not in conn.commands[0][0]


@pytest.mark.parametrize("args", [
    {"sql": "update t set a=1", "write": True},
    {"action": "dump"},
    {"action": "restore", "src": "/x.sql"},
])
def test_check_mode_runs_nothing_that_writes(args):
    conn = FakeConn()
    result, _ = run("postgres", args, conn, check=True)
    assert result.skipped and result.msg == "skipped in check mode" and conn.commands == []


def test_check_mode_still_runs_reads():
    conn = FakeConn("x\n1\n1\n")
    result, _ = run("postgres", {"sql": "select 1 as x"}, conn, check=True)
    assert not result.skipped and result.data["rows"] == [{"x": "1"}]


def test_dump_defaults_under_titan_home_and_reports_size_and_digest():
    conn = FakeConn("1234\nabcd  -\n")
    result, _ = run("postgres", {"action": "dump", "format": "custom"}, conn)
    assert result.changed and result.data["size"] == 1234 and result.data["sha256"] == "abcd"
    assert result.data["path"].startswith(f"{HOME}/backups/titan-")
    assert result.data["path"].endswith("Z.dump")
    assert "--format=custom" in conn.commands[0][0] and ".partial" in conn.commands[0][0]


def test_bad_password_key_and_missing_arguments_are_refused_before_running():
    assert REGISTRY["postgres"].check_args({"sql": "select 1", "password_key": "X; rm -rf /"})
    assert REGISTRY["postgres"].check_args({"action": "restore"})
    assert REGISTRY["postgres"].check_args({"action": "query"})


def test_failure_message_is_psqls_error_in_one_line():
    conn = FakeConn(rc=3, stderr='psql:<stdin>:1: ERROR:  relation "x" does not exist\nLINE 1: ...')
    result, _ = run("postgres", {"sql": "select * from x"}, conn)
    assert result.failed and result.msg == 'ERROR: relation "x" does not exist'


# --- redis ----------------------------------------------------------------------------------

@pytest.mark.parametrize("command, writes", [
    (["GET", "k"], False), (["get", "k"], False), (["HGETALL", "h"], False),
    (["CONFIG", "GET", "maxmemory"], False), (["CONFIG", "SET", "maxmemory", "1"], True),
    (["SET", "k", "v"], True), (["FLUSHDB"], True), (["SOMENEWCOMMAND"], True),
])
def test_unknown_and_write_commands_count_as_writes(command, writes):
    assert redis_verb(command)[1] is writes


def test_redis_reply_is_json_typed_and_del_of_nothing_is_unchanged():
    conn = FakeConn("0\n")
    result, _ = run("redis", {"command": ["DEL", "k"]}, conn)
    assert (result.changed, result.data["reply"]) == (False, 0)
    assert "-n 2 --json DEL k" in conn.commands[0][0]
    assert run("redis", {"command": ["DEL", "k"]}, FakeConn("1\n"))[0].changed
    assert run("redis", {"command": ["SET", "k", "v"]}, FakeConn('"OK"\n'))[0].changed


def test_redis_error_reply_fails_and_check_mode_skips_writes():
    result, _ = run("redis", {"command": ["INCR", "k"]}, FakeConn('error:"ERR not an integer"\n'))
    assert result.failed and result.msg == "INCR: ERR not an integer"
    conn = FakeConn()
    assert run("redis", {"command": ["SET", "k", "v"]}, conn, check=True)[0].skipped
    assert conn.commands == []


def test_redis_password_in_url_is_refused_and_from_env_file_stays_on_host():
    conn = FakeConn()
    result, _ = run("redis", {"command": ["PING"], "url": "redis://:hunter22@h:6379/0"}, conn)
    assert result.failed and "hunter22" not in result.msg and conn.commands == []
    run("redis", {"command": ["PING"], "password_key": "REDIS_PASSWORD"}, conn)
    assert '"$REDIS_PASSWORD"' in conn.commands[0][0] and "REDISCLI_AUTH" in conn.commands[0][0]


# --- nats and jetstream -----------------------------------------------------------------------

def test_the_signing_secret_is_read_on_the_host_and_registered_for_redaction():
    conn = FakeConn()
    secrets = Secrets()
    ctx = TaskContext(host="h", vars=VARS, conn=conn, templar=Templar(secrets), secrets=secrets)
    assert env_secret(ctx, "TITAN_HMAC_SECRET") == SECRET
    assert conn.reads == [f"{HOME}/.env"] and conn.commands == []  # only the quoted cat
    assert secrets.redact(f"x{SECRET}x") == "x********x"
    with pytest.raises(EnvFileError, match="MISSING is not set in /srv/titan home/.env"):
        env_secret(ctx, "MISSING")
    elsewhere = TaskContext(host="h", vars={**VARS, "env_file": "/nowhere/.env"}, conn=conn,
                            templar=Templar(secrets), secrets=secrets)
    with pytest.raises(EnvFileError, match="cannot read /nowhere/.env: No such file or directory"):
        env_secret(elsewhere, "TITAN_HMAC_SECRET")


def test_a_lost_connection_while_reading_the_secret_is_unreachable():
    class Dead(FakeConn):
        def run(self, command, *, timeout=None, stdin=None):
            raise UnreachableError("h: connection lost: SSH session not active")

    secrets = Secrets()
    ctx = TaskContext(host="h", vars=VARS, conn=Dead(), templar=Templar(secrets), secrets=secrets)
    with pytest.raises(UnreachableError, match="h: connection lost"):
        run("nats", {"subject": "s"}, Dead())
    with pytest.raises(UnreachableError):
        env_secret(ctx, "TITAN_HMAC_SECRET")


def test_env_parsing_follows_dotenv_rules():
    assert parse_env("A=1\n# B=2\nexport C=\"3 4\"\n\nD = '5'\n") == {"A": "1", "C": "3 4", "D": "5"}


def test_publish_in_check_mode_touches_nothing():
    conn = FakeConn()
    result, _ = run("nats", {"subject": "titan.cmd.sys.halt.v1", "body": {"state": "HARD_HALT"}},
                    conn, check=True)
    assert result.skipped and result.msg == "skipped in check mode"
    assert conn.reads == [] and conn.commands == []


@pytest.mark.parametrize("collect, ok", [
    ({"subject": "titan.evt.exec.state", "count": 2, "timeout": 5}, True),
    ({"subject": "titan.evt.exec.state"}, True),
    ({"count": 2}, False), ({"subject": "s", "count": 0}, False),
    ({"subject": "s", "cnt": 2}, False),
])
def test_collect_is_validated(collect, ok):
    problems = REGISTRY["nats"].check_args({"subject": "s", "collect": collect})
    assert (problems == []) is ok, problems


def test_jetstream_names_cannot_address_other_subjects():
    check = REGISTRY["jetstream"].check_args
    assert check({"action": "consumer_info", "stream": "TITAN_EXECUTION", "consumer": "g"}) == []
    assert check({"action": "consumer_info", "stream": "A.B", "consumer": "g"})
    assert check({"action": "consumer_delete", "stream": "S", "consumer": ">"})
    assert check({"action": "consumer_info", "stream": "S"})


def test_urls_in_messages_carry_no_credentials():
    assert bus.public_url("nats://user:pw@10.0.0.1:4222") == "nats://10.0.0.1:4222"
    assert bus.public_url("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"


def test_a_refused_bus_fails_fast_with_a_clear_message():
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(bus.BusError, match=f"cannot connect to NATS at nats://127.0.0.1:{port}: "
                                           "connection refused"):
        asyncio.run(bus.connect(f"nats://u:pw@127.0.0.1:{port}", timeout=30))
    assert time.monotonic() - started < 30  # refused: it did not wait for the timeout
