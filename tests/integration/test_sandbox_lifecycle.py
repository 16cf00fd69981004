"""up is idempotent and recovers from a crash; down leaves no process and no port behind.

These use fleets of their own (own directory, own ports), not the session fleet.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request

import pytest

from ripcord.errors import SandboxError
from ripcord.sandbox import procs, provision
from ripcord.sandbox.fleet import Fleet
from ripcord.sandbox.plan import state_base


def make_fleet(name: str, base_port: int, hosts: int) -> Fleet:
    root = state_base() / name
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
    fleet = make_fleet("test-lifecycle", 26000, hosts=3)
    try:
        fleet.up()
        control = fleet.control_pid()
        assert control and ssh_ok(fleet, "exec-1")

        again = make_fleet("test-lifecycle", 26000, hosts=3)
        again.up()
        assert again.control_pid() == control, "up on a running fleet must be a no-op"

        # Growing a running fleet adds a host, whose new exchange key the exchange accepts.
        fleet = make_fleet("test-lifecycle", 26000, hosts=4)
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
        time.sleep(0.2)
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

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 26503))
        blocker.listen()
        fleet = make_fleet("test-busy", 26500, hosts=3)
        with pytest.raises(SandboxError, match="26503"):
            fleet.up()
    fleet.down(purge=True)
    assert not fleet.root.exists()


@pytest.mark.scale
def test_a_fleet_of_50_hosts_comes_up_and_goes_down_cleanly():
    fleet = make_fleet("test-scale", 28000, hosts=50)
    try:
        fleet.up(timeout=240)
        assert len(fleet.plan.hosts) == 50
        assert fleet.unhealthy() == []
        assert ssh_ok(fleet, "exec-48")
        fleet.down()
        assert_nothing_left(fleet)
    finally:
        fleet.down(purge=True)
