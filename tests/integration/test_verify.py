"""Verification on real hosts: over the run's own connections, after plays, and `invoke verify`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import ghost_inventory

from ripcord.templating import Templar, resolve_vars
from ripcord.verify import RipcordBackend, run_checks

REPO = Path(__file__).resolve().parents[2]
EXECS = ("exec-1", "exec-2")


@pytest.fixture
def hostvars(inventory):
    return {h: resolve_vars(Templar(), dict(inventory.host_vars(h))) for h in inventory.hosts}


@pytest.fixture(autouse=True)
def trading_afterwards(access):
    yield
    for host in EXECS:
        access.ssh(host, 'rm -f "$TITAN_HOME/system.halt"')


def invoke(fleet, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), *args,
                           "--inventory", str(fleet.inventory)],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          env={**os.environ, "RIPCORD_JOURNAL": str(tmp_path / "journal.jsonl")})


def test_checks_reuse_the_open_connections(fleet, connect, hostvars):
    """No new SSH login while checks run: they go over the connections the run already has."""
    connections = {h.name: connect(h.name) for h in fleet.plan.hosts}
    logs = [fleet.plan.control_dir / "logs" / f"sshd-{h}.log" for h in connections]
    before = sum(log.read_text().count("Accepted publickey") for log in logs)
    report = run_checks("test_health.py::test_every_service_is_healthy", connections, hostvars)
    after = sum(log.read_text().count("Accepted publickey") for log in logs)
    assert report.summary()["passed"] == len(connections) and not report.failed
    assert after == before
    plugin_backend = RipcordBackend(connections["exec-1"], hostvars["exec-1"])
    assert plugin_backend.run("echo $RIPCORD_HOST").stdout.strip() == "exec-1"


def test_retry_waits_until_the_check_passes(access, connect, hostvars):
    """`retry: 30s` as Goss's --retry-timeout: the halt file appears only after the first try
    failed, and the check waits for it."""
    halt_file = access.plan.host("exec-1").halt_file
    late = threading.Timer(1.5, lambda: halt_file.write_text("retry test\n"))
    started = time.time()
    late.start()
    try:
        report = run_checks("halt and situational", {"exec-1": connect("exec-1")},
                            {"exec-1": hostvars["exec-1"]}, retry_s=10)
    finally:  # the timer never outlives the test, whatever happened
        late.cancel()
        late.join()
    assert not report.failed and report.attempts > 1
    appeared = float(access.ssh("exec-1", 'stat -c %.9Y "$TITAN_HOME/system.halt"').stdout)
    assert appeared > started  # the file this test wrote late, not one left from before
    without = run_checks("halt and situational", {"exec-2": connect("exec-2")},
                         {"exec-2": hostvars["exec-2"]}, retry_s=1)
    halted = next(r for r in without.results if r.id == "test_halt.py::test_engine_is_halted")
    assert halted.outcome == "failed" and "no halt file" in halted.message


def test_invoke_verify_passes_on_a_healthy_fleet_and_writes_junit(fleet, tmp_path):
    junit = tmp_path / "checks.xml"
    result = invoke(fleet, "verify", "--host", "sandbox", "--junit", str(junit), "--json",
                    tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["checks"]["failed"] == 0
    assert report["checks"]["passed"] > 0
    for check in report["checks"]["results"]:
        assert {"host", "id", "outcome", "message", "duration"} <= set(check)
    assert 'failures="0"' in junit.read_text()


def test_invoke_verify_fails_with_the_operators_message(fleet, access, tmp_path):
    access.ssh("core-1", "supervisorctl stop titan-console")
    try:
        result = invoke(fleet, "verify", "--host", "sandbox", "--checks", "health",
                        tmp_path=tmp_path)
    finally:
        access.ssh("core-1", "supervisorctl start titan-console")
    assert result.returncode == 1
    assert "unhealthy on core-1: titan-console (no answer)" in result.stdout
    # the hosts' answers are fetched in parallel: each failure stays with its own host
    assert [line for line in result.stdout.splitlines() if "unhealthy on" in line and
            "core-1" not in line] == []


def test_plain_testinfra_runs_the_checks_over_its_own_ssh(fleet, access, tmp_path):
    """`pytest checks/ --hosts=...` without ripcord: testinfra's ssh backend, each host's
    variables found in the inventory (RIPCORD_INVENTORY) by its address and port."""
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n  IdentityFile {fleet.plan.client_key}\n"
                      f"  UserKnownHostsFile {fleet.plan.known_hosts}\n"
                      "  StrictHostKeyChecking yes\n  BatchMode yes\n")
    hosts = ",".join(f"ssh://{fleet.user}@127.0.0.1:{h.ssh_port}" for h in fleet.plan.hosts)

    def pytest_checks(more: str = "") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "--tb=line", str(REPO / "checks/test_health.py"),
                               f"--hosts={hosts}{more}",
                               f"--ssh-config={config}"],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path,
                              env={**os.environ, "RIPCORD_INVENTORY": str(fleet.inventory)})

    healthy = pytest_checks()
    assert healthy.returncode == 0, healthy.stdout[-2000:]
    assert f"{len(fleet.plan.hosts)} passed" in healthy.stdout
    access.ssh("core-1", "supervisorctl stop titan-console")
    try:  # and a host the inventory does not know: its checks error, the others' do not
        broken = pytest_checks(more=f",ssh://{fleet.user}@127.0.0.2:1")
    finally:
        access.ssh("core-1", "supervisorctl start titan-console")
    failures = [line for line in broken.stdout.splitlines()  # --tb=line: "file:line: message"
                if line.startswith(str(REPO / "checks")) and "unhealthy on" in line]
    assert broken.returncode == 1, broken.stdout[-2000:]
    assert f"1 failed, {len(fleet.plan.hosts) - 1} passed, 1 error" in broken.stdout
    assert "no inventory host at 127.0.0.2:1" in broken.stdout
    assert len(failures) == 1 and failures[0].endswith("titan-console (no answer)")  # core-1's


def test_a_play_fails_when_its_verify_fails(fleet, tmp_path):
    playbook = tmp_path / "halt-one.yml"
    playbook.write_text("""
- hosts: exec
  tasks:
    - name: halt exec-1 only
      file: {path: "{{ titan_home }}/system.halt", state: touch}
      when: inventory_hostname == 'exec-1'
    - name: look at the engine
      command: "true"
  verify:
    - {checks: "halt and situational", retry: 2s}
""")
    result = invoke(fleet, "play", str(playbook), "--host", "exec", "--json", tmp_path=tmp_path)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["hosts"]["exec-1"]["ok"] is True
    assert report["hosts"]["exec-2"]["ok"] is False
    failed = [(c["host"], c["id"]) for c in report["checks"]["results"] if c["outcome"] == "failed"]
    assert ("exec-2", "test_halt.py::test_engine_is_halted") in failed
    assert {host for host, _ in failed} == {"exec-2"}


def test_invoke_verify_reports_an_unreachable_host_and_checks_the_others(fleet, tmp_path):
    ghost = ghost_inventory(fleet, tmp_path)
    result = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), "verify",
                             "--host", "exec", "--checks", "health", "--json",
                             "--inventory", str(fleet.inventory), "--inventory", str(ghost)],
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                            env={**os.environ, "RIPCORD_JOURNAL": str(tmp_path / "j.jsonl")})
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["hosts"]["exec-ghost"]["unreachable"] is True
    assert report["hosts"]["exec-1"]["ok"] is True
    assert {c["host"] for c in report["checks"]["results"]} == {"exec-1", "exec-2"}
