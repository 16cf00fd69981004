"""Releases: each host's `current` link points at a release that exists, every release service
reports that version in /health (restarted since the switch), and the hosts of one role run one
release (Knight Capital, 2012: one server of eight on old code). `invoke deploy` and `rollback`
(ripcord/modules/release.py) run these on each host they switch and on the fleet afterwards.
"""

import pytest

from ripcord.modules.release import release_services, role_of

pytestmark = [pytest.mark.release, pytest.mark.deploy, pytest.mark.rollback, pytest.mark.resume,
              pytest.mark.scenario19]  # 004 #19 Configuration Drift: "version conflicts"


def _link(host, hostvars) -> tuple[str | None, bool]:
    """The release current names, and whether that directory exists."""
    current = f"{hostvars['titan_home']}/current"
    out = host.run("readlink %s && test -d %s/", current, current)
    target = out.stdout.strip().rstrip("/").rpartition("/")[2] or None
    return target, out.rc == 0


@pytest.fixture(scope="session")
def releases(read_all):
    """Every host of the run: (role, (release linked, it exists)), read at once, for all three
    checks (one read a host)."""
    return read_all(lambda host, hostvars: (role_of(hostvars), _link(host, hostvars)
                                            if hostvars.get("titan_home") else (None, False)))


def test_current_points_at_an_existing_release(host, hostvars, releases):
    if not hostvars.get("titan_home"):
        pytest.skip("no titan_home in the inventory")
    version, exists = releases.of(host)[1]
    where = f"{hostvars['titan_home']}/current on {host.backend.hostname}"
    assert version, f"{where} is not a link to a release"
    assert exists, f"{where} points at releases/{version}, which does not exist"


def test_every_release_service_reports_the_links_version(host, hostvars, health, releases):
    if not hostvars.get("titan_home"):
        pytest.skip("no titan_home in the inventory")
    version, _ = releases.of(host)[1]
    urls = hostvars.get("health_urls") or {}
    reported = {s: (health(s) or {}).get("version") for s in release_services(hostvars) if s in urls}
    wrong = {s: v for s, v in reported.items() if v is not None and v != version}  # down: health's
    assert not wrong, (f"{host.backend.hostname} links releases/{version}, but " + ", ".join(
        f"{s} reports {v}" for s, v in sorted(wrong.items())) + ": restart them")


def test_one_release_per_role(host, hostvars, releases):
    role = role_of(hostvars)
    seen = {h.backend.hostname: releases.of(h)[1][0] for h in releases.hosts
            if releases.of(h)[0] == role and releases.of(h)[1][0]}
    assert len(set(seen.values())) <= 1, (f"split release in role {role}: " + ", ".join(
        f"{h} {v}" for h, v in sorted(seen.items())))
