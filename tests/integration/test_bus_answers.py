"""Engine answers on NATS are signed by the engine, and only an authentic answer in an expected
engine's name counts: a plain bus client that answers first for exec-1 (unsigned, signed with
the wrong key, or carrying the command's own signature) is no acknowledgement.

exec-1's engine is made deaf to NATS (the sandbox's deaf_nats fault), so the forger is the only
one answering in its name; the engine's own state is read with curl.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading

import pytest
from helpers import engine, trading_again

from ripcord import bus

ENGINES = ("exec-1", "exec-2")


@pytest.fixture(autouse=True)
def trading_afterwards(access, secret):
    """Every test leaves the fleet trading: no fault, no halt file, signed NORMAL."""
    yield
    trading_again(access, secret, ENGINES, timeout=10)


@contextlib.contextmanager
def forger(access, claims: str):
    """A plain NATS client (no secret) that answers every command first, in `claims`' name:
    unsigned, signed with a wrong key, and with the command's own signature headers copied."""
    ready, stop, answered = threading.Event(), threading.Event(), []

    async def forge(nc):
        async def answer(msg):
            if not msg.reply:
                return
            body = json.dumps({"ok": True, "host": claims, "service": "titan-execution",
                               "command": msg.subject, "state": "HARD_HALT", "halted": True,
                               "cancelled": 0, "errors": []}).encode()
            await nc.publish(msg.reply, body)
            await nc.publish(msg.reply, body, headers=bus.sign(msg.reply, body, "not-the-secret"))
            await nc.publish(msg.reply, body, headers=dict(msg.headers or {}))
            await nc.flush()
            answered.append(msg.subject)

        await nc.subscribe("titan.cmd.>", cb=answer)
        await nc.flush()
        ready.set()
        await asyncio.get_running_loop().run_in_executor(None, stop.wait)

    thread = threading.Thread(target=access.nats, args=(forge,))
    thread.start()
    try:
        assert ready.wait(10), "the forger did not subscribe"
        yield answered
    finally:
        stop.set()
        thread.join(10)


def records(result: subprocess.CompletedProcess, module: str) -> dict[str, dict]:
    payload = json.loads(result.stdout)
    return {r["host"]: r for r in payload["results"] if r["module"] == module}


def test_a_forged_halt_answer_is_no_acknowledgement(access, ripcord):
    access.ssh("exec-1", 'touch "$TITAN_HOME/state/faults/deaf_nats"')
    with forger(access, "exec-1") as answered:
        result = ripcord("halt", "--host", "sandbox", "--json")
    assert answered == [bus.HALT_SUBJECT]  # the forger did answer, first: exec-1 never does
    assert result.returncode == 0, result.stdout + result.stderr
    halt = records(result, "halt")
    msg = halt["exec-1"]["msg"]
    assert msg.startswith("halted by the halt file"), msg  # not "halted by NATS"
    assert "ignored an answer claiming to be exec-1: unsigned" in msg, msg
    assert "ignored an answer claiming to be exec-1: bad signature" in msg, msg
    assert "no NATS answer from exec-1" in msg, msg
    assert engine(access, "exec-1")["halt_source"] == "file"  # the engine took no NATS halt
    assert halt["exec-2"]["msg"].startswith("halted by NATS"), halt["exec-2"]


def test_a_forged_cancel_all_answer_is_no_answer(access, ripcord):
    access.ssh("exec-1", 'touch "$TITAN_HOME/state/faults/deaf_nats"')
    with forger(access, "exec-1") as answered:
        result = ripcord("cancel-all", "--host", "sandbox", "--yes", "--json")
    assert answered == [bus.CANCEL_ALL_SUBJECT]
    assert result.returncode == 1, result.stdout + result.stderr
    answers = records(result, "titan_command")
    assert answers["exec-1"]["outcome"] == "failed", answers["exec-1"]
    assert "no answer from the engine" in answers["exec-1"]["msg"]
    assert "ignored an answer claiming to be exec-1" in answers["exec-1"]["msg"]
    assert answers["exec-2"]["outcome"] == "changed", answers["exec-2"]


def test_an_engine_signs_its_answer_over_the_reply_inbox(access, secret):
    body = bus.encode({"state": "NORMAL", "reason": "pytest", "operator": "pytest",
                       "source": "test", "targets": ["exec-2"]})

    async def ask(nc):
        return await nc.request(bus.HALT_SUBJECT, body, timeout=2,
                                headers=bus.sign(bus.HALT_SUBJECT, body, secret))

    reply = access.nats(ask)
    assert json.loads(reply.data)["host"] == "exec-2"
    assert bus.SIG_HEADER in (reply.headers or {}), reply.headers  # the engine signed it
    assert bus.verify(reply.subject, reply.headers, reply.data, secret) is None
    assert bus.verify(reply.subject, reply.headers, reply.data, "not-the-secret") == "bad signature"
    assert bus.verify("_INBOX.another", reply.headers, reply.data, secret) == "bad signature"


def test_the_nats_module_says_whether_a_reply_is_the_engines(run_module, access):
    args = {"subject": bus.HALT_SUBJECT, "mode": "request",
            "body": {"state": "NORMAL", "reason": "pytest", "operator": "pytest",
                     "source": "test", "targets": ["exec-1"]}}
    genuine = run_module("nats", args)
    assert genuine.data["reply"]["host"] == "exec-1" and genuine.data["reply_verified"] is True
    assert genuine.msg.endswith(": answered"), genuine.msg
    access.ssh("exec-1", 'touch "$TITAN_HOME/state/faults/deaf_nats"')
    with forger(access, "exec-1"):
        forged = run_module("nats", args)
    assert forged.data["reply"]["host"] == "exec-1" and forged.data["reply_verified"] is False
    assert "unsigned: not an engine's acknowledgement" in forged.msg, forged.msg
