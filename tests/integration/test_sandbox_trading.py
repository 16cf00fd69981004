"""The stand-in engine honours signed commands and the halt file; the exchange behaves like one."""

from __future__ import annotations

import datetime
import json
import time

import pytest
from helpers import engine, exchange, publish, trading_again

from ripcord import bus

ENGINES = ("exec-1", "exec-2")


@pytest.fixture(autouse=True)
def trading_afterwards(access, secret):
    """Every test here leaves the engines trading: no halt file, a signed NORMAL."""
    yield
    trading_again(access, secret, ENGINES, timeout=5)


def test_a_signed_halt_is_acknowledged_and_halts_every_engine(access, secret):
    body = bus.encode({"state": "HARD_HALT", "reason": "pytest", "operator": "pytest",
                       "source": "test"})

    async def request_and_collect(nc):
        events = []

        async def collect(message):
            events.append(json.loads(message.data))

        sub = await nc.subscribe(bus.STATE_EVENT_SUBJECT, cb=collect)
        await nc.flush()
        reply = await nc.request(bus.HALT_SUBJECT, body,
                                 headers=bus.sign(bus.HALT_SUBJECT, body, secret), timeout=2)
        deadline = time.monotonic() + 2
        import asyncio

        while {e["host"] for e in events} < set(ENGINES) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await sub.unsubscribe()
        return json.loads(reply.data), events

    reply, events = access.nats(request_and_collect)
    assert reply["ok"] is True and reply["halted"] is True
    assert {e["host"] for e in events if e["halted"]} == set(ENGINES)
    for host in ENGINES:
        health = engine(access, host)
        assert health["halted"] is True and health["state"] == "HARD_HALT"
        assert access.log_has(host, "titan-execution", "System HALTED")


def test_unsigned_badly_signed_and_replayed_commands_are_rejected_and_trading_goes_on(access, secret):
    halt = {"state": "HARD_HALT", "reason": "attack", "operator": "mallory", "source": "outside"}
    before = {h: engine(access, h)["signals_received"] for h in ENGINES}

    publish(access, bus.HALT_SUBJECT, halt, secret=None, headers={})
    publish(access, bus.HALT_SUBJECT, halt, secret="not-the-secret")
    for host in ENGINES:
        access.wait_for(lambda h=host: access.log_has(h, "titan-execution",
                                                      "Security: Unsigned Command Detected"),
                        timeout=5, what=f"{host} logs the unsigned command")
        access.wait_for(lambda h=host: access.log_has(h, "titan-execution",
                                                      "HMAC Verification Failed: bad signature"),
                        timeout=5, what=f"{host} logs the bad signature")
        assert engine(access, host)["halted"] is False

    # A genuine halt, then resume; replaying the captured halt must not halt again.
    data = bus.encode(halt)
    captured = publish(access, bus.HALT_SUBJECT, halt, secret, raw=data)
    for host in ENGINES:
        access.wait_for(lambda h=host: engine(access, h)["halted"], timeout=3,
                        what=f"{host} halted by the genuine command")
    publish(access, bus.HALT_SUBJECT, {"state": "NORMAL", "reason": "resume",
                                       "operator": "pytest", "source": "test"}, secret)
    for host in ENGINES:
        access.wait_for(lambda h=host: not engine(access, h)["halted"], timeout=3,
                        what=f"{host} resumed")
    publish(access, bus.HALT_SUBJECT, halt, secret=None, headers=captured, raw=data)
    for host in ENGINES:
        access.wait_for(lambda h=host: access.log_has(h, "titan-execution",
                                                      "HMAC Verification Failed: replayed nonce"),
                        timeout=5, what=f"{host} logs the replay")
        assert engine(access, host)["halted"] is False

    # Trading goes on: the engines keep receiving signals and placing orders.
    access.wait_for(lambda: any(engine(access, h)["signals_received"] > before[h]
                                for h in ENGINES), timeout=15, interval=0.5,
                    what="new signals reaching the engines")


def test_touching_the_halt_file_halts_the_engine_on_its_own(access):
    """The engine watches the file itself: it halts (and logs it) with nobody asking it, after
    the file appeared, by its own clock; no wall-time bound that a loaded machine would break."""
    halted_lines = access.ssh("exec-1", 'grep -c "System HALTED source=file" '
                                        '"$TITAN_HOME/logs/titan-execution.log"', check=False)
    before = int(halted_lines.stdout.strip() or 0)
    access.ssh("exec-1", 'echo "halt file test" > "$TITAN_HOME/system.halt"')
    access.wait_for(lambda: int(access.ssh("exec-1", 'grep -c "System HALTED source=file" '
                                                     '"$TITAN_HOME/logs/titan-execution.log"',
                                           check=False).stdout.strip() or 0) > before,
                    timeout=10, what="exec-1 logging its halt by the file")
    health = engine(access, "exec-1")
    mtime = float(access.ssh("exec-1", 'stat -c %.9Y "$TITAN_HOME/system.halt"').stdout)
    assert health["halted"] is True and health["halt_source"] in ("file", "file+nats")
    assert health["halted_since"] >= mtime, (health["halted_since"], mtime)  # the file came first
    assert access.log_has("exec-1", "titan-execution", "reason=halt file test")
    assert engine(access, "exec-2")["halted"] is False  # the file is per host


def test_a_halted_engine_rejects_signals_and_cancels_its_working_orders(access):
    ops_key = access.env("core-1")["EXCHANGE_OPS_API_KEY"]
    access.ssh("exec-2", 'touch "$TITAN_HOME/system.halt"')
    access.wait_for(lambda: engine(access, "exec-2")["halted"], timeout=2, what="halted")
    access.wait_for(lambda: access.log_has("exec-2", "titan-execution",
                                           "Order Rejected: System Halted"),
                    timeout=20, interval=0.5, what="a signal rejected while halted")
    status, orders = exchange(access, "GET", "/api/v1/openOrders?clientPrefix=exec-2-", ops_key)
    assert status == 200 and orders == []
    assert engine(access, "exec-2")["open_orders"] == 0


def test_the_exchange_refuses_bad_keys_and_rate_limits(access):
    assert exchange(access, "GET", "/api/v1/positions", None)[0] == 401
    assert exchange(access, "GET", "/api/v1/positions", "not-a-key")[0] == 401
    key = access.env("core-1")["EXCHANGE_OPS_API_KEY"]
    statuses = [exchange(access, "GET", "/api/v1/openOrders", key, patient=False)[0]
                for _ in range(45)]
    assert 429 in statuses and statuses[0] == 200
    access.wait_for(lambda: exchange(access, "GET", "/api/v1/openOrders", key)[0] == 200,
                    timeout=5, interval=0.2, what="the exchange answering again after its window")


def test_the_dead_mans_switch_cancels_open_orders_when_not_rearmed(access):
    key = access.env("core-1")["EXCHANGE_OPS_API_KEY"]
    status, order = exchange(access, "POST", "/api/v1/order", key, {
        "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": 0.001, "price": 1000,
        "clientOrderId": f"ops-dms-{time.time_ns()}"})
    assert status == 201 and order["status"] == "NEW"
    log = access.plan.exchange_home / "exchange.log"
    expired = f"Dead-man switch expired for {order['placedBy']}: cancelled "
    seen = log.read_text().count(expired)
    status, switch = exchange(access, "POST", "/api/v1/countdownCancelAll", key, {"timeoutMs": 300})
    assert status == 200 and switch["armed"] is True
    after = access.wait_for(lambda: (o := exchange(access, "GET", f"/api/v1/order/{order['orderId']}",
                                                   key)[1])["status"] != "NEW" and o,
                            timeout=10, what="the order no longer working")
    assert after["status"] == "CANCELED"  # by the switch, before its fill (2 s after placing)
    assert exchange(access, "GET", "/api/v1/countdownCancelAll", key)[1]["armed"] is False
    lines = [line for line in log.read_text().splitlines() if expired in line]
    assert len(lines) == seen + 1, lines[seen:]
    stamp = datetime.datetime.strptime(lines[-1].split()[0], "%Y-%m-%dT%H:%M:%S.%fZ")
    fired_ms = stamp.replace(tzinfo=datetime.UTC).timestamp() * 1000
    assert fired_ms >= switch["expiresAt"] - 1, (fired_ms, switch)  # not before its timeout
