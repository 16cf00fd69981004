"""postgres and redis: Titan's data stores, through their own clients on the host.

psql, pg_dump, pg_restore and redis-cli run on the task's host, so the database password never
leaves it: the remote shell reads it from env_file into PGPASSWORD (or REDISCLI_AUTH) inside a
command substitution, so it is expanded there and appears in no command line, on no terminal and
in no result. Every other value in a command is shlex-quoted; SQL goes on stdin.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import posixpath
import re
import shlex
import urllib.parse
from typing import Any

from ripcord.modules.base import Arg, Module, Result, TaskContext, register

ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NULL = r"\N"  # how psql prints NULL here (-P null=\N), as COPY does: '' stays an empty string
ROW_COUNT = r"\echo :ROW_COUNT"  # psql's count of the last statement's rows, printed last


def quote(words: list[Any]) -> str:
    return " ".join(shlex.quote(str(w)) for w in words)


def secret_from_env_file(env_file: str, key: str, variable: str) -> str:
    """Shell that exports $variable from env_file's `key`, expanded on the host only.

    The .env is sourced in a subshell that prints just that one value, so the other secrets in
    it do not reach the client's environment, and nothing of it reaches stderr.
    """
    missing = shlex.quote(f"cannot read {key} from {env_file}")
    return (f'{variable}="$(. {shlex.quote(env_file)} >/dev/null 2>&1; printf %s "${key}")"; '
            f'export {variable}; [ -n "${variable}" ] || {{ echo {missing} >&2; exit 3; }}; ')


def first_error(out) -> str:
    """The line that says what went wrong: the first error line (a NOTICE before it is noise),
    else the first line the client printed."""
    lines = [re.sub(r"\s+", " ", line.strip()) for line in (out.stderr + "\n" + out.stdout).splitlines()
             if line.strip()]
    line = next((line for line in lines if re.search(r"\b(ERROR|FATAL|PANIC|error):", line)),
                lines[0] if lines else f"exit code {out.rc}")
    return re.sub(r"^psql:<stdin>:\d+: ", "", line)  # psql:<stdin>:1: ERROR: ... -> ERROR: ...


def parse_psql(stdout: str) -> tuple[list[dict[str, Any]], int]:
    """psql --csv output followed by ROW_COUNT: (rows as dicts, NULL as None; row count)."""
    body, _, last = stdout.rstrip("\n").rpartition("\n")
    if not body and not last.strip().isdigit():
        body, last = last, ""
    rows = [{k: (None if v == NULL else v) for k, v in row.items()}
            for row in csv.DictReader(io.StringIO(body))]
    return rows, int(last) if last.strip().isdigit() else 0


@register
class Postgres(Module):
    """Queries, dumps and restores the trading database; the password stays on the host.

    A query runs in a read-only transaction unless `write: true`.

    Changed: a write query that touched rows; every dump and restore.
    Check mode: read-only queries run; writes, dumps and restores are skipped.
    Example:
        - name: orders the engine still thinks are open
          postgres:
            sql: SELECT count(*) AS open FROM orders WHERE status = 'open'
          register: open_orders
    """

    name = "postgres"
    args = {
        "action": Arg(str, default="query", choices=("query", "dump", "restore")),
        "sql": Arg(str, help="query: the SQL (sent on stdin)"),
        "write": Arg(bool, default=False, help="query: it may write (else: a read-only transaction)"),
        "dest": Arg(str, help="dump: remote path; default {{ titan_home }}/backups/<db>-<UTC>.sql"),
        "format": Arg(str, default="plain", choices=("plain", "custom")),
        "src": Arg(str, help="restore: remote path of a plain or custom dump"),
        "db": Arg(str), "host": Arg(str), "port": Arg((int, str)), "user": Arg(str),
        "password_key": Arg(str, default="TITAN_DB_PASSWORD", help="its key in env_file"),
    }

    @classmethod
    def check_combination(cls, args: dict) -> list[str]:
        action = args.get("action", "query")
        needs = {"query": "sql", "restore": "src"}.get(action)
        problems = [f"action {action} needs {needs!r}"] if needs and not args.get(needs) else []
        key = args.get("password_key")
        if isinstance(key, str) and "{{" not in key and not ENV_KEY.fullmatch(key):
            problems.append(f"password_key {key!r} is not a variable name")
        return problems

    def run(self, ctx: TaskContext, args: dict) -> Result:
        action = args["action"]
        if ctx.check and (action != "query" or args["write"]):
            return Result(skipped=True, msg="skipped in check mode")
        env_file = ctx.vars.get("env_file")
        if not env_file:
            return Result(failed=True, msg="inventory variable env_file is not set: it holds "
                                           f"{args['password_key']}")
        db = args.get("db") or ctx.vars.get("postgres_db")
        user = args.get("user") or ctx.vars.get("postgres_user")
        if not db or not user:
            return Result(failed=True, msg="no database or user: give db/user or set inventory "
                                           "variables postgres_db and postgres_user")
        target = ["-h", args.get("host") or ctx.vars.get("postgres_host") or "127.0.0.1",
                  "-p", args.get("port") or ctx.vars.get("postgres_port") or 5432,
                  "-U", user, "-d", db]
        login = secret_from_env_file(env_file, args["password_key"], "PGPASSWORD")
        return getattr(self, action)(ctx, args, login, target, db)

    def query(self, ctx: TaskContext, args: dict, login: str, target: list, db: str) -> Result:
        """Rows as dicts. Without `write: true` the SQL runs in a read-only transaction, so a
        query that would write fails instead of changing anything (and check mode may run it)."""
        words = ["psql", "-X", "-w", "-q", "--csv", "-P", f"null={NULL}", "-v", "ON_ERROR_STOP=1",
                 "--single-transaction", *target]
        if not args["write"]:
            words += ["-c", "SET TRANSACTION READ ONLY"]
        words += ["-f", "-", "-c", ROW_COUNT]
        out = ctx.run(login + quote(words), stdin=args["sql"])
        if out.rc != 0:
            return Result(failed=True, msg=first_error(out))
        rows, count = parse_psql(out.stdout)
        return Result(changed=bool(args["write"]) and count > 0, data={"rows": rows, "rowcount": count},
                      msg=f"{count} row{'s' if count != 1 else ''}")

    def dump(self, ctx: TaskContext, args: dict, login: str, target: list, db: str) -> Result:
        """pg_dump to a temporary name, renamed when complete: a failed dump leaves no file that
        looks like a backup; the dump is mode 600. Plain dumps drop what they create, so they
        restore over a live db."""
        custom = args["format"] == "custom"
        dest = args.get("dest")
        if not dest:
            home = ctx.vars.get("titan_home")
            if not home:
                return Result(failed=True, msg="no dest and no inventory variable titan_home")
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
            dest = f"{home}/backups/{db}-{stamp}.{'dump' if custom else 'sql'}"
        options = ["--format=custom"] if custom else ["--format=plain", "--clean", "--if-exists"]
        # the dump holds the database's data: a mktemp file (0600, unpredictable name, O_EXCL) that
        # pg_dump fills, renamed over dest, so it is never readable by others and a planted name
        # or symlink is never written through
        script = (f"umask 077 && mkdir -p {shlex.quote(posixpath.dirname(dest) or '.')} && "
                  f"partial=$(mktemp -- {shlex.quote(dest + '.partial-XXXXXXXXXX')}) && "
                  f"{{ {quote(['pg_dump', '-w', *target, *options])} --file \"$partial\" && "
                  f"chmod 600 -- \"$partial\" && mv -fT -- \"$partial\" {shlex.quote(dest)} || "
                  f"{{ rm -f -- \"$partial\"; exit 1; }}; }} && "
                  f"wc -c < {shlex.quote(dest)} && sha256sum < {shlex.quote(dest)}")
        out = ctx.run(login + script)
        if out.rc != 0:
            return Result(failed=True, msg=first_error(out))
        size, digest = out.stdout.split()[:2]  # "<bytes>\n<sha256>  -"
        return Result(changed=True, msg=f"dumped {db} to {dest} ({size} bytes)",
                      data={"path": dest, "size": int(size), "sha256": digest,
                            "format": args["format"], "db": db})

    def restore(self, ctx: TaskContext, args: dict, login: str, target: list, db: str) -> Result:
        """Load a dump in one transaction, all or nothing: a custom dump (magic PGDMP) with
        pg_restore --clean --if-exists, a plain one with psql stopping at the first error."""
        src = shlex.quote(args["src"])
        unreadable = shlex.quote(f"cannot read {args['src']}")
        pg_restore = quote(["pg_restore", "-w", *target, "--clean", "--if-exists",
                            "--single-transaction", args["src"]])
        psql = quote(["psql", "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", *target,
                      "--single-transaction", "-f", args["src"]])
        script = (f"test -r {src} || {{ echo {unreadable} >&2; exit 3; }}; "
                  f'if [ "$(head -c 5 {src})" = PGDMP ]; then echo custom; {pg_restore}; '
                  f"else echo plain; {psql} >/dev/null; fi")
        out = ctx.run(login + script)
        if out.rc != 0:
            return Result(failed=True, msg=first_error(out))
        kind = out.stdout.split()[0]
        return Result(changed=True, msg=f"restored {db} from {args['src']} ({kind} dump)",
                      data={"src": args["src"], "format": kind, "db": db})


# Commands that never write. Anything else counts as a write: skipped under --check, changed.
READ_ONLY = frozenset("""
    BITCOUNT BITPOS DBSIZE DUMP ECHO EXISTS GEOPOS GEODIST GEOHASH GEOSEARCH GET GETBIT GETRANGE
    HEXISTS HGET HGETALL HKEYS HLEN HMGET HRANDFIELD HSCAN HSTRLEN HVALS INFO KEYS LASTSAVE LINDEX
    LLEN LPOS LRANGE MGET OBJECT PFCOUNT PING PTTL RANDOMKEY SCAN SCARD SDIFF SINTER SISMEMBER
    SMEMBERS SMISMEMBER SRANDMEMBER SSCAN STRLEN SUNION TIME TTL TYPE XINFO XLEN XPENDING XRANGE
    XREVRANGE ZCARD ZCOUNT ZRANGE ZRANGEBYSCORE ZRANK ZREVRANGE ZREVRANK ZSCAN ZSCORE ZMSCORE
    """.split()) | {"CONFIG GET", "CLIENT LIST", "CLIENT INFO", "MEMORY USAGE", "SLOWLOG GET"}
# Writes whose reply 0 means they found nothing to do (DEL of a missing key): changed=False.
ZERO_IS_NOOP = frozenset("""
    DEL UNLINK EXPIRE PEXPIRE EXPIREAT PEXPIREAT PERSIST HDEL SADD SREM ZREM LREM SETNX HSETNX
    MSETNX RENAMENX
    """.split())


def redis_verb(command: list) -> tuple[str, bool]:
    """The command's name (with its subcommand where that decides) and whether it writes."""
    words = [str(w).upper() for w in command[:2]]
    pair = " ".join(words)
    if pair in READ_ONLY:
        return pair, False
    return words[0], words[0] not in READ_ONLY


@register
class Redis(Module):
    """One redis-cli command on the host; the reply as JSON types (redis-cli --json).

    Changed: a write command, unless its reply says it found nothing to do (DEL of a missing key).
    Check mode: reads run; writes are skipped.
    Example:
        - name: the cached order book
          redis:
            command: [GET, "orderbook:BTCUSDT"]
    """

    name = "redis"
    args = {
        "command": Arg(list, required=True, help='words, e.g. ["GET", "orderbook:BTCUSDT"]'),
        "url": Arg(str, help="redis://host:port/db; default: inventory redis_url"),
        "password_key": Arg(str, help="env_file key of the Redis password, if it has one"),
    }

    @classmethod
    def check_combination(cls, args: dict) -> list[str]:
        command = args.get("command")
        if isinstance(command, list) and not command:
            return ["'command' needs at least one word"]
        if isinstance(command, list) and not all(isinstance(w, (str, int, float)) for w in command):
            return ["'command' words must be strings or numbers"]
        key = args.get("password_key")
        if isinstance(key, str) and "{{" not in key and not ENV_KEY.fullmatch(key):
            return [f"password_key {key!r} is not a variable name"]
        return []

    def run(self, ctx: TaskContext, args: dict) -> Result:
        command = args["command"]
        verb, writes = redis_verb(command)
        if writes and ctx.check:
            return Result(skipped=True, msg="skipped in check mode")
        url = urllib.parse.urlsplit(args.get("url") or ctx.vars.get("redis_url")
                                    or "redis://127.0.0.1:6379/0")
        if url.password:
            return Result(failed=True, msg="the Redis URL carries a password, which would show in "
                                           "a command line: keep it in env_file (password_key)")
        login = ""
        if args.get("password_key"):
            env_file = ctx.vars.get("env_file")
            if not env_file:
                return Result(failed=True, msg="inventory variable env_file is not set")
            login = secret_from_env_file(env_file, args["password_key"], "REDISCLI_AUTH")
        words = ["redis-cli", "-h", url.hostname or "127.0.0.1", "-p", url.port or 6379,
                 "-n", url.path.strip("/") or 0, *(["--tls"] if url.scheme == "rediss" else []),
                 "--json", *command]
        out = ctx.run(login + quote(words))
        text = out.stdout.strip()
        if out.rc != 0:
            return Result(failed=True, msg=first_error(out))
        if text.startswith("error:"):  # redis-cli --json prints an error reply so, exit code 0
            return Result(failed=True, msg=f"{verb}: {parse_json(text[len('error:'):])}")
        reply = parse_json(text)
        changed = writes and not (verb in ZERO_IS_NOOP and reply == 0)
        return Result(changed=changed, data={"reply": reply}, msg=f"{verb}: {summary(reply)}")


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def summary(reply: Any) -> str:
    """A reply in a few words: numbers and status replies as such, values by their size only."""
    if reply is None or isinstance(reply, (int, float)) or reply in ("OK", "PONG", "QUEUED"):
        return json.dumps(reply)
    if isinstance(reply, (list, dict)):
        return f"{len(reply)} item{'s' if len(reply) != 1 else ''}"
    return f"{len(str(reply))} characters"
