"""The kill switch before and beyond its ladder: `halt --check` as a real preflight, the signed
halt published before any SSH connection when the controller holds the secret, and a rogue
engine's orders cancelled at the exchange as soon as it misses its answer.

Outcomes are read through independent paths: the engines' own /health (curl), files over the
system ssh client, the exchange's API with a key from a host's .env, and the times at which the
`invoke` process opened its TCP connections to the hosts' sshd and wrote the halt's publish to a
socket (recorded at the socket by a sitecustomize in that process, not by ripcord).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import engine, exchange, trading_again

ENGINES = ("exec-1", "exec-2")
RUNGS = ("secret", "nats", "health", "file", "stop", "exchange")
REPO = Path(__file__).resolve().parents[2]

# Loaded by the `invoke` process under test (PYTHONPATH): every TCP connect to one of the hosts'
# sshd ports ("ssh"), and every write to a socket that carries the halt command's publish
# ("publish": nats-py's send or a plain sendall), is appended with its time.time() to the file
# RECORD_CONNECTS names.
SITECUSTOMIZE = """
import os, socket, time
_ports = {int(p) for p in os.environ["SSH_PORTS"].split(",")}
_connect, _send, _sendall = socket.socket.connect, socket.socket.send, socket.socket.sendall
def _note(what):
    with open(os.environ["RECORD_CONNECTS"], "a") as out:
        out.write(f"{time.time()} {what}\\n")
def connect(self, address):
    if isinstance(address, tuple) and len(address) >= 2 and address[1] in _ports:
        _note("ssh")
    return _connect(self, address)
def _publishes(data):
    return b"PUB titan.cmd.sys.halt.v1 " in bytes(data)
def send(self, data, *args):
    if _publishes(data):
        _note("publish")
    return _send(self, data, *args)
def sendall(self, data, *args):
    if _publishes(data):
        _note("publish")
    return _sendall(self, data, *args)
socket.socket.connect, socket.socket.send, socket.socket.sendall = connect, send, sendall
"""


def halt_records(result: subprocess.CompletedProcess) -> dict[str, dict]:
    payload = json.loads(result.stdout)
    return {r["host"]: r for r in payload["results"] if r["module"] == "halt"}


def no_halt_file(access, host: str) -> bool:
    return access.ssh(host, 'test -e "$TITAN_HOME/system.halt"', check=False).returncode == 1


@pytest.fixture(autouse=True)
def fleet_as_found(access, secret):
    """Every test leaves the fleet trading: titan_home writable, engines running, no fault, no
    halt file, a signed NORMAL answered."""
    yield
    trading_again(access, secret, ENGINES, start=("titan-execution",), prepare='chmod u+w "$TITAN_HOME"; ')


@pytest.fixture
def recorded(fleet, tmp_path):
    """(extra_env for the ripcord fixture, read() -> the times of the run's SSH connects)."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    record = tmp_path / "connects.txt"
    ports = ",".join(str(h.ssh_port) for h in fleet.plan.hosts)
    env = {"PYTHONPATH": str(tmp_path / "site"), "SSH_PORTS": ports, "RECORD_CONNECTS": str(record)}

    def read(what: str = "ssh") -> list[float]:
        lines = record.read_text().split("\n") if record.exists() else []
        return [float(line.split()[0]) for line in lines if line.endswith(f" {what}")]
    return env, read


# --- halt --check: a preflight ---------------------------------------------------------------

def test_halt_check_on_a_healthy_fleet_finds_every_rung_working_and_changes_nothing(access, ripcord):
    result = ripcord("halt", "--host", "sandbox", "--check", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    records = halt_records(result)
    assert set(records) == set(ENGINES), records
    for host in ENGINES:
        assert records[host]["outcome"] == "ok", records[host]
        assert records[host]["msg"] == f"preflight: would work: {', '.join(RUNGS)}", records[host]
        state = engine(access, host)
        assert state["halted"] is False and state["state"] == "NORMAL"
        assert no_halt_file(access, host)


def test_halt_check_names_the_host_and_the_rung_that_would_not_work(access, ripcord, secret):
    access.ssh("exec-1", 'chmod a-w "$TITAN_HOME"')  # the halt file could not be written
    try:
        result = ripcord("halt", "--host", "sandbox", "--check", "--json")
    finally:
        access.ssh("exec-1", 'chmod u+w "$TITAN_HOME"')
    assert result.returncode == 1, result.stdout + result.stderr
    records = halt_records(result)
    assert records["exec-1"]["outcome"] == "failed", records["exec-1"]
    assert "would NOT work: file: " in records["exec-1"]["msg"], records["exec-1"]
    assert records["exec-2"]["outcome"] == "ok", records["exec-2"]
    assert records["exec-2"]["msg"] == f"preflight: would work: {', '.join(RUNGS)}"
    for host in ENGINES:
        assert engine(access, host)["halted"] is False and no_halt_file(access, host)
    assert secret not in result.stdout + result.stderr


def test_resume_check_runs_its_prechecks_and_asks_nothing(access, ripcord):
    """No --yes and no terminal: under --check the confirmation is not needed (nothing changes)."""
    result = ripcord("resume", "--host", "sandbox", "--check", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    ran = {r["task"] for r in json.loads(result.stdout)["results"] if r["outcome"] == "ok"}
    assert any(t.startswith("Pre-check: the fleet's checks") for t in ran), ran
    for host in ENGINES:
        assert engine(access, host)["halted"] is False


# --- the controller holds the secret: the halt goes out first ---------------------------------

def test_with_the_secret_on_the_controller_the_halt_is_out_before_any_ssh_connection(
        access, ripcord, recorded, secret, tmp_path):
    """The secret in an environment variable the inventory names (a file of mode 600 is read by
    the same function: its refusal is tested below)."""
    extra_env, connects = recorded
    inventory = tmp_path / "controller-secret.yml"
    inventory.write_text("all:\n  vars:\n    titan_hmac_secret_env: HALT_TEST_SECRET\n")
    extra_env = {**extra_env, "HALT_TEST_SECRET": secret}
    result = ripcord("halt", "--host", "sandbox", "--json", inventories=(inventory,),
                     extra_env=extra_env)
    published_before_any_ssh(result, connects, access)


def published_before_any_ssh(result, connects, access) -> None:
    """The halt succeeded; its one publish went out before the first SSH connection, and every
    engine was halted by it (by this run's command: halted_since after the publish)."""
    assert result.returncode == 0, result.stdout + result.stderr
    records = halt_records(result)
    published, first_ssh = connects("publish"), min(connects("ssh"))
    assert len(published) == 1 and published[0] < first_ssh, (published, first_ssh)
    for host in ENGINES:
        assert "halted by NATS" in records[host]["msg"], records[host]
        assert engine(access, host)["halted_since"] >= published[0] - 1  # by this run's command


def test_a_secret_file_others_can_read_is_refused_before_anything(access, ripcord, recorded,
                                                                   secret, tmp_path):
    extra_env, connects = recorded
    key = tmp_path / "hmac.secret"
    key.write_text(secret + "\n")
    key.chmod(0o640)
    inventory = tmp_path / "controller-secret.yml"
    inventory.write_text(f"all:\n  vars:\n    titan_hmac_secret_file: {key}\n")
    result = ripcord("halt", "--host", "sandbox", inventories=(inventory,), extra_env=extra_env)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(key) in lines[0] and "readable by others" in lines[0], lines
    assert secret not in result.stdout + result.stderr
    assert connects("ssh") == [] and connects("publish") == []
    for host in ENGINES:
        assert engine(access, host)["halted"] is False and no_halt_file(access, host)


@pytest.fixture
def keyring_key():
    """add(value) -> the description of a new `user` key in this user's kernel keyring (keyctl,
    the value on stdin), unlinked afterwards."""
    added = []

    def add(value: str) -> str:
        description = f"ripcord-halt-test-{os.getpid()}-{len(added)}"
        added.append(subprocess.run(["keyctl", "padd", "user", description, "@u"], input=value, text=True,
                                    capture_output=True, check=True).stdout.strip())
        return description
    yield add
    for key in added:
        subprocess.run(["keyctl", "unlink", key, "@u"], capture_output=True, check=False)


def test_with_the_secret_in_the_kernel_keyring_the_halt_is_out_before_any_ssh_connection(
        access, ripcord, recorded, secret, tmp_path, keyring_key):
    extra_env, connects = recorded
    inventory = tmp_path / "keyring-secret.yml"
    inventory.write_text(f"all:\n  vars:\n    titan_hmac_secret_keyring: {keyring_key(secret)}\n")
    result = ripcord("halt", "--host", "sandbox", "--json", inventories=(inventory,), extra_env=extra_env)
    published_before_any_ssh(result, connects, access)
    assert secret not in result.stdout + result.stderr + (tmp_path / "journal.jsonl").read_text()


def test_a_keyring_key_that_cannot_be_found_is_refused_before_anything(access, ripcord, recorded,
                                                                        secret, tmp_path, keyring_key):
    """And rotate refuses one it can read: it would leave the key holding the retired secret."""
    held = tmp_path / "keyring-held.yml"
    held.write_text(f"all:\n  vars:\n    titan_hmac_secret_keyring: {keyring_key(secret)}\n")
    result = ripcord("rotate", "--secret", "hmac", "--host", "sandbox", "--yes", inventories=(held,))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "titan_hmac_secret_keyring names a kernel keyring key of the controller" in result.stderr
    assert access.env("exec-1")["TITAN_HMAC_SECRET"] == secret and secret not in result.stdout + result.stderr
    extra_env, connects = recorded
    inventory = tmp_path / "keyring-secret.yml"
    inventory.write_text(f"all:\n  vars:\n    titan_hmac_secret_keyring: ripcord-absent-{os.getpid()}\n")
    result = ripcord("halt", "--host", "sandbox", inventories=(inventory,), extra_env=extra_env)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "titan_hmac_secret_keyring" in lines[0], lines
    assert f"user:'ripcord-absent-{os.getpid()}'" in lines[0] and "no such key" in lines[0], lines
    assert connects("ssh") == [] and connects("publish") == []
    for host in ENGINES:
        assert engine(access, host)["halted"] is False and no_halt_file(access, host)


def test_with_nats_through_the_ssh_tunnel_the_halt_goes_out_over_the_first_connection(
        access, ripcord, recorded, secret, tmp_path):
    """nats_tunnel: one SSH connection (to the batch's first host) opens first and carries the
    publish; every engine has halted, by its own clock, before the next SSH connection opens."""
    extra_env, connects = recorded
    inventory = tmp_path / "tunnel.yml"
    inventory.write_text("all:\n  vars:\n    nats_tunnel: true\n"
                         "    titan_hmac_secret_env: HALT_TEST_SECRET\n")
    result = ripcord("halt", "--host", "sandbox", "--json", inventories=(inventory,),
                     extra_env={**extra_env, "HALT_TEST_SECRET": secret})
    assert result.returncode == 0, result.stdout + result.stderr
    records = halt_records(result)
    ssh = sorted(connects("ssh"))
    halted = [engine(access, host)["halted_since"] for host in ENGINES]
    assert len(ssh) > len(ENGINES) and ssh[0] < min(halted) and max(halted) < ssh[1], (ssh, halted)
    assert connects("publish") == []  # not through a local forward: over the SSH channel itself
    for host in ENGINES:
        assert "halted by NATS" in records[host]["msg"], records[host]


def test_when_the_tunnels_first_host_refuses_ssh_the_halt_modules_tunnel_carries_the_halt(
        access, ripcord, recorded, secret, tmp_path):
    """The first connection cannot open (exec-1's port closed): the halt module's own tunnel, via
    exec-2 which answers, publishes (a local forward: its publish is seen on a socket), and exec-1's
    engine is halted over NATS all the same."""
    extra_env, connects = recorded
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    inventory = tmp_path / "tunnel.yml"
    inventory.write_text("all:\n  vars:\n    nats_tunnel: true\n    titan_hmac_secret_env: HALT_TEST_SECRET\n"
                         f"  hosts:\n    exec-1:\n      ansible_port: {closed}\n")
    result = ripcord("halt", "--host", "sandbox", "--json", inventories=(inventory,),
                     extra_env={**extra_env, "HALT_TEST_SECRET": secret})
    assert result.returncode == 3, result.stdout + result.stderr  # exec-1 unreachable over SSH
    assert len(connects("publish")) == 1
    assert engine(access, "exec-1")["halt_source"] == "nats"  # no halt file: no SSH
    assert "nats" in engine(access, "exec-2")["halt_source"].split("+")


# --- a rogue engine: its orders cancelled as soon as it misses its answer ----------------------

def test_a_rogue_engines_orders_are_cancelled_at_the_exchange_before_the_deadline(access, fleet,
                                                                                  tmp_path):
    """exec-1 ignores NATS and the halt file: its orders go to 0 at the exchange while it still
    runs (before the deadline, so before the last resort); once the fault is cleared the halt
    file halts it."""
    faults = '"$TITAN_HOME/state/faults/deaf_nats" "$TITAN_HOME/state/faults/ignore_halt_file"'
    access.ssh("exec-1", f"touch {faults}")
    key = access.env("core-1")["EXCHANGE_OPS_API_KEY"]  # not the engines' key: its own rate limit
    status, order = exchange(access, "POST", "/api/v1/order", key, {
        "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": 0.01, "price": 1000,
        "fillDelayMs": 60000, "clientOrderId": f"exec-1-rogue-{os.getpid()}"})
    assert status == 201, order
    deadline_s = 15.0  # long: a loaded machine starts slowly; the fault is cleared well before

    def rogue_open() -> list:
        return exchange(access, "GET", "/api/v1/openOrders?clientPrefix=exec-1-", key)[1]

    argv = [sys.executable, "-m", "invoke", "--search-root", str(REPO), "halt", "--inventory",
            str(fleet.inventory), "--host", "sandbox", "--deadline", str(deadline_s), "--json"]
    env = {**os.environ, "RIPCORD_JOURNAL": str(tmp_path / "journal.jsonl"), "RIPCORD_OPERATOR": "alice"}
    started = time.monotonic()
    halt = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL)
    try:
        # the deadline counts from after the process's start-up, so this is before it; and
        # exec-1 still answers unhalted: its service was not stopped (the last resort)
        access.wait_for(lambda: rogue_open() == [], timeout=deadline_s - 1, interval=0.2,
                        what="exec-1's open orders at 0")
        assert time.monotonic() - started < deadline_s
        assert halt.poll() is None and engine(access, "exec-1")["halted"] is False
    finally:
        access.ssh("exec-1", f"rm -f {faults}")  # the halt file now halts it: no last resort
        exchange(access, "DELETE", f"/api/v1/order/{order['orderId']}", key)
        try:
            stdout, stderr = halt.communicate(timeout=60)
        finally:
            if halt.poll() is None:
                halt.kill()
    assert halt.returncode == 0, stdout + stderr
    assert rogue_open() == []
    records = {r["host"]: r for r in json.loads(stdout)["results"] if r["module"] == "halt"}
    assert "halted by the halt file" in records["exec-1"]["msg"], records["exec-1"]
    assert "of its open orders while it had not answered" in records["exec-1"]["msg"]
