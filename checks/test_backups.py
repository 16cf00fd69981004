"""Backups: the newest manifest-backed backup is recent, intact and holds the rows its manifest
says (scenario 16: missing backup, failed job, age > 24 h). The manifest is written by `invoke
backup-db` (ripcord/modules/backup.py): a dump without one proves nothing and is not counted.
"""

import calendar
import json
import time

import pytest

from ripcord.modules.backup import DUMP, MANIFEST, NAME, manifest_script, parse_counts

pytestmark = [pytest.mark.backups, pytest.mark.restore, pytest.mark.audit, pytest.mark.scenario16,
              pytest.mark.scenario04]


def test_newest_backup_is_recent_intact_and_complete(host, hostvars, setting):
    if "postgresql" not in (hostvars.get("services") or []):
        pytest.skip("no database on this host")
    max_age_h = setting("backup_max_age_h", 24.0)
    folder = hostvars.get("backup_dir") or f"{hostvars['titan_home']}/backups"
    where = f"{folder} on {host.backend.hostname}"
    out = host.run("date +%%s; find %s -maxdepth 1 -type f -name '*%s' -printf '%%T@ %%f\\n' | "
                   "sort -n | tail -n 1", folder, MANIFEST)
    lines = out.stdout.splitlines()
    assert out.rc == 0 and lines, f"cannot list {where}: {out.stderr.strip()}"
    assert len(lines) > 1, f"no backup with a manifest in {where} (invoke backup-db makes one)"
    name = lines[1].split(" ", 1)[1].removesuffix(MANIFEST)
    assert NAME.fullmatch(name), f"{where}: {name!r} is not a backup name"
    out = host.run("cat -- %s", f"{folder}/{name}{MANIFEST}")
    try:
        record = json.loads(out.stdout)
    except ValueError:
        record = None
    assert out.rc == 0 and isinstance(record, dict), f"{where}: {name}{MANIFEST} is not readable JSON"

    created = calendar.timegm(time.strptime(str(record.get("created")), "%Y-%m-%dT%H:%M:%SZ"))
    age_h = (float(lines[0]) - created) / 3600
    assert age_h < max_age_h, (f"newest backup {name} in {where} is {age_h:.1f} h old: the limit "
                               f"is {max_age_h:g} h")

    dump = f"{folder}/{name}{DUMP}"
    out = host.run("sha256sum < %s", dump)
    assert out.rc == 0, f"the newest backup's dump {dump} on {host.backend.hostname} is missing"
    assert out.stdout.split()[0] == record.get("sha256"), (
        f"{dump} on {host.backend.hostname} does not match its manifest's sha256: corrupt or changed")

    out = host.run(manifest_script(dump))
    _, tables = parse_counts(out.stdout)
    assert out.rc == 0 and tables, f"cannot read the rows of {dump}: {out.stderr.strip()[:200]}"
    assert tables == record.get("tables"), (f"{dump}: the rows in the dump differ from its "
                                            f"manifest's: {tables} != {record.get('tables')}")
