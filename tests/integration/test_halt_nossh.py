"""The kill switch does not depend on SSH: with exec-1's sshd stopped (its engine up, on NATS,
trading), `invoke halt` and `invoke cancel-all` still reach exec-1's engine over NATS, its orders
are cancelled at the exchange, the result names the rungs that needed SSH, and the run exits 3
(a host was unreachable).

Outcomes are read independently: the engine's /health with curl, the exchange's API with the
host's key (read over the system ssh client before its sshd stops).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess

import pytest
from helpers import engine, exchange, settle_order, trading_again

ENGINES = ("exec-1", "exec-2")


@contextlib.contextmanager
def sshd_stopped(access, host: str):
    """The host's sshd stopped (its services go on), started again afterwards, whatever happens."""
    fleet = access.fleet

    def sshd(action: str) -> None:
        fleet._supervisorctl(fleet.plan.control_conf, action, f"sshd-{host}", check=False)

    sshd("stop")
    try:
        assert access.ssh(host, "true", check=False).returncode == 255, "sshd still answers"
        yield
    finally:
        sshd("start")
        access.wait_for(lambda: access.ssh(host, "true", check=False).returncode == 0,
                        timeout=20, what=f"{host}'s sshd back")


@pytest.fixture(autouse=True)
def trading_afterwards(access, secret):
    """Every test leaves the fleet trading: no halt file, signed NORMAL, engines trading."""
    yield
    trading_again(access, secret, ENGINES, timeout=10)


def records(result: subprocess.CompletedProcess, module: str) -> dict[str, dict]:
    """Per host: the result record of the module's task (unreachable records aside)."""
    payload = json.loads(result.stdout)
    return {r["host"]: r for r in payload["results"]
            if r["module"] == module and r.get("status") != "unreachable"}


def trading_with_an_open_order(access, key: str) -> dict:
    """exec-1 trading, with one LIMIT order of its own (its clientOrderId prefix) open."""
    access.wait_for(lambda: not engine(access, "exec-1")["halted"], timeout=10,
                    what="exec-1 trading")
    body = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": 0.01, "price": 1000,
            "fillDelayMs": 60000,  # resting for a minute: a slow run cannot see it fill first
            "clientOrderId": f"exec-1-nossh-{secrets.token_hex(4)}"}  # ids are never reused
    status, order = exchange(access, "POST", "/api/v1/order", key, body)
    assert status == 201, order
    return order


def test_halt_reaches_an_engine_whose_sshd_is_down(access, ripcord):
    key = access.env("exec-1")["EXCHANGE_API_KEY"]
    with sshd_stopped(access, "exec-1"):
        order = trading_with_an_open_order(access, key)
        try:
            result = ripcord("halt", "--host", "sandbox", "--reason", "sshd down", "--json")
            assert result.returncode == 3, result.stdout + result.stderr  # a host was unreachable
            state = engine(access, "exec-1")
            assert state["halted"] is True and "nats" in state["halt_source"], state
            assert exchange(access, "GET", "/api/v1/openOrders?clientPrefix=exec-1-", key) \
                == (200, [])
            # cancelled (or, on a loaded machine, filled by the exchange's 2 s fill delay first)
            assert exchange(access, "GET", f"/api/v1/order/{order['orderId']}", key)[1][
                "status"] != "NEW"
        finally:
            settle_order(access, key, order)
    done = records(result, "halt")
    assert set(done) == set(ENGINES), done
    msg = done["exec-1"]["msg"]
    assert msg.startswith("halted by NATS"), msg
    assert "halt file not written: SSH down" in msg, msg
    assert "(through exec-2)" in msg, msg  # the exchange rung spoke for it through exec-2
    assert "halted by NATS" in done["exec-2"]["msg"]
    assert access.ssh("exec-1", 'test -e "$TITAN_HOME/system.halt"', check=False).returncode == 1
    assert access.ssh("exec-2", 'test -e "$TITAN_HOME/system.halt"', check=False).returncode == 0


def engine_cancels(access, host: str) -> int:
    """How many cancelAll calls for host's orders the exchange's own log holds (only host's
    engine asks for its prefix: cancel-all's own exchange step only reads)."""
    log = (access.plan.exchange_home / "exchange.log").read_text()
    return log.count(f"(clientPrefix={host}-,")


def test_cancel_all_reaches_an_engine_whose_sshd_is_down(access, ripcord):
    before = engine_cancels(access, "exec-1")
    with sshd_stopped(access, "exec-1"):
        result = ripcord("cancel-all", "--host", "sandbox", "--yes", "--json")
        assert result.returncode == 3, result.stdout + result.stderr
    access.wait_for(lambda: engine_cancels(access, "exec-1") > before, timeout=5,
                    what="exec-1's engine cancelling its orders at the exchange")
    done = records(result, "titan_command")
    assert set(done) == set(ENGINES), done
    assert "answered in" in done["exec-1"]["msg"] and "SSH down" in done["exec-1"]["msg"]


def test_with_the_secret_on_the_controller_a_lone_host_without_ssh_is_halted(access, ripcord,
                                                                           secret, tmp_path):
    """Inventory titan_hmac_secret_file: the controller signs without any host's SSH."""
    held = tmp_path / "titan_hmac"
    held.write_text(secret + "\n")
    held.chmod(0o600)
    extra = tmp_path / "secret.yml"
    extra.write_text(f"all:\n  vars:\n    titan_hmac_secret_file: {held}\n")
    with sshd_stopped(access, "exec-1"):
        result = ripcord("halt", "--host", "exec-1", "--json", inventories=(extra,))
        assert result.returncode == 3, result.stdout + result.stderr
        state = engine(access, "exec-1")
        assert state["halted"] is True and state["halt_source"] == "nats", state
    assert not engine(access, "exec-2")["halted"]
    msg = records(result, "halt")["exec-1"]["msg"]
    assert msg.startswith("halted by NATS"), msg
    assert "exchange not checked: no host of the batch answers over SSH" in msg, msg
    assert secret not in result.stdout + result.stderr
