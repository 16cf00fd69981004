"""Helpers shared by integration tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from ripcord import bus

# Parallel workers (or developers) can each have a fleet: RIPCORD_TEST_FLEET / _BASE_PORT.
# Under pytest-xdist (make test runs two workers) worker gwN takes its own name and ports, 3500
# apart: a worker's ports are base..base+99 and its 50-host fleet's from base+2000 (see
# suite_port and the lifecycle tests), all below the kernel's ephemeral range (32768).
WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
TEST_FLEET = os.environ.get("RIPCORD_TEST_FLEET", "test-fleet") + (f"-gw{WORKER}" if WORKER else "")
TEST_BASE_PORT = int(os.environ.get("RIPCORD_TEST_BASE_PORT", "25000")) + 3500 * WORKER


def suite_port(offset: int) -> int:
    """A port of this suite's own range (RIPCORD_TEST_BASE_PORT + offset, 100 ports): the
    session fleet takes the first 50 (base+5..9 it never listens on); fleets of a test's own
    take theirs from the rest, so suites run side by side never meet."""
    assert 0 <= offset < 100, offset
    return TEST_BASE_PORT + offset


def commands_sent(monkeypatch) -> list[str]:
    """Records, as they are made, every command line ripcord sends to a host (Connection.run:
    the host's shell gets it as argv) and every process it starts here (subprocess.Popen): an
    audit of what could show in some process's argv, which no sampling of `ps` can miss."""
    from ripcord.connection import Connection

    sent: list[str] = []
    run, popen = Connection.run, subprocess.Popen.__init__

    def recording_run(self, command, *args, **kwargs):
        sent.append(f"{self.name}: {command}")
        return run(self, command, *args, **kwargs)

    def recording_popen(self, argv, *args, **kwargs):
        sent.append("local: " + (argv if isinstance(argv, str | bytes) else shlex.join(map(str, argv))))
        return popen(self, argv, *args, **kwargs)

    monkeypatch.setattr(Connection, "run", recording_run)
    monkeypatch.setattr(subprocess.Popen, "__init__", recording_popen)
    return sent


@contextmanager
def argv_recorded(host, *programs: str):
    """Wrappers for `programs` first in the sandbox host's PATH (its bin directory) that append
    their own argv to a log before exec'ing the real program: every run is recorded, however
    short. Yields a function returning the recorded argv lists; the wrappers go afterwards."""
    log = host.titan_home / "state" / f"argv-{time.time_ns()}.log"
    wrappers = [host.bin / name for name in programs]
    for wrapper in wrappers:
        real = shutil.which(wrapper.name, path="/usr/local/bin:/usr/bin:/bin")
        assert real, f"no {wrapper.name} to wrap"
        wrapper.write_text(f"#!/bin/sh\nprintf '%s\\037' \"$0\" \"$@\" >> {shlex.quote(str(log))}\n"
                           f"printf '\\n' >> {shlex.quote(str(log))}\nexec {shlex.quote(real)} \"$@\"\n")
        wrapper.chmod(0o755)

    def recorded() -> list[list[str]]:
        text = log.read_text() if log.exists() else ""
        return [line.rstrip("\037").split("\037") for line in text.splitlines() if line]

    try:
        yield recorded
    finally:
        for wrapper in wrappers:
            wrapper.unlink(missing_ok=True)
        log.unlink(missing_ok=True)


def exchange(access, method: str, path: str, key: str | None, body: dict | None = None, *,
             patient: bool = True):
    """(HTTP status, JSON body) of one call to the sandbox exchange, straight from here. Patient
    (as a client honouring Retry-After): a rate limit (429, a key's 20 requests a second, shared
    with its engine and the test's own polling) is waited out, up to 5 s; not for a test of it."""
    for _ in range(6 if patient else 1):
        request = urllib.request.Request(access.plan.exchange_url + path, method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Content-Type": "application/json",
                                                  **({"X-API-KEY": key} if key else {})})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            answer = error.code, json.loads(error.read() or b"{}")
        if answer[0] != 429:
            return answer
        time.sleep(1.0)
    return answer


def engine(access, host: str) -> dict:
    """A host's trading engine's own /health answer (halted, halt_source, halted_since ...)."""
    return access.health(host, "titan-execution")


def settle_order(access, key: str, order: dict) -> None:
    """Cancel an order placed by hand if still open; offset it if the exchange filled it, so that
    the account stays in step with the engines' ledger."""
    path = f"/api/v1/order/{order['orderId']}"
    if exchange(access, "DELETE", path, key)[0] != 200 and \
            exchange(access, "GET", path, key)[1]["status"] == "FILLED":
        exchange(access, "POST", "/api/v1/order", key, {
            "symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": 0.01})


def ghost_inventory(fleet, directory: Path) -> Path:
    """An extra inventory with exec-ghost: a host on a closed loopback port (unreachable)."""
    ghost = directory / "ghost.yml"
    ghost.write_text(f"all:\n  children:\n    exec:\n      hosts:\n        exec-ghost:\n"
                     f"          ansible_host: 127.0.0.1\n"
                     f"          ansible_port: {fleet.plan.base_port + 9}\n"
                     f"          ansible_timeout: 2\n")
    return ghost


def publish(access, subject: str, body: dict, secret: str | None, headers: dict | None = None,
            raw: bytes | None = None) -> dict:
    """Publish one command from a plain NATS client, signed with `secret` unless headers (or
    raw bytes) are given; returns the headers sent."""
    data = raw if raw is not None else bus.encode(body)
    if headers is None and secret is not None:
        headers = bus.sign(subject, data, secret)

    async def send(nc):
        await nc.publish(subject, data, headers=headers)
        await nc.flush()

    access.nats(send)
    return headers or {}


def account_in_step(access) -> None:
    """Offset at market what the exchange account holds beyond the engines' ledger (an earlier
    test's hand order that filled, say), so that a flatten, which closes the ledger's positions,
    can leave the account flat. Call it with the fleet halted (the ledger still)."""
    key = access.env("core-1")["EXCHANGE_OPS_API_KEY"]
    out = subprocess.run(["psql", "-X", "-w", "-tA", "-F", " ", "-h", "127.0.0.1", "-p",
                          str(access.plan.postgres_port), "-U", "titan", "-d", "titan", "-c",
                          "SELECT symbol, sum(qty) FROM positions GROUP BY symbol"],
                         capture_output=True, text=True, timeout=10,
                         env={**os.environ, "PGPASSWORD": access.env("exec-1")["TITAN_DB_PASSWORD"]})
    assert out.returncode == 0, out.stderr
    ledger = {s: float(q) for s, q in (line.split() for line in out.stdout.splitlines() if line)}
    status, found = exchange(access, "GET", "/api/v1/positions", key)
    assert status == 200, found
    held = {p["symbol"]: float(p["qty"]) for p in found}
    for symbol in set(held) | set(ledger):
        extra = round(held.get(symbol, 0.0) - ledger.get(symbol, 0.0), 8)
        if extra:
            status, order = exchange(access, "POST", "/api/v1/order", key, {
                "symbol": symbol, "side": "SELL" if extra > 0 else "BUY", "type": "MARKET",
                "quantity": abs(extra)})
            assert status == 201, order


def trading_again(access, secret: str, engines=("exec-1", "exec-2"), timeout: float = 10.0, *,
                  prepare: str = "", start: tuple[str, ...] = (), connect_timeout: float = 30.0) -> None:
    """Put the engines back to trading after a test: no halt file, no fault, a signed NORMAL,
    and each engine's own /health saying it is not halted. `prepare` (shell, run first on each
    engine host) undoes what a test did there; `start` names services to start again, and then
    each engine is waited for until it is connected to NATS, so the NORMAL reaches it."""
    for host in engines:
        access.ssh(host, prepare + 'rm -f "$TITAN_HOME/system.halt" "$TITAN_HOME"/state/faults/*'
                   + ("; supervisorctl start " + " ".join(start) if start else ""), check=not start)
    for host in engines if start else ():
        access.wait_for(lambda h=host: access.health(h, "titan-execution")["nats_connected"],
                        timeout=connect_timeout, interval=0.2, what=f"{host} connected to NATS")
    publish(access, bus.HALT_SUBJECT, {"state": "NORMAL", "reason": "test cleanup",
                                       "operator": "pytest", "source": "test"}, secret)
    for host in engines:
        access.wait_for(lambda h=host: not access.health(h, "titan-execution")["halted"],
                        timeout=timeout, what=f"{host} trading again")
