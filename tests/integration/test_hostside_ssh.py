"""SSH is strict on every hop (issue 15): a ProxyJump from ~/.ssh/config gets the target's
known_hosts and RejectPolicy, so an unknown jump host is refused, naming it, and a known one works.

Which sshd the target's connection really came through is read from the kernel's socket table
(ss -tnp) and /proc, not from ripcord.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from pathlib import Path

import pytest

from ripcord.connection import Connection, HostKeyError

TARGET, JUMP = "exec-1", "exec-2"


def _ancestors(pid: int) -> list[str]:
    """The command lines of pid and every process above it."""
    lines = []
    while pid > 1:
        try:
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rpartition(")")[2].split()[1])
    return lines


def _connections_to(port: int) -> list[list[str]]:
    """For each established TCP connection to 127.0.0.1:port, its owner's process lineage."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", "dst", f"127.0.0.1:{port}"],
                         capture_output=True, text=True, check=True).stdout
    return [_ancestors(int(pid)) for pid in re.findall(r"pid=(\d+)", out)]


@pytest.fixture
def ssh_home(fleet, tmp_path, monkeypatch):
    """A HOME whose ~/.ssh/config sends connections to 127.0.0.1 through exec-2 (as localhost,
    a name the fleet's known_hosts does not have)."""
    plan = fleet.plan
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    (home / ".ssh" / "config").write_text(
        f"Host 127.0.0.1\n    ProxyJump {fleet.user}@localhost:{plan.host(JUMP).ssh_port}\n"
        f"Host localhost\n    IdentityFile {plan.client_key}\n")
    monkeypatch.setenv("HOME", str(home))
    return home


def test_a_jump_host_from_ssh_config_must_be_in_known_hosts(fleet, inventory, ssh_home, tmp_path):
    plan = fleet.plan
    jump_port = plan.host(JUMP).ssh_port
    spec = inventory.connection_for(TARGET)

    conn = Connection(TARGET, spec)
    try:
        with pytest.raises(HostKeyError, match=rf"jump host \[localhost\]:{jump_port}: host key unknown"):
            conn.open()
    finally:
        conn.close()

    known = tmp_path / "known_hosts"
    kind, key = (plan.host(JUMP).etc / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    known.write_text(plan.known_hosts.read_text() + f"[localhost]:{jump_port} {kind} {key}\n")
    conn = Connection(TARGET, dataclasses.replace(spec, known_hosts=str(known)))
    try:
        conn.open()
        assert conn.run("printf %s \"$TITAN_HOME\"").stdout == str(plan.host(TARGET).titan_home)
        jump_sshd = f"-f {plan.host(JUMP).etc}/sshd_config"
        lineages = _connections_to(plan.host(TARGET).ssh_port)
        assert any(jump_sshd in line for lineage in lineages for line in lineage), \
            f"the connection to {TARGET} did not come from {JUMP}'s sshd: {lineages}"
    finally:
        conn.close()


def test_a_jump_host_with_a_changed_key_is_refused(fleet, inventory, ssh_home, tmp_path):
    plan = fleet.plan
    jump_port = plan.host(JUMP).ssh_port
    known = tmp_path / "known_hosts"
    kind, key = (plan.host(TARGET).etc / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    known.write_text(plan.known_hosts.read_text() + f"[localhost]:{jump_port} {kind} {key}\n")
    conn = Connection(TARGET, dataclasses.replace(inventory.connection_for(TARGET),
                                                  known_hosts=str(known)))
    try:
        with pytest.raises(HostKeyError, match=rf"jump host \[localhost\]:{jump_port}: host key CHANGED"):
            conn.open()
    finally:
        conn.close()
    assert os.environ["HOME"] == str(ssh_home)
