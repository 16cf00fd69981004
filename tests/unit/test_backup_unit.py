"""The database procedures' logic that needs no database: backup names, the manifest's row counts
read from pg_restore's output, retention, the migration plan and the migration files' rules."""

from __future__ import annotations

import re
import subprocess

import pytest

from ripcord.errors import InputError
from ripcord.modules.backup import backup_name, expired, migrations, parse_counts, plan
from ripcord.paths import data_dir

PG_RESTORE_OUT = """16.4 (Debian 16.4-1)
@@
3\tCOPY public.orders (id, symbol) FROM stdin;
0\tCOPY public.fills (id) FROM stdin;
2\tCOPY "Odd Schema"."Tab""le" (a) FROM stdin;
"""


def test_counts_come_from_the_copy_blocks_with_quoted_names_unquoted():
    version, tables = parse_counts(PG_RESTORE_OUT)
    assert version == "16.4 (Debian 16.4-1)"
    assert tables == {"public.orders": 3, "public.fills": 0, 'Odd Schema.Tab"le': 2}


def test_a_pg_restore_that_failed_gives_no_counts():
    assert parse_counts("16.4\n@@\n3\tCOPY public.orders (id) FROM stdin;\n@@failed\n") == ("", {})


def test_the_shell_counts_rows_one_line_each_as_copy_writes_them():
    """manifest_script's awk over a COPY stream (pg_restore replaced by a shell function)."""
    from ripcord.modules.backup import manifest_script

    fake = ("pg_restore() { if [ \"$1\" = -l ]; then echo ';     Dumped from database version: 16.4';"
            " else printf 'SET x;\\nCOPY public.orders (id, note) FROM stdin;\\n1\\ta\\\\nb\\n2\\tc\\n"
            "\\\\.\\n\\nCOPY public.empty (id) FROM stdin;\\n\\\\.\\n'; fi; }; ")
    out = subprocess.run(["sh", "-c", fake + manifest_script("/x.dump")], capture_output=True,
                         text=True, check=True).stdout
    assert parse_counts(out) == ("16.4", {"public.orders": 2, "public.empty": 0})


@pytest.mark.parametrize("given, name", [("titan-20261206T112600Z", "titan-20261206T112600Z"),
                                         ("titan-1.dump", "titan-1"),
                                         ("titan-1.manifest.json", "titan-1")])
def test_backup_names_as_the_operator_may_give_them(given, name):
    assert backup_name(given) == name


@pytest.mark.parametrize("bad", ["", "../etc/passwd", "a/b", "-rf", "a b", "x..y"])
def test_a_path_or_odd_name_is_not_a_backup_name(bad):
    with pytest.raises(InputError, match="is not a backup name"):
        backup_name(bad)


def test_retention_removes_the_oldest_beyond_the_count():
    names = ["titan-20260103T000000Z", "titan-20260101T000000Z", "titan-20260102T000000Z"]
    assert expired(names, 2) == ["titan-20260101T000000Z"]
    assert expired(names, 3) == [] and expired(names, 0) == []


KNOWN = {1: {}, 2: {}, 3: {}}


@pytest.mark.parametrize("applied, direction, to, steps", [
    ([], "up", None, [(1, "up"), (2, "up"), (3, "up")]),
    ([1], "up", 2, [(2, "up")]),
    ([1, 2, 3], "up", None, []),
    ([1, 2, 3], "down", None, [(3, "down")]),
    ([1, 2, 3], "down", 1, [(3, "down"), (2, "down")]),
    ([1, 2, 3], "down", 0, [(3, "down"), (2, "down"), (1, "down")]),
    ([1], "down", None, [(1, "down")]),
    ([], "down", None, []),
])
def test_the_migration_plan(applied, direction, to, steps):
    assert plan(KNOWN, applied, direction, to) == steps


def test_the_shipped_migrations_each_have_up_and_down():
    found = migrations(data_dir("migrations"))
    assert sorted(found) == list(range(1, len(found) + 1))
    assert all(entry["up"].strip() and entry["down"].strip() for entry in found.values())


def test_a_migration_without_its_down_is_invalid(tmp_path):
    (tmp_path / "0001_x.up.sql").write_text("SELECT 1;")
    with pytest.raises(InputError, match="needs both"):
        migrations(tmp_path)
    (tmp_path / "1_bad.sql").write_text("")
    with pytest.raises(InputError, match="not a migration name"):
        migrations(tmp_path)


def test_the_two_person_rule_tells_a_restore_from_a_backup():
    """Guarding restore-db must not make every backup-db wait for a second person: a backup
    replaces nothing; the restore's own act (backup: restore) is what is guarded."""
    from ripcord import procedures

    restore = procedures.procedure_acts("restore-db")
    assert ("backup", "restore") in restore and ("backup", "create") not in restore
    assert not procedures.procedure_acts("backup-db") & restore
    assert procedures.procedure_acts("migrate-db") == {("migrate", "*")}


FLEET = """all:
  hosts:
    db-1: {ansible_host: 127.0.0.1, services: [postgresql, nats]}
    exec-1: {ansible_host: 127.0.0.1, services: [titan-execution]}
"""


@pytest.mark.parametrize("procedure, pattern, extra, error", [
    ("backup-db", "exec-1", {}, "--host exec-1 selects no host that runs postgresql"),
    ("migrate-db", "exec-1", {}, "selects no host that runs postgresql"),
    ("restore-db", "db-1", {"restore_backup": "titan-1"}, "--host db-1 leaves out exec-1"),
    ("restore-db", "all", {"restore_backup": "../etc/x"}, "is not a backup name"),
    ("migrate-db", "db-1", {"migrate_direction": "up", "migrate_to": 99}, "--to 99: no such migration"),
    ("migrate-db", "db-1", {"migrate_direction": "up", "migrate_to": 0}, "--to 0: no such migration"),
])
def test_preflight_refuses_before_any_host_is_read(tmp_path, monkeypatch, procedure, pattern, extra,
                                                   error):
    from ripcord.inventory import Inventory
    from ripcord.modules import backup

    path = tmp_path / "fleet.yml"
    path.write_text(FLEET)
    monkeypatch.setattr(backup, "_read_fleet", lambda *a: pytest.fail("a host was read"))
    with pytest.raises(InputError, match=re.escape(error)):
        backup.preflight(procedure, Inventory.load([path]), pattern, extra)


def test_preflight_lets_a_known_migration_target_through(tmp_path):
    from ripcord.inventory import Inventory
    from ripcord.modules import backup

    path = tmp_path / "fleet.yml"
    path.write_text(FLEET)
    for extra in ({"migrate_direction": "up", "migrate_to": 1},
                  {"migrate_direction": "down", "migrate_to": 0},
                  {"migrate_direction": "down", "migrate_to": ""}):
        backup.preflight("migrate-db", Inventory.load([path]), "db-1", extra)
