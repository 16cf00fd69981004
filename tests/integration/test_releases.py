"""deploy, rollback, the split-version refusal of resume, and diagnostics, end to end on the
session fleet, as an operator runs them.

Outcomes are read through other paths than ripcord's report: `readlink current` and `cat` of
last_known_good.json over the system ssh client, curl of every service's /health, supervisorctl's
pids, and the diagnostics bundle opened with tarfile. The releases a test needs are made on the
hosts by hand (a copy of the fleet's release; a bad one whose code exits at start), and the fleet
ends on its original release, trading, with them removed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO, reset_fleet

ENGINES = ("exec-1", "exec-2")
GOOD, BAD = "1.4.3-pytest", "9.9.9-pytest-bad"
SECRET_KEY = re.compile(r"secret|passw|token|key|credential", re.IGNORECASE)


def original(access) -> str:
    return (REPO / "sandbox" / "titan" / "VERSION").read_text().strip()


def read(access, host: str) -> dict:
    """One host as ssh and curl see it: the link, last_known_good.json, the .env's sha256,
    supervisorctl's states and pids, and every service's /health version."""
    out = access.ssh(host, 'cd "$TITAN_HOME" && readlink current; echo @@; '
                           "cat state/last_known_good.json 2>/dev/null; echo @@; "
                           "sha256sum < .env; echo @@; supervisorctl status", check=False).stdout
    link, lkg, digest, status = out.split("@@\n")
    versions = {}
    for service in access.plan.host(host).services:
        if service.health_url:
            try:
                versions[service.name] = access.health(host, service.name)["version"]
            except AssertionError:  # not answering (restarting)
                versions[service.name] = None
    return {"link": link.strip(), "lkg": json.loads(lkg) if lkg.strip() else None,
            "env_sha256": digest.split()[0], "versions": versions,
            "pids": {w[0]: " ".join(w[1:4]) for w in map(str.split, status.splitlines()) if len(w) > 3}}


def fleet_state(access) -> dict[str, dict]:
    """read() of every host at once."""
    with ThreadPoolExecutor(max_workers=len(access.plan.hosts)) as pool:
        return dict(zip([h.name for h in access.plan.hosts],
                        pool.map(lambda h: read(access, h.name), access.plan.hosts), strict=True))


def on_release(access, version: str) -> dict[str, dict]:
    """Every host links releases/<version> and every service reports it (waited for)."""
    def there() -> dict | None:
        state = fleet_state(access)
        return state if all(s["link"] == f"releases/{version}" and set(s["versions"].values())
                            <= {version} for s in state.values()) else None
    return access.wait_for(there, timeout=15, interval=0.5, what=f"the whole fleet on {version}")


def everywhere(access, command: str, check: bool = True) -> None:
    """One command on every host at once, over the system ssh client."""
    with ThreadPoolExecutor(max_workers=len(access.plan.hosts)) as pool:
        list(pool.map(lambda h: access.ssh(h.name, command, check=check), access.plan.hosts))


@pytest.fixture(scope="module")
def invoke(fleet, tmp_path_factory):
    """invoke(task, *args) as the `ripcord` fixture runs it, for this module's fixture too."""
    home = tmp_path_factory.mktemp("releases")

    def run(task: str, *args: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "invoke", "--search-root", str(REPO), task,
                "--inventory", str(fleet.inventory), *args]
        env = {**os.environ, "RIPCORD_JOURNAL": str(home / "journal.jsonl"),
               "RIPCORD_APPROVALS": str(home / "approvals"), "RIPCORD_OPERATOR": "alice",
               **(extra_env or {})}
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env,
                              stdin=subprocess.DEVNULL)
    return run


@pytest.fixture(scope="module")
def releases(access, invoke):
    """Two more releases on every host (GOOD: a copy; BAD: its code exits at start), the fleet
    halted; afterwards: back on the original release (by hand, every host at once), the releases
    and last_known_good.json gone, trading (reset_fleet reads that back)."""
    version = original(access)
    everywhere(access, f'cd "$TITAN_HOME/releases" && rm -rf {GOOD} {BAD} && '
                       f"cp -a {version} {GOOD} && echo {GOOD} > {GOOD}/VERSION && "
                       f"cp -a {version} {BAD} && echo {BAD} > {BAD}/VERSION && "
                       f"sed -i '1i raise SystemExit(3)' {BAD}/common.py")
    result = invoke("halt", "--host", "sandbox", "--reason", "pytest releases")
    assert result.returncode == 0 or "HTTP 429" in result.stdout, result.stdout + result.stderr
    try:
        yield
    finally:  # every host back on the original release at once, by hand
        everywhere(access, f'cd "$TITAN_HOME"; rm -rf releases/{GOOD} releases/{BAD} '
                           f'state/last_known_good.json; [ "$(readlink current)" = releases/{version} ] || '
                           f"{{ ln -sfn releases/{version} current && supervisorctl restart all; }}",
                   check=False)
        try:
            on_release(access, version)
        finally:
            reset_fleet(access)


# --- diagnostics ------------------------------------------------------------------------------

def test_a_diagnostics_bundle_holds_what_it_claims_and_no_secret(access, ripcord, tmp_path):
    secrets = {v for h in access.plan.hosts for k, v in access.env(h.name).items()
               if SECRET_KEY.search(k) and v}
    assert len(secrets) >= 4  # the hmac secret, the db password, each host's exchange key
    state, planted = tmp_path / "state", '"$TITAN_HOME/logs/pytest-planted.log"'
    # a service that logged its secrets: the bundle takes the log, never the values
    subprocess.run([*access.ssh_argv("exec-1"), f"cat > {planted}"], input="\n".join(secrets) + "\n",
                   text=True, check=True, timeout=30)
    try:
        result = ripcord("diagnostics", "--host", "sandbox", "--lines", "50",
                         extra_env={"RIPCORD_STATE_DIR": str(state)})
    finally:
        access.ssh("exec-1", f"rm -f {planted}")
    assert result.returncode == 0, result.stdout + result.stderr
    path = Path(re.search(r"bundle: (\S+\.tar\.gz)", result.stdout)[1])
    assert path.parent == state / "diagnostics" and oct(path.stat().st_mode & 0o777) == "0o600"
    with tarfile.open(path) as tar:
        members = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()}
    for host in access.plan.hosts:
        for name in ("system.txt", "sockets.txt", "services.txt", "release.txt", "health.json",
                     *(f"logs/{s.name}.log" for s in host.services)):
            assert f"{host.name}/{name}" in members, (host.name, name, sorted(members))
        services = members[f"{host.name}/services.txt"].decode()
        assert all(f"{s.name}: RUNNING" in services for s in host.services), services
        assert f"releases/{original(access)}" in members[f"{host.name}/release.txt"].decode()
        assert b"load average" in members[f"{host.name}/system.txt"]
        assert f":{host.ssh_port}" in members[f"{host.name}/sockets.txt"].decode()
    database = members["db-1/database.txt"].decode()
    assert "PostgreSQL" in database and '"usename": "titan"' in database, database
    assert json.loads(members["db-1/nats-jsz.json"])["streams"] >= 1
    assert all(f"{h.name}:" in members["summary.txt"].decode() for h in access.plan.hosts)
    for secret in secrets:
        assert secret not in result.stdout + result.stderr
        leaked = [name for name, data in members.items() if secret.encode() in data]
        assert not leaked, f"a secret of the fleet is in {leaked}"
    assert b"TITAN_DB_PASSWORD=********" in members["exec-1/env.txt"]
    assert b"********" in members["exec-1/logs/pytest-planted.log"]


# --- releases ----------------------------------------------------------------------------------

def test_deploy_refuses_an_unknown_version_and_a_trading_fleet_before_anything_stops(access, ripcord):
    before = fleet_state(access)
    result = ripcord("deploy", "--version", "0.0.0-nowhere", "--host", "sandbox", "--yes")
    assert result.returncode == 2, result.stdout + result.stderr
    assert ("release 0.0.0-nowhere is not on core-1, db-1, exec-1, exec-2" in result.stderr
            and "exec-1: the engine is trading" in result.stderr), result.stderr
    result = ripcord("deploy", "--version", original(access), "--host", "exec-1", "--yes")
    assert result.returncode == 2 and "leaves out exec-2, of the same role" in result.stderr, result.stderr
    assert fleet_state(access) == before  # nothing stopped, switched or written


def test_a_good_release_switches_every_host_and_writes_last_known_good(access, ripcord, releases):
    result = ripcord("deploy", "--version", GOOD, "--host", "sandbox", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    for host, state in on_release(access, GOOD).items():
        record = state["lkg"]
        env = f"{access.plan.host(host).titan_home}/.env"
        assert record["version"] == GOOD and record["config_checksums"][env] == state["env_sha256"], record
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["time"]), record


def test_a_bad_release_ends_on_the_old_release_everywhere(access, ripcord, releases):
    before = fleet_state(access)
    result = ripcord("deploy", "--version", BAD, "--host", "sandbox", "--yes")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"release {BAD} failed on core-1" in result.stdout, result.stdout
    for host, state in on_release(access, GOOD).items():
        assert all(s.split()[0] == "RUNNING" for s in state["pids"].values()), (host, state["pids"])
        assert state["lkg"] == before[host]["lkg"]  # written only when the whole fleet passes


def test_a_split_fleet_blocks_resume_naming_hosts_and_versions(access, ripcord, releases):
    version = original(access)
    access.ssh("exec-2", f'cd "$TITAN_HOME" && ln -sfn releases/{version} current && '
                         "supervisorctl restart all")
    access.wait_for(lambda: set(read(access, "exec-2")["versions"].values()) == {version},
                    timeout=15, what="exec-2 on the old release")
    result = ripcord("resume", "--host", "sandbox", "--yes")
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"exec-1 {GOOD}, exec-2 {version}" in result.stderr, result.stderr
    for host in ENGINES:  # nothing was resumed
        assert access.health(host, "titan-execution")["halted"] is True
        assert access.ssh(host, 'test -e "$TITAN_HOME/system.halt"', check=False).returncode == 0
    checked = ripcord("verify", "--host", "sandbox", "--checks", "release")
    assert checked.returncode == 1 and f"exec-1 {GOOD}, exec-2 {version}" in checked.stdout, checked.stdout


def test_rollback_brings_back_the_last_known_good(access, ripcord, releases):
    untouched = read(access, "core-1")["pids"]
    result = ripcord("rollback", "--host", "sandbox", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    state = on_release(access, GOOD)
    assert state["core-1"]["pids"] == untouched  # already on it: not restarted
