"""up is idempotent and recovers from a crash; down leaves no process and no port behind.

These use fleets of their own, not the session fleet: named after it (RIPCORD_TEST_FLEET) and on
ports of this suite's range (RIPCORD_TEST_BASE_PORT + 50..99), so suites side by side never meet.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request

import pytest
from helpers import TEST_BASE_PORT, TEST_FLEET, suite_port

from ripcord.errors import SandboxError
from ripcord.sandbox import procs, provision
from ripcord.sandbox.fleet import Fleet
from ripcord.sandbox.plan import state_base


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
def test_a_fleet_of_50_hosts_comes_up_and_goes_down_cleanly():
    # 510 ports, more than the suite's 100: taken 2000 above its base (below the kernel's
    # ephemeral ports, from 32768, which a client's connection may hold at any time)
    fleet = make_fleet("scale", TEST_BASE_PORT + 2000, hosts=50)
    try:
        fleet.up(timeout=240)
        assert len(fleet.plan.hosts) == 50
        assert fleet.unhealthy() == []
        assert ssh_ok(fleet, "exec-48")
        fleet.down()
        assert_nothing_left(fleet)
    finally:
        fleet.down(purge=True)
