"""reconcile end to end: the ledger (PostgreSQL) against the exchange, on a halted fleet.

A mismatch is planted in the ledger with psql; what reconcile says is checked against the
exchange's own API, and what --fix changed is read back with psql, from the journal and from
the ledger's audit_log.
"""

from __future__ import annotations

import json
import re
import subprocess
from decimal import Decimal

import pytest
from helpers import account_in_step, exchange, publish, trading_again

from ripcord import bus

ENGINES = ("exec-1", "exec-2")
ROW = "host = 'exec-1' AND symbol = 'BTCUSDT'"


@pytest.fixture
def halted(access, secret):
    """Every engine halted by a signed halt (their health says so), the account in step with
    the ledger; trading again afterwards."""
    publish(access, bus.HALT_SUBJECT, {"state": "HARD_HALT", "reason": "pytest reconcile",
                                       "operator": "pytest", "source": "test"}, secret)
    try:
        for host in ENGINES:
            access.wait_for(lambda h=host: access.health(h, "titan-execution")["halted"] is True,
                            timeout=10, what=f"{host} halted")
        account_in_step(access)
        yield
    finally:
        trading_again(access, secret)


def task_msg(result: subprocess.CompletedProcess) -> str:
    records = [r for r in json.loads(result.stdout)["results"] if r["module"] == "reconcile"]
    assert records, result.stdout + result.stderr
    return records[0]["msg"]


def test_reconcile_refuses_a_trading_fleet(ripcord):
    result = ripcord("reconcile", "--host", "sandbox")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the engine is trading" in result.stderr and "halt the fleet first" in result.stderr


def test_reconcile_finds_a_planted_mismatch_and_fix_removes_it(access, psql, ripcord, halted,
                                                               tmp_path):
    original = psql(f"SELECT qty FROM positions WHERE {ROW}") or ["0"]
    psql("INSERT INTO positions (host, symbol, qty) VALUES ('exec-1', 'BTCUSDT', 0.25) "
         "ON CONFLICT (host, symbol) DO UPDATE SET qty = positions.qty + 0.25")
    try:
        found = ripcord("reconcile", "--host", "sandbox", "--json")
        assert found.returncode == 1, found.stdout + found.stderr
        msg = task_msg(found)
        assert msg.startswith("1 mismatch: BTCUSDT position: ours "), msg  # exactly the planted one
        ours, theirs = (Decimal(v) for v in msg.removeprefix("1 mismatch: BTCUSDT position: ours ")
                        .split(", theirs "))
        assert ours - theirs == Decimal("0.25"), msg
        key = access.env("core-1")["EXCHANGE_OPS_API_KEY"]
        status, held = exchange(access, "GET", "/api/v1/positions", key)
        assert status == 200 and {p["symbol"]: Decimal(str(p["qty"])) for p in held}.get(
            "BTCUSDT", Decimal(0)) == theirs, held

        fixed = ripcord("reconcile", "--host", "sandbox", "--fix", "--yes", "--json")
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        change = re.fullmatch(r"aligned the ledger to the exchange: position exec-1 BTCUSDT "
                              r"(\S+) -> (\S+)", task_msg(fixed))
        assert change, task_msg(fixed)
        assert [Decimal(v) for v in change.groups()] == [Decimal(original[0]) + Decimal("0.25"),
                                                         Decimal(original[0])], task_msg(fixed)
        checks = json.loads(fixed.stdout)["checks"]  # test_ledger.py: the fleet reconciles clean
        assert checks["failed"] == 0 and checks["passed"] == 1, checks
        assert Decimal(psql(f"SELECT qty FROM positions WHERE {ROW}")[0]) == Decimal(original[0])
        total = psql("SELECT coalesce(sum(qty), 0) FROM positions WHERE symbol = 'BTCUSDT'")[0]
        assert Decimal(total) == theirs
        journal = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
        assert any("position exec-1 BTCUSDT" in t["msg"] for t in journal[-1]["tasks"]), journal[-1]
        audit = psql("SELECT detail FROM audit_log WHERE action = 'reconcile' ORDER BY id DESC LIMIT 1")
        assert audit and "position exec-1 BTCUSDT" in audit[0], audit
    finally:
        psql(f"UPDATE positions SET qty = {original[0]} WHERE {ROW}")
