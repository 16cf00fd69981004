"""Engine answers: the stand-in engine signs them as ripcord verifies them, and during a secret
rotation with the key the command came with; the controller reads an SSH-down host's health
only where it sees the URL as the host does."""

import time

from ripcord import bus
from ripcord.modules import TaskContext
from ripcord.modules.httpchannel import direct_reason

INBOX = "_INBOX.abc.1"
ANSWER = b'{"host":"exec-1","halted":true}'


def test_an_engine_answer_verifies_only_over_its_inbox_body_and_key(titan_common):
    headers = titan_common.sign_headers(INBOX, ANSWER, b"current")
    assert bus.verify(INBOX, headers, ANSWER, "current") is None
    assert bus.verify("_INBOX.abc.2", headers, ANSWER, "current") == "bad signature"
    assert bus.verify(INBOX, headers, ANSWER.replace(b"exec-1", b"exec-2"), "current") \
        == "bad signature"
    assert bus.verify(INBOX, headers, ANSWER, "other") == "bad signature"
    assert bus.verify(INBOX, None, ANSWER, "current") == "unsigned"
    assert bus.verify(INBOX, {**headers, bus.SIG_HEADER: "é"}, ANSWER, "current") == "bad signature"
    stale = bus.sign(INBOX, ANSWER, "current", timestamp_ms=int((time.time() - 31) * 1000))
    assert bus.verify(INBOX, stale, ANSWER, "current").startswith("stale")


def test_an_engine_answers_with_the_key_the_command_was_signed_with(titan_common):
    verifier = titan_common.CommandVerifier(["new", "old"])
    body = bus.encode({"state": "HARD_HALT"})
    assert verifier.verify(bus.HALT_SUBJECT, bus.sign(bus.HALT_SUBJECT, body, "old"), body) is None
    assert verifier.matched == b"old"


def test_the_controller_reads_health_directly_only_where_it_sees_what_the_host_sees():
    def ctx(address: str) -> TaskContext:
        return TaskContext(host="exec-1", vars={"ansible_host": address}, conn=None)

    assert direct_reason(ctx("127.0.0.1"), "http://127.0.0.1:24031/health") is None  # this machine
    assert direct_reason(ctx("10.0.0.7"), "http://10.0.0.7:8081/health") is None
    assert direct_reason(ctx("10.0.0.7"), "http://127.0.0.1:8081/health") \
        == "http://127.0.0.1:8081/health is on exec-1's loopback"
    assert "loopback" in direct_reason(ctx("exec-1.prod"), "http://localhost:8081/health")
    assert "loopback" in direct_reason(ctx("10.0.0.7"), "http://[::1]:8081/health")


def test_an_exchange_rate_limit_is_waited_out_not_given_up_on(monkeypatch):
    """HTTP 429 (the engines share the key's per-second limit) is tried again, a second apart,
    up to RATE_LIMIT_TRIES times; what keeps answering 429 fails with the status."""
    from ripcord.connection import CommandResult
    from ripcord.errors import RipcordError
    from ripcord.modules import trading

    class Host:
        def __init__(self, codes):
            self.codes, self.calls = list(codes), 0

        def run(self, command, **kwargs):
            self.calls += 1
            return CommandResult(0, f"[]\n{self.codes.pop(0)}", "")

    sleeps: list[float] = []
    monkeypatch.setattr(trading.time, "sleep", sleeps.append)
    account = trading.ExchangeAccount.__new__(trading.ExchangeAccount)
    account.url, account.key = "http://exchange", "k"
    account.ctx = type("Ctx", (), {"conn": Host([429, 429, 200])})()
    assert account.call("GET", "/api/v1/openOrders") == []
    assert account.ctx.conn.calls == 3 and sleeps == [1.0, 1.0]
    account.ctx = type("Ctx", (), {"conn": Host([429] * trading.RATE_LIMIT_TRIES)})()
    import pytest
    with pytest.raises(RipcordError, match="HTTP 429"):
        account.call("GET", "/api/v1/openOrders")
    assert account.ctx.conn.calls == trading.RATE_LIMIT_TRIES
