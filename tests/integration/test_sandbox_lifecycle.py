"""up is idempotent and recovers from a crash; down leaves no process and no port behind.

These use fleets of their own, not the session fleet: named after it (RIPCORD_TEST_FLEET) and on
ports of this suite's range (RIPCORD_TEST_BASE_PORT + 50..99), so suites side by side never meet.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import TEST_BASE_PORT, TEST_FLEET, suite_port

from ripcord.errors import SandboxError
from ripcord.sandbox import procs, provision
from ripcord.sandbox.fleet import Fleet
from ripcord.sandbox.plan import state_base

REPO = Path(__file__).resolve().parents[2]


def make_fleet(name: str, base_port: int, hosts: int) -> Fleet:
    root = state_base() / f"{TEST_FLEET}-{name}"
    return Fleet(root, base_port=base_port, hosts=hosts, inventory=root / "inventory.yml")


def assert_nothing_left(fleet: Fleet) -> None:
    listening = [p for p in fleet.plan.ports() if procs.listening(p)]
    assert listening == [], f"ports still listening after down: {listening}"
    left = procs.fleet_procs(fleet.root)
    assert left == [], f"processes left after down: {[p.cmdline[:80] for p in left]}"


def ssh_ok(fleet: Fleet, host: str) -> bool:
    argv = ["ssh", "-i", str(fleet.plan.client_key), "-p", str(fleet.plan.host(host).ssh_port),
            "-o", f"UserKnownHostsFile={fleet.plan.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", f"{fleet.user}@127.0.0.1", "true"]
    return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0


def test_up_is_idempotent_recovers_from_a_crash_and_down_cleans_up():
    fleet = make_fleet("lifecycle", suite_port(50), hosts=3)
    try:
        fleet.up()
        control = fleet.control_pid()
        assert control and ssh_ok(fleet, "exec-1")

        again = make_fleet("lifecycle", suite_port(50), hosts=3)
        again.up()
        assert again.control_pid() == control, "up on a running fleet must be a no-op"

        # Growing a running fleet adds a host, whose new exchange key the exchange accepts.
        fleet = make_fleet("lifecycle", suite_port(50), hosts=4)
        fleet.up()
        assert fleet.control_pid() == control
        assert ssh_ok(fleet, "exec-2")
        key = provision.read_env(fleet.plan.host("exec-2").titan_home / ".env")["EXCHANGE_API_KEY"]
        request = urllib.request.Request(fleet.plan.exchange_url + "/api/v1/positions",
                                         headers={"X-API-KEY": key})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

        # Crash: the data centre's supervisord and one host's supervisord die hard.
        host_supervisord = [p for p in procs.fleet_procs(fleet.root)
                            if "supervisord" in p.cmdline and "exec-1" in p.cmdline]
        os.kill(control, signal.SIGKILL)
        for proc in host_supervisord:
            os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while fleet.control_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)  # wait for the state (the pid file's process gone), with a deadline
        assert fleet.control_pid() is None

        fleet.up()  # recovers: orphans stopped, stale pid files replaced, all healthy again
        assert fleet.control_pid() not in (None, control)
        assert fleet.unhealthy() == []
        assert ssh_ok(fleet, "exec-1")

        fleet.down()
        assert_nothing_left(fleet)
        assert fleet.root.exists(), "down without --purge keeps the fleet's data"
    finally:
        fleet.down(purge=True)
    assert not fleet.root.exists()


def test_up_refuses_ports_that_are_taken_and_names_them():
    import socket

    fleet = make_fleet("busy", suite_port(50), hosts=3)
    try:
        with socket.socket() as blocker:  # as the fleet's own check binds (TIME_WAIT is free)
            blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            blocker.bind(("127.0.0.1", suite_port(53)))
            blocker.listen()
            with pytest.raises(SandboxError, match=str(suite_port(53))):
                fleet.up()
    finally:
        fleet.down(purge=True)
    assert not fleet.root.exists()


@pytest.mark.scale
def test_a_fleet_of_50_hosts_trades_halts_verifies_resumes_and_goes_down_cleanly(tmp_path):
    # 510 ports, more than the suite's 100: taken 2000 above its base (below the kernel's
    # ephemeral ports, from 32768, which a client's connection may hold at any time)
    fleet = make_fleet("scale", TEST_BASE_PORT + 2000, hosts=50)
    try:
        fleet.up(timeout=240)
        assert len(fleet.plan.hosts) == 50
        # healthy at once, each engine with its database and exchange (a loaded machine may
        # leave one degraded for a moment: its health reads the database with a 1 s timeout)
        wait_for(lambda: all_healthy(fleet), 60, "every service healthy")
        assert ssh_ok(fleet, "exec-48")
        engines = [h.name for h in fleet.plan.by_role("exec")]
        assert len(engines) == 48
        # It trades: every engine books in PostgreSQL (48 engines' pools and the checks fit
        # its connection slots) and places orders, as each engine's own /health says.
        wait_for(lambda: all(engine(fleet, h)["db_connected"] and engine(fleet, h)["last_order_ts"]
                             for h in engines), 90, "every engine booking orders")

        halt = invoke(fleet, tmp_path, "halt", "--host", "sandbox", "--reason", "scale drill")
        assert halt.returncode == 0, halt.stdout[-3000:] + halt.stderr[-3000:]
        assert [h for h in engines if not engine(fleet, h)["halted"]] == []
        assert open_orders(fleet) == []

        verify = invoke(fleet, tmp_path, "verify", "--host", "sandbox", "--checks",
                        "test_halt.py::test_engine_is_halted test_halt.py::test_halt_is_logged "
                        "test_database.py")
        assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-3000:]

        before = {h: engine(fleet, h)["last_order_ts"] for h in engines}
        resume = invoke(fleet, tmp_path, "resume", "--host", "sandbox", "--yes")
        assert resume.returncode == 0, resume.stdout[-3000:] + resume.stderr[-3000:]
        wait_for(lambda: [h for h in engines if engine(fleet, h)["halted"]
                          or engine(fleet, h)["last_order_ts"] <= before[h]] == [],
                 60, "every engine trading again")

        fleet.down()
        assert_nothing_left(fleet)
    finally:
        fleet.down(purge=True)


def invoke(fleet: Fleet, tmp_path, task: str, *args: str) -> subprocess.CompletedProcess:
    """`invoke TASK` on this fleet's inventory, as an operator runs it (own journal, no terminal)."""
    argv = [sys.executable, "-m", "invoke", "--search-root", str(REPO), task,
            "--inventory", str(fleet.inventory), *args]
    env = {**os.environ, "RIPCORD_JOURNAL": str(tmp_path / "journal.jsonl"),
           "RIPCORD_APPROVALS": str(tmp_path / "approvals"), "RIPCORD_OPERATOR": "pytest"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env,
                          stdin=subprocess.DEVNULL)


def curl_json(url: str, *headers: str):
    argv = ["curl", "-sS", "--fail", "--max-time", "5", *(a for h in headers for a in ("-H", h)), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, f"curl {url}: {out.stderr.strip()}"
    return json.loads(out.stdout)


def engine(fleet: Fleet, host: str) -> dict:
    """The engine's own /health answer."""
    return curl_json(fleet.plan.host(host).service("titan-execution").health_url)


def open_orders(fleet: Fleet) -> list:
    """The account's open orders, from the exchange's own API (every engine trades one account)."""
    key = provision.read_env(fleet.plan.host("exec-1").titan_home / ".env")["EXCHANGE_API_KEY"]
    return curl_json(fleet.plan.exchange_url + "/api/v1/openOrders", f"X-API-KEY: {key}")


def all_healthy(fleet: Fleet) -> bool:
    pending = fleet.unhealthy()
    assert pending == [], f"not healthy: {pending}"
    return True


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (AssertionError, KeyError, ValueError) as error:
            last = error
        time.sleep(0.2)  # poll the state, up to the deadline
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f": {last}" if last else ""))
