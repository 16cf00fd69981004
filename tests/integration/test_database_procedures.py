"""backup-db, restore-db and migrate-db end to end on the sandbox fleet, as an operator runs them.

Outcomes are read through other paths than ripcord's report: psql as titan over TCP, the files
on db-1 with ls, sha256sum and pg_restore over the system ssh client, supervisorctl's pids.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import reset_fleet

REPO = Path(__file__).resolve().parents[2]
ENGINES = ("exec-1", "exec-2")


@pytest.fixture(scope="module")
def psql(access):
    """psql(sql) -> stdout, as titan over TCP (the engines' path), password from db-1's .env."""
    password = access.env("db-1")["TITAN_DB_PASSWORD"]

    def run(sql: str) -> str:
        result = subprocess.run(
            ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(access.plan.postgres_port), "-U", "titan", "-d", "titan"],
            input=sql, capture_output=True, text=True, timeout=30,
            env={**os.environ, "PGPASSWORD": password})
        assert result.returncode == 0, result.stderr
        return result.stdout
    return run


@pytest.fixture(scope="module")
def folder(access) -> str:
    return f"{access.plan.db.titan_home}/backups"


def manifests(access, folder: str) -> dict[str, dict]:
    """Every manifest on db-1, read with cat over ssh, by backup name."""
    names = access.ssh("db-1", f"ls -1 {folder}").stdout.split()
    return {n.removesuffix(".manifest.json"): json.loads(access.ssh("db-1", f"cat {folder}/{n}").stdout)
            for n in names if n.endswith(".manifest.json")}


def pids(access) -> dict[str, str]:
    """supervisorctl status of every service on every host: name -> state and pid."""
    found = {}
    for host in access.plan.hosts:
        for line in access.ssh(host.name, "supervisorctl status", check=False).stdout.splitlines():
            words = line.split()
            if len(words) > 1:
                pid = re.search(r"pid (\d+)", line)
                found[f"{host.name} {words[0]}"] = f"{words[1]} {pid[1] if pid else '-'}"
    return found


def backup(ripcord, access, folder) -> str:
    """A new backup made with invoke backup-db; its name, seen on db-1."""
    before = set(manifests(access, folder))
    result = ripcord("backup-db", "--host", "db", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    made = set(manifests(access, folder)) - before
    assert len(made) == 1, made
    return made.pop()


@pytest.fixture
def halted(ripcord, access):
    """The whole fleet halted for the test (invoke halt), trading again after it."""
    result = ripcord("halt", "--host", "sandbox", "--reason", "pytest restore")
    # the precondition is the engines' own word; halt's exchange rung may meet the stand-in
    # exchange's per-second rate limit (HTTP 429) when tests halt and resume in quick succession
    assert result.returncode == 0 or "HTTP 429" in result.stdout, result.stdout + result.stderr
    for host in ENGINES:
        access.wait_for(lambda h=host: access.health(h, "titan-execution")["halted"] is True,
                        timeout=10, what=f"{host} halted")
    yield
    reset_fleet(access)


def test_a_fresh_fleets_first_backup_passes_the_backups_check(ripcord, access, folder):
    """sandbox.up leaves a manifest-backed backup, so `invoke verify` passes on a fresh fleet."""
    assert any(m["kind"] == "backup" for m in manifests(access, folder).values())
    result = ripcord("verify", "--host", "db", "--checks", "backups")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_backups_check_fails_on_a_corrupt_newest_backup(ripcord, access, folder):
    name = backup(ripcord, access, folder)
    copy = f"{name}-zz"  # the newest: its manifest is written last
    access.ssh("db-1", f"cp {folder}/{name}.dump {folder}/{copy}.dump && "
                       f"cp {folder}/{name}.manifest.json {folder}/{copy}.manifest.json && "
                       f"printf 'X' | dd of={folder}/{copy}.dump bs=1 seek=100 conv=notrunc 2>/dev/null")
    try:
        result = ripcord("verify", "--host", "db", "--checks", "backups")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "does not match its manifest's sha256" in result.stdout + result.stderr
    finally:
        access.ssh("db-1", f"rm -f {folder}/{copy}.dump {folder}/{copy}.manifest.json")
    assert ripcord("verify", "--host", "db", "--checks", "backups").returncode == 0


def test_backup_writes_a_custom_dump_and_a_manifest_that_proves_it(ripcord, access, folder, psql):
    name = backup(ripcord, access, folder)
    record = manifests(access, folder)[name]
    dump = f"{folder}/{name}.dump"
    digest, _, mode, magic = access.ssh("db-1", f"sha256sum < {dump}; stat -c %a {dump}; "
                                                f"head -c 5 {dump}").stdout.split()[:4]
    assert digest == record["sha256"] and mode == "600" and magic == "PGDMP", (digest, mode, magic)
    tables = set(psql("SELECT schemaname || '.' || tablename FROM pg_tables "
                      "WHERE schemaname = 'public'").split())
    assert set(record["tables"]) == tables and record["tables"]["public.positions"] > 0, record
    # the counts are the dump's own: pg_restore's data for one table, counted here
    rows = access.ssh("db-1", f"pg_restore -f - --data-only -t positions {dump} | "
                              "sed -n '/^COPY /,/^\\\\\\.$/p' | wc -l").stdout.strip()
    assert int(rows) - 2 == record["tables"]["public.positions"], rows


def test_retention_keeps_the_newest_backups_only(ripcord, access, folder, tmp_path):
    extra = tmp_path / "retention.yml"
    extra.write_text("all:\n  vars:\n    backup_retention: 2\n")
    made = []
    for _ in range(3):
        access.wait_for(lambda m=made: not m or m[-1] < _stamp(), timeout=5, what="the next second")
        before = set(manifests(access, folder))
        result = ripcord("backup-db", "--host", "db", "--yes", inventories=(extra,))
        assert result.returncode == 0, result.stdout + result.stderr
        made += sorted(set(manifests(access, folder)) - before)
    listing = access.ssh("db-1", f"ls -1 {folder}").stdout.split()
    kept = sorted(n.removesuffix(".manifest.json") for n in listing if n.endswith(".manifest.json"))
    assert kept == made[-2:], (kept, made)
    assert f"{made[0]}.dump" not in listing


def _stamp() -> str:
    import time
    return time.strftime("titan-%Y%m%dT%H%M%SZ", time.gmtime())


def test_restore_brings_back_the_backups_rows_and_keeps_a_snapshot(ripcord, access, folder, psql,
                                                                   halted):
    name = backup(ripcord, access, folder)
    psql("INSERT INTO audit_log (actor, action, detail) VALUES ('pytest', 'restore-marker', '{}')")
    before = set(manifests(access, folder))
    result = ripcord("restore-db", "--host", "sandbox", "--backup", name, "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert psql("SELECT count(*) FROM audit_log WHERE action = 'restore-marker'").strip() == "0"
    snapshots = [n for n in set(manifests(access, folder)) - before if n.endswith("-pre-restore")]
    assert len(snapshots) == 1, snapshots
    found = access.ssh("db-1", f"pg_restore -f - --data-only -t audit_log "
                               f"{folder}/{snapshots[0]}.dump | grep -c restore-marker").stdout
    assert found.strip() == "1", "the snapshot does not hold the row the restore replaced"
    for host in ENGINES:  # started again, still halted
        access.wait_for(lambda h=host: access.health(h, "titan-execution")["halted"] is True,
                        timeout=30, what=f"{host} engine back, halted")


def test_the_sandboxs_first_backup_restores(ripcord, access, folder, psql, halted):
    """The backup sandbox.up leaves (dumped by the database superuser) restores as titan."""
    first = min(n for n, m in manifests(access, folder).items() if m["kind"] == "backup")
    result = ripcord("restore-db", "--host", "sandbox", "--backup", first, "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    expected = manifests(access, folder)[first]["tables"]["public.positions"]
    assert int(psql("SELECT count(*) FROM positions").strip()) == expected


def test_a_restore_that_fails_midway_puts_the_snapshot_back_and_says_so(ripcord, access, folder,
                                                                         psql, halted):
    name = backup(ripcord, access, folder)  # its manifest then says a row count the dump lacks
    access.ssh("db-1", "sed -i 's/\"public.positions\": [0-9]*/\"public.positions\": 999999/' "
                       f"{folder}/{name}.manifest.json")
    psql("INSERT INTO audit_log (actor, action, detail) VALUES ('pytest', 'midway-marker', '{}')")
    result = ripcord("restore-db", "--host", "sandbox", "--backup", name, "--yes")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the database is back as it was before" in result.stdout, result.stdout
    assert psql("SELECT count(*) FROM audit_log WHERE action = 'midway-marker'").strip() == "1"
    for host in ENGINES:  # started again whatever happened
        access.wait_for(lambda h=host: access.health(h, "titan-execution")["halted"] is True,
                        timeout=30, what=f"{host} engine back, halted")


def test_a_corrupt_backup_is_refused_with_nothing_stopped(ripcord, access, folder, halted):
    name = backup(ripcord, access, folder)
    corrupt = f"{name}-corrupt"
    access.ssh("db-1", f"cp {folder}/{name}.dump {folder}/{corrupt}.dump && "
                       f"cp {folder}/{name}.manifest.json {folder}/{corrupt}.manifest.json && "
                       f"printf 'X' | dd of={folder}/{corrupt}.dump bs=1 seek=100 conv=notrunc 2>/dev/null")
    try:
        states = pids(access)
        result = ripcord("restore-db", "--host", "sandbox", "--backup", corrupt, "--yes")
        assert result.returncode == 2, result.stdout + result.stderr
        assert "sha256" in result.stderr and "nothing was stopped" in result.stderr, result.stderr
        assert pids(access) == states
    finally:
        access.ssh("db-1", f"rm -f {folder}/{corrupt}.dump {folder}/{corrupt}.manifest.json")


def test_restore_goes_through_the_two_person_rule_where_the_inventory_asks(ripcord, access, folder,
                                                                            tmp_path, halted):
    name = backup(ripcord, access, folder)
    rule = tmp_path / "rule.yml"
    rule.write_text("all:\n  vars:\n    ripcord_require_approval: [restore-db]\n")
    states = pids(access)
    result = ripcord("restore-db", "--host", "sandbox", "--backup", name, "--yes", inventories=(rule,))
    assert result.returncode == 4, result.stdout + result.stderr
    assert "needs a second operator's approval" in result.stderr, result.stderr
    assert pids(access) == states
    access.wait_for(lambda: name < _stamp(), timeout=5, what="the next second")  # a new name
    made = ripcord("backup-db", "--host", "db", "--yes", inventories=(rule,))  # a backup is not one
    assert made.returncode == 0, made.stdout + made.stderr


def test_a_missing_backup_is_refused(ripcord, access, halted):
    result = ripcord("restore-db", "--host", "sandbox", "--backup", "titan-19990101T000000Z", "--yes")
    assert result.returncode == 2 and "no backup titan-19990101T000000Z" in result.stderr, result.stderr


def test_a_trading_fleet_is_refused_with_nothing_stopped(ripcord, access, folder):
    name = backup(ripcord, access, folder)
    for host in ENGINES:
        assert access.health(host, "titan-execution")["halted"] is False
    states = pids(access)
    result = ripcord("restore-db", "--host", "sandbox", "--backup", name, "--yes")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the engine is trading" in result.stderr and "nothing was stopped" in result.stderr
    assert pids(access) == states
    for host in ENGINES:
        assert access.health(host, "titan-execution")["halted"] is False


def test_the_playbook_itself_refuses_a_trading_fleet_before_anything_changes(ripcord, access, folder):
    """`invoke play` of restore-db.yml has no preflight: the playbook's own guard stops it."""
    name = backup(ripcord, access, folder)
    states, before = pids(access), set(manifests(access, folder))
    result = ripcord("play", str(REPO / "playbooks" / "restore-db.yml"), "--host", "sandbox",
                     "-e", f"restore_backup={name}", "--yes")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "titan-execution on exec-1 may be trading" in result.stdout, result.stdout
    assert pids(access) == states and set(manifests(access, folder)) == before

SCHEMA = """SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type
              FROM information_schema.columns WHERE table_schema = 'public'
            UNION ALL SELECT 'index ' || indexname || ' ' || indexdef FROM pg_indexes
              WHERE schemaname = 'public' ORDER BY 1"""


def test_a_migration_up_then_down_leaves_the_schema_as_before(ripcord, psql):
    def schema():
        return [line for line in psql(SCHEMA).splitlines() if "schema_migrations" not in line]

    before = schema()
    up = ripcord("migrate-db", "--up", "--host", "db", "--yes")
    assert up.returncode == 0, up.stdout + up.stderr
    assert psql("SELECT version FROM schema_migrations ORDER BY 1").split() == ["1", "2"]
    assert any("orders_symbol_created_idx" in line for line in schema())
    down = ripcord("migrate-db", "--down", "--to", "0", "--host", "db", "--yes")
    assert down.returncode == 0, down.stdout + down.stderr
    assert schema() == before
    assert psql("SELECT count(*) FROM schema_migrations").strip() == "0"


def test_migrate_down_reverts_the_newest_only(ripcord, psql):
    assert ripcord("migrate-db", "--up", "--host", "db", "--yes").returncode == 0
    down = ripcord("migrate-db", "--down", "--host", "db", "--yes")
    assert down.returncode == 0, down.stdout + down.stderr
    assert psql("SELECT version FROM schema_migrations ORDER BY 1").split() == ["1"]
    assert ripcord("migrate-db", "--down", "--to", "0", "--host", "db", "--yes").returncode == 0


def test_restore_db_without_a_backup_name_is_invalid_input(ripcord):
    result = ripcord("restore-db", "--host", "sandbox", "--yes")
    assert result.returncode == 2 and "--backup NAME is required" in result.stderr


def test_restore_db_of_the_database_host_alone_is_refused(ripcord):
    result = ripcord("restore-db", "--host", "db", "--backup", "titan-x", "--yes")
    assert result.returncode == 2 and "leaves out exec-1, exec-2" in result.stderr, result.stderr


def test_check_mode_changes_nothing(ripcord, access, folder, psql, halted):
    name = backup(ripcord, access, folder)
    states, before, schema = pids(access), set(manifests(access, folder)), psql(SCHEMA)
    result = ripcord("restore-db", "--host", "sandbox", "--backup", name, "--check", "--json", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["ok"] is True
    assert "would stop titan-execution" in result.stdout, result.stdout
    made = ripcord("backup-db", "--host", "db", "--check")
    assert made.returncode == 0, made.stdout + made.stderr
    migrated = ripcord("migrate-db", "--up", "--host", "db", "--check", "-v", "--yes")
    assert migrated.returncode == 0 and "would up 0001_orders_symbol_index" in migrated.stdout, (
        migrated.stdout + migrated.stderr)
    assert pids(access) == states and set(manifests(access, folder)) == before
    assert psql(SCHEMA) == schema
