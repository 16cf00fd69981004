"""Backups: the newest database backup is recent and not empty (scenario 16: age > 24 h).
"""

import pytest

pytestmark = [pytest.mark.backups, pytest.mark.restore, pytest.mark.audit, pytest.mark.scenario16,
              pytest.mark.scenario04]


def test_newest_backup_is_recent(host, hostvars, setting):
    if "postgresql" not in (hostvars.get("services") or []):
        pytest.skip("no database on this host")
    max_age_h = setting("backup_max_age_h", 24.0)
    folder = hostvars.get("backup_dir") or f"{hostvars['titan_home']}/backups"
    out = host.run("date +%%s; find %s -maxdepth 1 -type f -printf '%%T@ %%s %%f\\n' | sort -n | "
                   "tail -n 1", folder)
    lines = out.stdout.splitlines()
    assert out.rc == 0 and lines, (f"cannot list {folder} on {host.backend.hostname}: "
                                   f"{out.stderr.strip()}")
    assert len(lines) > 1, f"no backup in {folder} on {host.backend.hostname}"
    mtime, size, name = lines[1].split(" ", 2)
    age_h = (float(lines[0]) - float(mtime)) / 3600
    assert age_h < max_age_h, (f"newest backup {folder}/{name} on {host.backend.hostname} is "
                               f"{age_h:.1f} h old: the limit is {max_age_h:g} h")
    assert int(size) > 0, f"newest backup {folder}/{name} on {host.backend.hostname} is empty"
