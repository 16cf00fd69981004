"""backup and migrate: the database procedures' steps that need logic (backup-db, restore-db,
migrate-db; docs/runbook.md).

A backup is only worth what can be proven about it, so each dump gets a manifest beside it: its
sha256, the server version it was dumped from, and the row count of every table counted from the
dump itself (pg_restore's COPY data, one line a row), so the counts are exactly the dump's even
while the engines write. A restore checks the checksum, loads the dump and compares the
database's counts with the manifest. Migrations are numbered up/down SQL files, each applied in
one transaction together with its row in schema_migrations.

Everything runs on the database host through the `postgres` module's login (the password stays
there). `preflight` reads the fleet before a procedure runs and refuses bad input with exit 2
before anything is stopped.
"""

from __future__ import annotations

import datetime
import json
import re
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Any

from ripcord.errors import InputError
from ripcord.modules.base import Arg, Result, TaskContext, register
from ripcord.modules.data import Postgres, first_error, quote

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a backup's name: a file name, no path
DUMP, MANIFEST = ".dump", ".manifest.json"
IDENT = r'(?:"(?:[^"]|"")*"|[^\s."(]+)'
COPY = re.compile(rf"COPY ({IDENT})\.({IDENT}) ")
ENGINE = "titan-execution"  # the service that trades: halted before a restore
# Every ordinary table's rows, counted by the server (identifiers quoted by format's %I).
COUNT_SQL = """SELECT n.nspname || '.' || c.relname AS "table",
  (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM ONLY %I.%I',
   n.nspname, c.relname), false, true, '')))[1]::text AS rows
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1"""


def backup_name(text: str) -> str:
    """A backup's name as the operator may give it (with or without .dump / .manifest.json)."""
    name = str(text or "").strip()
    for suffix in (MANIFEST, DUMP):
        name = name.removesuffix(suffix)
    if not NAME.fullmatch(name) or ".." in name:
        raise InputError(f"--backup {text!r} is not a backup name",
                         hint="a name from the backup directory, e.g. titan-20261206T112600Z")
    return name


def _unquote(ident: str) -> str:
    return ident[1:-1].replace('""', '"') if ident.startswith('"') else ident


def manifest_script(dump: str, pg_restore: str = "pg_restore") -> str:
    """Shell printing the version the dump was made from, then `rows<TAB>COPY line` per table
    (a pg_restore that fails prints @@failed, which parse_counts refuses: no pipefail in sh)."""
    path, tool = shlex.quote(dump), shlex.quote(pg_restore)
    return (f"{tool} -l {path} | sed -n 's/^;[[:space:]]*Dumped from database version: //p'"
            f" && echo @@ && {{ {tool} -f - --data-only {path} || echo @@failed; }} | awk"
            " '$0 == \"@@failed\" { print; exit } inside && $0 == \"\\\\.\""
            " { print n \"\\t\" copy; inside = 0; next } inside { n++; next }"
            " /^COPY .* FROM stdin;$/ { copy = $0; n = 0; inside = 1 }'")


def parse_counts(output: str) -> tuple[str, dict[str, int]]:
    """(server version, {schema.table: rows}) from manifest_script's output."""
    version, _, body = output.partition("@@\n")
    if "@@failed" in body.splitlines():
        return "", {}
    tables = {}
    for line in body.splitlines():
        rows, _, copy = line.partition("\t")
        match = COPY.match(copy)
        if match and rows.isdigit():
            tables[f"{_unquote(match[1])}.{_unquote(match[2])}"] = int(rows)
    return version.strip().splitlines()[0] if version.strip() else "", tables


def manifest(name: str, db: str, size: int, sha256: str, version: str, tables: dict[str, int],
             kind: str = "backup") -> dict[str, Any]:
    return {"name": name, "dump": name + DUMP, "db": db, "kind": kind, "format": "custom",
            "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "size": size, "sha256": sha256, "pg_version": version, "tables": tables,
            "rows": sum(tables.values())}


def write_script(dest: str) -> str:
    """Shell writing stdin to dest through a mktemp file (0600), renamed when complete."""
    q = shlex.quote(dest)
    return (f"umask 077 && tmp=$(mktemp -- {shlex.quote(dest + '.partial-XXXXXXXXXX')}) && "
            f"{{ cat > \"$tmp\" && mv -fT -- \"$tmp\" {q} || {{ rm -f -- \"$tmp\"; exit 1; }}; }}")


def expired(names: list[str], keep: int) -> list[str]:
    """The backups (by name, oldest first) beyond the newest `keep`."""
    ordered = sorted(n for n in names if NAME.fullmatch(n))
    return ordered[:-keep] if keep > 0 and len(ordered) > keep else []


@register
class Backup(Postgres):
    """Makes a manifest-backed backup, verifies one, or restores one and proves its rows are back.

    Changed: create and restore, always; verify never.
    Check mode: verify runs; create and restore are skipped.
    Example:
        - name: a backup before the migration
          backup:
            action: create
            retain: 7
          register: made
    """

    name = "backup"
    args = {
        "action": Arg(str, default="create", choices=("create", "verify", "restore")),
        "name": Arg(str, help="verify/restore: the backup's name (no directory)"),
        "kind": Arg(str, default="backup", choices=("backup", "pre-restore"),
                    help="create: pre-restore names the snapshot a restore takes first"),
        "retain": Arg(int, default=0, help="create: keep this many backups (0: keep all)"),
        "dir": Arg(str, help="default: inventory backup_dir, else titan_home/backups"),
        "db": Arg(str), "host": Arg(str), "port": Arg((int, str)), "user": Arg(str),
        "password_key": Arg(str, default="TITAN_DB_PASSWORD", help="its key in env_file"),
    }

    @classmethod
    def check_combination(cls, args: dict) -> list[str]:
        needs_name = args.get("action") in ("verify", "restore") and not args.get("name")
        return ([f"action {args.get('action')} needs 'name'"] if needs_name else []) + \
            super().check_combination({**args, "action": "query", "sql": "-"})

    def run(self, ctx: TaskContext, args: dict) -> Result:
        if ctx.check and args["action"] != "verify":
            return Result(skipped=True, msg="skipped in check mode")
        folder = args.get("dir") or ctx.vars.get("backup_dir") or (
            f"{ctx.vars['titan_home']}/backups" if ctx.vars.get("titan_home") else None)
        if not folder:
            return Result(failed=True, msg="no dir, and no inventory backup_dir or titan_home")
        # Postgres.run skips every action but a read under --check: verify only reads
        return super().run(replace(ctx, check=False), {**args, "action": "do_" + args["action"],
                                                       "dir": str(folder).rstrip("/")})

    def do_create(self, ctx: TaskContext, args: dict, login: str, target: list, db: str) -> Result:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"{db}-{stamp}" + ("" if args["kind"] == "backup" else f"-{args['kind']}")
        if not NAME.fullmatch(name):
            return Result(failed=True, msg=f"{name!r} is not a usable backup name")
        dest = f"{args['dir']}/{name}{DUMP}"
        if ctx.run(f"test -e {shlex.quote(dest)}").rc == 0:
            return Result(failed=True, msg=f"{dest} exists already: try again in a second")
        dumped = self.dump(ctx, {**args, "dest": dest, "format": "custom"}, login, target, db)
        if dumped.failed:
            return dumped
        out = ctx.run(manifest_script(dest))
        version, tables = parse_counts(out.stdout)
        if out.rc != 0 or not version:
            return Result(failed=True, changed=True, msg=f"cannot read {dest} back: {first_error(out)}")
        record = manifest(name, db, dumped.data["size"], dumped.data["sha256"], version, tables,
                          args["kind"])
        out = ctx.run(write_script(f"{args['dir']}/{name}{MANIFEST}"),
                      stdin=json.dumps(record, indent=2) + "\n")
        if out.rc != 0:
            return Result(failed=True, changed=True, msg=f"cannot write the manifest: {first_error(out)}")
        removed = self.prune(ctx, args, args["retain"])
        msg = (f"backup {name}: {record['rows']} rows in {len(tables)} tables, {record['size']} bytes"
               + (f"; removed {len(removed)} older ({', '.join(removed)})" if removed else ""))
        return Result(changed=True, msg=msg, data={**record, "path": dest, "removed": removed})

    def prune(self, ctx: TaskContext, args: dict, keep: int) -> list[str]:
        """Older backups beyond `keep` (dump and manifest) removed; their names."""
        if keep <= 0:
            return []
        listing = ctx.run(f"ls -1 -- {shlex.quote(args['dir'])}").stdout.split()
        old = expired([n.removesuffix(MANIFEST) for n in listing if n.endswith(MANIFEST)], keep)
        if old:
            paths = [f"{args['dir']}/{n}{suffix}" for n in old for suffix in (DUMP, MANIFEST)]
            ctx.run("rm -f -- " + quote(paths))
        return old

    def do_verify(self, ctx: TaskContext, args: dict, login: str, target: list, db: str) -> Result:
        """The backup's manifest read and its dump's sha256 matched against it."""
        try:
            name = backup_name(args["name"])
        except InputError as exc:
            return Result(failed=True, msg=str(exc))
        dump, listed = f"{args['dir']}/{name}{DUMP}", f"{args['dir']}/{name}{MANIFEST}"
        out = ctx.run(f"cat -- {shlex.quote(listed)} && echo @@ && sha256sum < {shlex.quote(dump)}")
        text, _, digest = out.stdout.partition("@@\n")
        try:
            record = json.loads(text)
        except ValueError:
            return Result(failed=True, msg=f"no backup {name} in {args['dir']} (no readable {listed})")
        if out.rc != 0 or not digest.strip():
            return Result(failed=True, msg=f"backup {name}: cannot read {dump}: {first_error(out)}")
        if not isinstance(record, dict) or digest.split()[0] != record.get("sha256"):
            return Result(failed=True, msg=f"backup {name}: {dump} does not match its manifest's "
                                           "sha256 (corrupt or changed): refusing it")
        return Result(msg=f"backup {name}: checksum ok, {record.get('rows')} rows",
                      data={"manifest": record, "path": dump, "name": name})

    def do_restore(self, ctx: TaskContext, args: dict, login: str, target: list, db: str) -> Result:
        """Verified again (the file may have changed since the preflight), restored in one
        transaction, then every table's rows counted and compared with the manifest."""
        checked = self.do_verify(ctx, args, login, target, db)
        if checked.failed:
            return checked
        restored = self.restore(ctx, {**args, "src": checked.data["path"]}, login, target, db)
        if restored.failed:
            return restored
        counted = self.query(ctx, {**args, "sql": COUNT_SQL, "write": False}, login, target, db)
        if counted.failed:
            return Result(failed=True, changed=True, msg=f"restored, but cannot count rows: {counted.msg}")
        now = {r["table"]: int(r["rows"]) for r in counted.data["rows"]}
        expected = checked.data["manifest"].get("tables") or {}
        wrong = [f"{t}: {now.get(t, 'missing')} rows, the backup has {n}"
                 for t, n in sorted(expected.items()) if now.get(t) != n]
        if wrong:
            return Result(failed=True, changed=True, msg="restored rows differ from the manifest: "
                          + "; ".join(wrong), data={"tables": now})
        extra = sorted(set(now) - set(expected))
        return Result(changed=True, data={"tables": now, "name": checked.data["name"]},
                      msg=f"restored {checked.data['name']}: {sum(expected.values())} rows in "
                          f"{len(expected)} tables match the manifest"
                          + (f" (tables not in the backup, left as they are: {', '.join(extra)})"
                             if extra else ""))


# --- migrations ---------------------------------------------------------------------------------

MIGRATION = re.compile(r"(\d{4})_([a-z0-9_]+)\.(up|down)\.sql")
LEDGER = ("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
          "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());\n")


def migrations(folder: Path) -> dict[int, dict[str, Any]]:
    """{version: {name, up, down}} from folder's NNNN_name.up.sql / .down.sql; each needs both."""
    found: dict[int, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.sql")):
        match = MIGRATION.fullmatch(path.name)
        if not match:
            raise InputError(f"{path}: not a migration name (NNNN_name.up.sql / .down.sql)")
        entry = found.setdefault(int(match[1]), {"name": match[2]})
        if entry["name"] != match[2]:
            raise InputError(f"{path}: migration {match[1]} has two names")
        entry[match[3]] = path.read_text()
    for version, entry in found.items():
        if "up" not in entry or "down" not in entry:
            raise InputError(f"{folder}: migration {version:04d} needs both .up.sql and .down.sql")
    return found


def plan(known: dict[int, dict], applied: list[int], direction: str, to: int | None
         ) -> list[tuple[int, str]]:
    """The steps, in order, as (version, up|down): up applies what is missing up to `to` (all by
    default); down reverts what is applied above `to` (the newest only by default)."""
    if direction == "up":
        return [(v, "up") for v in sorted(known) if v not in applied and (to is None or v <= to)]
    floor = (sorted(applied)[-2] if len(applied) > 1 else 0) if to is None else to
    return [(v, "down") for v in sorted(applied, reverse=True) if v > floor]


@register
class Migrate(Postgres):
    """Brings the schema up or down through numbered migrations, each in one transaction.

    Changed: when at least one migration was applied or reverted.
    Check mode: changes nothing; says which migrations it would apply or revert.
    Example:
        - name: the schema at the release's version
          migrate:
            direction: up
    """

    name = "migrate"
    args = {
        "direction": Arg(str, required=True, choices=("up", "down")),
        "to": Arg(int, help="up: apply up to this version; down: revert down to it (0: all)"),
        "dir": Arg(str, help="default: the shipped migrations/"),
        "db": Arg(str), "host": Arg(str), "port": Arg((int, str)), "user": Arg(str),
        "password_key": Arg(str, default="TITAN_DB_PASSWORD", help="its key in env_file"),
    }

    @classmethod
    def check_combination(cls, args: dict) -> list[str]:
        return super().check_combination({**args, "action": "query", "sql": "-"})

    def run(self, ctx: TaskContext, args: dict) -> Result:
        from ripcord.paths import data_dir

        try:
            known = migrations(Path(args.get("dir") or data_dir("migrations")))
        except InputError as exc:
            return Result(failed=True, msg=str(exc))
        # Postgres.run skips every action but a read under --check: migrate says what it would do
        return super().run(replace(ctx, check=False),
                           {**args, "action": "migrate", "write": False, "dry": ctx.check,
                            "known": known})

    def migrate(self, ctx: TaskContext, args: dict, login: str, target: list, db: str) -> Result:
        applied = []
        present = self.query(ctx, {**args, "sql": "SELECT to_regclass('schema_migrations') IS NOT "
                                   "NULL AS present"}, login, target, db)
        if present.failed:
            return present
        if present.data["rows"][0]["present"] == "t":
            ledger = self.query(ctx, {**args, "sql": "SELECT version FROM schema_migrations ORDER BY 1"},
                                login, target, db)
            if ledger.failed:
                return ledger
            applied = [int(r["version"]) for r in ledger.data["rows"]]
        unknown = sorted(set(applied) - set(args["known"]))
        if unknown:
            return Result(failed=True, msg=f"the database has migrations this ripcord does not know: "
                                           f"{', '.join(map(str, unknown))}")
        steps = plan(args["known"], applied, args["direction"], args.get("to"))
        names = [f"{args['direction']} {v:04d}_{args['known'][v]['name']}" for v, _ in steps]
        data = {"applied_before": applied, "steps": names}
        if not steps:
            return Result(msg=f"nothing to do (applied: {', '.join(map(str, applied)) or 'none'})",
                          data=data)
        if args["dry"]:
            return Result(changed=True, msg="would " + ", ".join(names), data=data)
        done = []
        for (version, way), label in zip(steps, names, strict=True):
            entry = args["known"][version]
            book = (f"INSERT INTO schema_migrations (version, name) VALUES ({version}, "
                    f"'{entry['name']}');" if way == "up"
                    else f"DELETE FROM schema_migrations WHERE version = {version};")
            out = self.query(ctx, {**args, "write": True,
                                   "sql": LEDGER + entry[way] + "\n" + book + "\n"}, login, target, db)
            if out.failed:
                return Result(failed=True, changed=bool(done), data={**data, "done": done},
                              msg=f"{label} failed (rolled back; done before it: "
                                  f"{', '.join(done) or 'none'}): {out.msg}")
            done.append(label)
        return Result(changed=True, msg=", ".join(done), data={**data, "done": done})



# --- preflight: read the fleet, refuse with exit 2 before anything runs -------------------------

def preflight(procedure: str, inventory, pattern: str, extra_vars: dict) -> None:
    """What must hold before `procedure` (backup-db, restore-db, migrate-db) touches anything:
    raises InputError (exit 2, one line) when it does not. Read-only, over ripcord's own
    connections; a host that cannot be read fails closed."""
    from ripcord.topology import find_topology, load_cached

    selected = inventory.select(pattern)
    hostvars = {h: inventory.host_vars(h) for h in inventory.select("all")}
    databases = [h for h in selected if "postgresql" in (hostvars[h].get("services") or [])]
    if not databases:
        raise InputError(f"--host {pattern} selects no host that runs postgresql",
                         hint="e.g. --host db (restore-db: --host sandbox, the whole fleet)")
    if procedure == "migrate-db":
        from ripcord.paths import data_dir

        known, to = migrations(data_dir("migrations")), extra_vars.get("migrate_to", "")
        if to != "" and to not in known and not (to == 0 and extra_vars.get("migrate_direction") == "down"):
            raise InputError(f"--to {to}: no such migration (known: "
                             f"{', '.join(map(str, sorted(known))) or 'none'}; --down --to 0 reverts all)")
    if procedure != "restore-db":
        return
    name = backup_name(extra_vars.get("restore_backup", ""))
    dependents = load_cached(find_topology()).dependents("postgresql")
    left_out = sorted(h for h, v in hostvars.items() if h not in selected
                      and dependents & set(v.get("services") or []))
    if left_out:
        raise InputError(f"--host {pattern} leaves out {', '.join(left_out)}, which run services "
                         "that use the database: they must be stopped too",
                         hint="select the whole fleet, e.g. --host sandbox")
    engines = [h for h, v in hostvars.items() if ENGINE in (v.get("services") or [])]
    problems = _read_fleet(inventory, databases, engines, name)
    if problems:
        raise InputError("restore-db refused, nothing was stopped: " + "; ".join(problems),
                         hint="halt the fleet first (invoke halt), and name a backup whose "
                              "checksum matches (ls the backup directory)")


def _read_fleet(inventory, databases: list[str], engines: list[str], name: str) -> list[str]:
    """Why the restore may not go ahead: the backup on each database host, each engine halted."""
    from concurrent.futures import ThreadPoolExecutor

    from ripcord.modules.service import may_trade
    from ripcord.templating import Secrets, Templar, resolve_vars
    from ripcord.verify import connect

    hosts = sorted(set(databases) | set(engines))
    connections, unreachable = connect(inventory, hosts)
    problems = [f"{h} cannot be read ({why})" for h, why in sorted(unreachable.items())]
    try:
        contexts = {h: TaskContext(h, resolve_vars(Templar(), dict(inventory.host_vars(h))), c,
                                   timeout=30, templar=Templar(), secrets=Secrets())
                    for h, c in connections.items()}

        def backup(host: str) -> str | None:
            result = Backup().run(contexts[host], Backup.with_defaults(
                {"action": "verify", "name": name}))
            return f"{host}: {result.msg}" if result.failed else None

        def engine(host: str) -> str | None:
            why = may_trade(contexts[host], ENGINE)
            return f"{host}: {why}" if why else None

        with ThreadPoolExecutor(max_workers=len(contexts) or 1) as pool:
            asked = [pool.submit(backup, h) for h in databases if h in contexts]
            asked += [pool.submit(engine, h) for h in engines if h in contexts]
            problems += [p for f in asked if (p := f.result())]
    finally:
        for conn in connections.values():
            conn.close()
    return problems
