"""nats and jetstream against the sandbox fleet's real NATS and its stand-in engines.

Outcomes are read back the way an operator would: each engine's /health with curl, its log over
ssh, the NATS monitoring endpoint /jsz with curl. Every test that may halt the fleet leaves it
trading again (the `trading` fixture resumes it through a plain NATS client, not the module).
"""

from __future__ import annotations

import json
import shlex
import socket
import time

import pytest
from helpers import commands_sent, publish

from ripcord import bus

ENGINE = "titan-execution"
UNSIGNED = f"Security: Unsigned Command Detected subject={bus.HALT_SUBJECT}"


def halt_body(state: str) -> dict:
    return {"state": state, "reason": "ripcord module test", "operator": "pytest", "source": "test"}


@pytest.fixture
def engines(access) -> list[str]:
    return [h.name for h in access.plan.by_role("exec")]


def halted(access, engines) -> dict[str, bool]:
    return {host: access.health(host, ENGINE)["halted"] for host in engines}


@pytest.fixture
def trading(access, engines):
    """Whatever a test does, the fleet is trading (NORMAL on every engine) afterwards."""
    yield
    secret = access.env(engines[0])["TITAN_HMAC_SECRET"]
    body = bus.encode(halt_body("NORMAL"))

    async def resume(nc):
        await nc.publish(bus.HALT_SUBJECT, body, headers=bus.sign(bus.HALT_SUBJECT, body, secret))
        await nc.flush()

    access.nats(resume)
    access.wait_for(lambda: not any(halted(access, engines).values()), timeout=10,
                    what="every engine trading again")


def log_count(access, host: str, text: str) -> int:
    out = access.ssh(host, f'grep -c -F -- {shlex.quote(text)} "$TITAN_HOME/logs/{ENGINE}.log"',
                     check=False)
    return int(out.stdout.strip() or 0)


def consumer_created(access) -> str | None:
    """When execution_group was created, per the NATS monitoring endpoint (None: absent)."""
    jsz = access.curl_json(f"http://127.0.0.1:{access.plan.nats_monitor_port}/jsz?consumers=true")
    for account in jsz.get("account_details", []):
        for stream in account.get("stream_detail", []):
            for consumer in stream.get("consumer_detail") or []:
                if stream["name"] == "TITAN_EXECUTION" and consumer["name"] == "execution_group":
                    return consumer["created"]
    return None


# --- nats -------------------------------------------------------------------------------------

# Straight from the controller, and through an SSH tunnel via db-1 (NATS as db-1 sees it).
VIA = pytest.mark.parametrize("host, tunnel", [("exec-1", False), ("db-1", True)],
                              ids=["direct", "tunnel"])


@VIA
def test_signed_halt_collects_every_engine_and_normal_resumes(run_module, access, engines, trading,
                                                              host, tunnel):
    result = run_module("nats", {"subject": bus.HALT_SUBJECT, "body": halt_body("HARD_HALT"),
                                 "tunnel": tunnel,
                                 "collect": {"subject": bus.STATE_EVENT_SUBJECT,
                                             "count": len(engines), "timeout": 5}}, host=host)
    assert not result.failed and result.changed, result.msg
    events = result.data["collected"]
    assert {e["host"] for e in events} == set(engines)
    assert all(e["state"] == "HARD_HALT" and e["halted"] for e in events)
    assert halted(access, engines) == dict.fromkeys(engines, True)
    assert {access.health(h, ENGINE)["halt_source"] for h in engines} == {"nats"}

    result = run_module("nats", {"subject": bus.HALT_SUBJECT, "body": halt_body("NORMAL"),
                                 "tunnel": tunnel,
                                 "collect": {"subject": bus.STATE_EVENT_SUBJECT,
                                             "count": len(engines), "timeout": 5}}, host=host)
    assert {e["host"] for e in result.data["collected"]} == set(engines)
    assert halted(access, engines) == dict.fromkeys(engines, False)


@VIA
def test_unsigned_command_is_rejected_by_every_engine(run_module, access, engines, trading,
                                                      host, tunnel):
    before = {h: log_count(access, h, UNSIGNED) for h in engines}
    result = run_module("nats", {"subject": bus.HALT_SUBJECT, "body": halt_body("HARD_HALT"),
                                 "sign": False, "tunnel": tunnel}, host=host)
    assert result.changed and not result.failed and result.data["signed"] is False
    access.wait_for(lambda: all(log_count(access, h, UNSIGNED) > before[h] for h in engines),
                    timeout=5, what="every engine logging the unsigned command")
    assert halted(access, engines) == dict.fromkeys(engines, False)


def test_request_through_an_ssh_tunnel_gets_an_engines_reply(run_module, access, engines, trading):
    # NATS as db-1 sees it (its loopback), reached through db-1's SSH connection.
    result = run_module("nats", {"subject": bus.HALT_SUBJECT, "body": halt_body("NORMAL"),
                                 "mode": "request", "tunnel": True}, host="db-1")
    assert not result.failed, result.msg
    reply = result.data["reply"]
    assert reply["ok"] is True and reply["host"] in engines and reply["state"] == "NORMAL"


def test_tunnel_to_a_closed_port_fails_naming_the_tunnel(run_module, access):
    closed = access.plan.base_port + 98
    started = time.monotonic()
    result = run_module("nats", {"subject": "ripcord.test", "sign": False, "tunnel": True,
                                 "url": f"nats://127.0.0.1:{closed}", "timeout": 1}, host="db-1")
    assert result.failed and time.monotonic() - started < 3
    assert result.msg == f"SSH tunnel via db-1 to 127.0.0.1:{closed} failed: Connect failed"


def test_unreachable_nats_fails_within_the_timeout(run_module, access):
    closed = access.plan.base_port + 98
    started = time.monotonic()
    result = run_module("nats", {"subject": "ripcord.test", "sign": False,
                                 "url": f"nats://127.0.0.1:{closed}", "timeout": 30})
    assert result.failed and time.monotonic() - started < 30  # refused: no wait for the timeout
    assert result.msg == f"cannot connect to NATS at nats://127.0.0.1:{closed}: connection refused"

    with socket.create_server(("127.0.0.1", access.plan.base_port + 97)) as silent:  # never greets
        url = f"nats://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        result = run_module("nats", {"subject": "ripcord.test", "sign": False, "url": url,
                                     "timeout": 1.5})
        elapsed = time.monotonic() - started
    assert result.failed and elapsed >= 1.4, elapsed  # it waited the timeout out, then gave up
    assert result.msg == f"cannot connect to NATS at {url}: no answer within 1.5s"


def test_request_without_responders_fails_clearly(run_module):
    result = run_module("nats", {"subject": "ripcord.test.nobody", "sign": False,
                                 "mode": "request"})
    assert result.failed and result.msg == "no responders on ripcord.test.nobody"


def messages_on(access, subject: str, during) -> list[bytes]:
    """What a plain NATS client subscribed to `subject` received while during() ran: a marker
    published after it, on the same connection's second subscription, says when all is in."""
    import asyncio
    import threading

    marker = f"ripcord.test.marker.{time.time_ns()}"
    ready, received, done = threading.Event(), [], []

    async def listen(nc):
        arrived = asyncio.Event()

        async def collect(message):
            received.append(message.data)

        async def end(_):
            arrived.set()

        await nc.subscribe(subject, cb=collect)
        await nc.subscribe(marker, cb=end)
        await nc.flush()
        ready.set()
        await asyncio.wait_for(arrived.wait(), timeout=30)
        done.append(True)

    listener = threading.Thread(target=access.nats, args=(listen,))
    listener.start()
    try:
        assert ready.wait(10), "the listener did not subscribe"
        during()
    finally:
        publish(access, marker, {"marker": True}, secret=None, headers={})
        listener.join()
    assert done, "the marker never arrived"
    return received


def test_check_mode_publishes_nothing(run_module, access, engines, trading):
    def run():
        result = run_module("nats", {"subject": bus.HALT_SUBJECT, "body": halt_body("HARD_HALT")},
                            check=True)
        assert result.skipped and not result.changed and result.msg == "skipped in check mode"

    assert messages_on(access, bus.HALT_SUBJECT, run) == []
    assert halted(access, engines) == dict.fromkeys(engines, False)


def test_the_hmac_secret_is_in_no_result_and_no_command_line(run_module, access, engines, trading,
                                                             monkeypatch):
    """Every command ripcord sends while it signs (reading the secret, the tunnel's host) and
    every process it starts is recorded as it is made: none carries the secret."""
    secret = access.env(engines[0])["TITAN_HMAC_SECRET"]
    sent = commands_sent(monkeypatch)
    results = [run_module("nats", {"subject": bus.HALT_SUBJECT, "body": halt_body(state),
                                   "mode": "request", "tunnel": tunnel}, host="db-1")
               for state, tunnel in (("HARD_HALT", False), ("NORMAL", True))]
    assert all(not r.failed for r in results), [r.msg for r in results]
    reads = [c for c in sent if c.startswith("db-1: cat -- ") and c.endswith(".env")]
    assert len(reads) == 2, sent  # the secret was read over a command, once per run
    assert not any(secret in command for command in sent), sent
    for result in results:
        assert secret not in json.dumps(result.registered())


# --- jetstream --------------------------------------------------------------------------------

def test_consumer_info_matches_the_monitoring_endpoint(run_module, access):
    result = run_module("jetstream", {"action": "consumer_info", "stream": "TITAN_EXECUTION",
                                      "consumer": "execution_group"})
    assert not result.failed and not result.changed, result.msg
    info = result.data
    assert info["name"] == "execution_group" and info["stream_name"] == "TITAN_EXECUTION"
    assert info["config"]["durable_name"] == "execution_group"
    assert isinstance(info["num_pending"], int) and isinstance(info["num_ack_pending"], int)
    assert info["created"] == consumer_created(access)

    stream = run_module("jetstream", {"action": "stream_info", "stream": "TITAN_EXECUTION"})
    assert not stream.changed and stream.data["config"]["name"] == "TITAN_EXECUTION"


def test_missing_stream_or_consumer_fails_clearly(run_module):
    result = run_module("jetstream", {"action": "consumer_info", "stream": "TITAN_EXECUTION",
                                      "consumer": "no_such_consumer"})
    assert result.failed
    assert result.msg == "consumer no_such_consumer on stream TITAN_EXECUTION: consumer not found"
    result = run_module("jetstream", {"action": "stream_info", "stream": "NO_SUCH_STREAM"})
    assert result.failed and result.msg == "stream NO_SUCH_STREAM: stream not found"


def test_consumer_delete_resets_and_the_engine_recreates_it(run_module, access):
    args = {"action": "consumer_delete", "stream": "TITAN_EXECUTION", "consumer": "execution_group"}
    before = consumer_created(access)
    assert before

    result = run_module("jetstream", args, check=True)
    assert result.skipped and consumer_created(access) == before

    result = run_module("jetstream", args)
    assert result.changed and not result.failed, result.msg
    recreated = access.wait_for(lambda: (consumer_created(access) or before) != before and
                                consumer_created(access), timeout=20,
                                what="the engine re-creating execution_group")
    assert recreated != before

    gone = run_module("jetstream", {**args, "consumer": "no_such_consumer"})
    assert not gone.changed and not gone.failed
    assert gone.msg == "consumer no_such_consumer on stream TITAN_EXECUTION: not found, nothing to delete"
