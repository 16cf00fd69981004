"""reconcile's comparison and its fix, without a fleet (ripcord/modules/state.py)."""

from __future__ import annotations

import pytest

from ripcord.errors import DeclinedError, RipcordError
from ripcord.modules.base import TaskContext
from ripcord.modules.state import Reconcile, compare

ENGINES = ["exec-1", "exec-2"]


def rows(*items):
    return [dict(zip(("kind", "host", "symbol", "qty", "id", "ref"), item, strict=True)) for item in items]


LEDGER = rows(("position", "exec-1", "BTCUSDT", "0.75", None, None),
              ("position", "exec-2", "BTCUSDT", "-0.25", None, None),
              ("fills", "exec-1", "BTCUSDT", "0.5", None, None),
              ("fills", "exec-2", "BTCUSDT", "-0.25", None, None),
              ("order", "exec-1", "SOLUSDT", "1", "exec-1-aaa", "17"))


def test_compare_lists_each_difference_with_ours_and_theirs():
    exchange_orders = [{"clientOrderId": "exec-2-bbb", "symbol": "ETHUSDT"},
                       {"clientOrderId": "manual-1", "symbol": "ETHUSDT"}]  # not an engine's
    found = compare(LEDGER, {"BTCUSDT": 0.25, "SOLUSDT": 0.0}, exchange_orders, ENGINES)
    assert found == [
        {"kind": "position", "symbol": "BTCUSDT", "ours": "0.5", "theirs": "0.25"},
        {"kind": "order", "symbol": "SOLUSDT", "order": "exec-1-aaa", "ours": "working",
         "theirs": "not open"},
        {"kind": "order", "symbol": "ETHUSDT", "order": "exec-2-bbb", "ours": "none",
         "theirs": "open"}]
    assert compare(LEDGER[:2], {"BTCUSDT": "0.500000001"}, [], ENGINES) == []  # below 1e-8


def test_fix_puts_the_difference_on_the_row_its_own_fills_contradict():
    found = compare(LEDGER[:4], {"BTCUSDT": 0.25}, [], ENGINES)
    changes, sql = Reconcile().plan_fix(TaskContext("exec-1", {}, None), {}, LEDGER[:4], found,
                                        ENGINES, {"BTCUSDT": 0.25})
    assert changes == ["position exec-1 BTCUSDT 0.75 -> 0.5"]
    assert "VALUES ('exec-1', 'BTCUSDT', 0.5)" in sql and "exec-2" not in sql.split("audit_log")[0]


def test_fix_refuses_a_difference_it_cannot_attribute():
    found = compare(LEDGER[:4], {"BTCUSDT": 1}, [], ENGINES)  # neither fills nor one holder say
    with pytest.raises(RipcordError, match="tell whose row is wrong: nothing was changed"):
        Reconcile().plan_fix(TaskContext("exec-1", {}, None), {}, LEDGER[:4], found, ENGINES,
                             {"BTCUSDT": 1})


def test_fix_books_the_fill_of_an_order_the_exchange_filled(monkeypatch):
    """exec-1's SELL 1 SOLUSDT filled at the exchange, never booked: the order, its fill and the
    position are what the engine would have written; no other position change."""
    class Account:
        def __init__(self, ctx, key):
            pass

        def call(self, method, path):
            assert (method, path) == ("GET", "/api/v1/order/17")
            return {"status": "FILLED", "fillPrice": 151.5}

    monkeypatch.setattr("ripcord.modules.trading.ExchangeAccount", Account)
    ledger = rows(("order", "exec-1", "SOLUSDT", "-1", "exec-1-aaa", "17"))
    found = compare(ledger, {"SOLUSDT": -1}, [], ENGINES)
    assert len(found) == 2  # the order, and the position it moved
    changes, sql = Reconcile().plan_fix(TaskContext("exec-1", {}, None), {"key": "K"}, ledger, found,
                                        ENGINES, {"SOLUSDT": -1})
    assert changes == ["order exec-1-aaa NEW -> FILLED, its fill booked (-1 @ 151.5)",
                       "position exec-1 SOLUSDT 0 -> -1"]
    assert "INSERT INTO fills" in sql and "SELECT id, host, symbol, side, qty, 151.5 FROM o" in sql


def test_fix_asks_for_the_typed_word_and_a_no_changes_nothing(monkeypatch):
    found = compare(LEDGER[:4], {"BTCUSDT": 0.25}, [], ENGINES)
    monkeypatch.setattr(Reconcile, "settled",
                        lambda self, ctx, args, engines: (LEDGER, {"BTCUSDT": 0.25}, found))
    written, asked = [], []
    monkeypatch.setattr(Reconcile, "write", lambda self, ctx, sql: written.append(sql))
    ctx = TaskContext("exec-1", {}, None, confirm=lambda prompt, typed: asked.append(typed) or False)
    with pytest.raises(DeclinedError):
        Reconcile().run(ctx, Reconcile.with_defaults({"fix": True, "engines": ENGINES}))
    assert asked == ["RECONCILE"] and written == []
    result = Reconcile().run(ctx, Reconcile.with_defaults({"fix": False, "engines": ENGINES}))
    assert result.failed and result.msg == "1 mismatch: BTCUSDT position: ours 0.5, theirs 0.25"
