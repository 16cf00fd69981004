"""titan-execution's books in PostgreSQL: orders, fills, positions, the audit log and the signals
taken on (each traded once).

Every call goes through Ledger.run, so an outage shows up once in the log, as degraded health,
and as DbError for the caller to retry; asyncpg's pool reconnects by itself afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from decimal import Decimal

import asyncpg
import common

DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
SIGNAL_MEMORY_S = 3600  # how long a taken signal is remembered (a stale one is dropped anyway)

# A fill moves the position by a signed qty; the average price follows the usual rules:
# weighted when the position grows, unchanged when it shrinks, the fill price when it flips.
UPSERT_POSITION = """
INSERT INTO positions AS p (host, symbol, qty, avg_price) VALUES ($1, $2, $3, $4)
ON CONFLICT (host, symbol) DO UPDATE SET
  qty = p.qty + EXCLUDED.qty,
  avg_price = CASE
    WHEN p.qty + EXCLUDED.qty = 0 THEN 0
    WHEN p.qty = 0 OR sign(p.qty) = sign(EXCLUDED.qty) THEN round(
      (abs(p.qty) * p.avg_price + abs(EXCLUDED.qty) * EXCLUDED.avg_price)
      / abs(p.qty + EXCLUDED.qty), 8)
    WHEN sign(p.qty + EXCLUDED.qty) = sign(p.qty) THEN p.avg_price
    ELSE EXCLUDED.avg_price END,
  updated_at = now()
"""


class DbError(Exception):
    """PostgreSQL is unavailable or refused a statement."""


class Ledger:
    def __init__(self, db_args: dict, host: str, log: common.Log):
        self.db_args, self.host, self.log = db_args, host, log
        self.pool: asyncpg.Pool | None = None
        self.connected = False
        self.outage_logged = False
        self.audit_backlog: list[tuple] = []
        self.audit_lock = asyncio.Lock()

    async def check(self) -> bool:
        """Called every second: connect, or probe after an outage. True on a new connection."""
        if self.pool is None:
            return await self.connect()
        if not self.connected:
            with contextlib.suppress(DbError):
                await self.run(lambda c: c.execute("SELECT 1"))
        return False

    async def connect(self) -> bool:
        try:
            # min_size=0: asyncpg would otherwise log a traceback a second restoring the floor
            # during an outage; check() already probes once a second
            self.pool = await asyncpg.create_pool(**self.db_args, min_size=0, init_size=1,
                                                  max_size=4, timeout=2, command_timeout=3)
        except DB_ERRORS as exc:
            self._down(exc)
            return False
        return True

    async def run(self, fn, timeout: float = 3.0):
        """Run fn(conn) in one transaction."""
        if self.pool is None:
            raise DbError("database not connected")
        try:
            async with asyncio.timeout(timeout):
                async with self.pool.acquire() as conn, conn.transaction():
                    result = await fn(conn)
        except DB_ERRORS as exc:
            self._down(exc)
            raise DbError(f"database error: {exc.__class__.__name__}") from None
        if not self.connected:
            self.log.info("PostgreSQL connected")
        self.connected, self.outage_logged = True, False
        return result

    def _down(self, exc: Exception) -> None:
        if not self.outage_logged:
            self.log.warn(f"PostgreSQL unavailable ({exc.__class__.__name__}: {exc}); retrying")
        self.connected, self.outage_logged = False, True

    async def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()

    async def positions(self, symbol: str = "ALL", timeout: float = 3.0) -> dict[str, Decimal]:
        """This host's non-zero positions, optionally for one symbol."""
        rows = await self.run(lambda c: c.fetch(
            "SELECT symbol, qty FROM positions WHERE host = $1 AND qty <> 0"
            " AND ($2 = 'ALL' OR symbol = $2) ORDER BY symbol", self.host, symbol), timeout)
        return {r["symbol"]: r["qty"] for r in rows}

    async def working_orders(self) -> list[dict]:
        """Orders an earlier run left working, to keep reconciling them."""
        rows = await self.run(lambda c: c.fetch(
            "SELECT id, client_order_id AS coid, exchange_order_id AS exchange_id, symbol, side,"
            " qty"
            " FROM orders WHERE host = $1 AND status = 'NEW'", self.host))
        return [dict(r) for r in rows]

    async def record_order(self, order: dict, strategy: str, kind: str, price, status: str,
                           signal_id: str | None = None) -> int:
        return await self.run(lambda c: c.fetchval(
            "INSERT INTO orders (client_order_id, exchange_order_id, host, strategy, symbol, side,"
            " type, qty, price, status, signal_id) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"
            " RETURNING id",
            order["coid"], order["exchange_id"], self.host, strategy, order["symbol"],
            order["side"], kind, order["qty"], None if price is None else Decimal(str(price)),
            status, signal_id))

    # A signal is taken on once, fleet-wide: the row is the claim, in the database every engine
    # shares, so a signal JetStream delivers again (a consumer reset replays the stream, to this
    # engine or another, before or after a restart) is never traded twice.
    async def take_signal(self, signal_id: str) -> bool:
        """True when this engine may trade the signal: no engine has taken it before."""
        return bool(await self.run(lambda c: c.fetchval(
            "INSERT INTO signals (signal_id, host) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            " RETURNING true", signal_id, self.host)))

    async def release_signal(self, signal_id: str) -> None:
        """Give a signal back when its order was not placed, so that a retry may place it."""
        await self.run(lambda c: c.execute(
            "DELETE FROM signals WHERE signal_id = $1 AND host = $2", signal_id, self.host))

    async def prune_signals(self) -> None:
        """Forget signals after SIGNAL_MEMORY: older ones are stale anyway (and the stream's
        max_age is an hour), so the table stays bounded."""
        await self.run(lambda c: c.execute(
            "DELETE FROM signals WHERE taken_at < now() - make_interval(secs => $1)",
            float(SIGNAL_MEMORY_S)))

    async def book_fill(self, order: dict, price: Decimal) -> None:
        """Book a fill exactly once: order FILLED, a fills row, the position moved."""
        signed = order["qty"] if order["side"] == "BUY" else -order["qty"]

        async def book(conn) -> None:
            if await conn.fetchval("UPDATE orders SET status = 'FILLED', updated_at = now()"
                                   " WHERE id = $1 AND status <> 'FILLED' RETURNING id",
                                   order["id"]):
                await conn.execute(
                    "INSERT INTO fills (order_id, host, symbol, side, qty, price)"
                    " VALUES ($1, $2, $3, $4, $5, $6)",
                    order["id"], self.host, order["symbol"], order["side"], order["qty"], price)
                await conn.execute(UPSERT_POSITION, self.host, order["symbol"], signed, price)

        await self.run(book)

    async def mark_canceled(self, order_id: int) -> None:
        await self.run(lambda c: c.execute(
            "UPDATE orders SET status = 'CANCELED', updated_at = now()"
            " WHERE id = $1 AND status = 'NEW'", order_id))

    async def audit(self, actor: str, action: str, detail: dict) -> None:
        """Queue an audit row and try to write it: an outage must not lose who pulled a switch."""
        self.audit_backlog.append((time.time(), self.host, actor or "unknown", action,
                                   json.dumps(detail)))
        await self.flush_audit()

    async def flush_audit(self) -> None:
        async with self.audit_lock:
            while self.audit_backlog:
                row = self.audit_backlog[0]
                try:  # ts is when it happened, not when the outage let us write it
                    await self.run(lambda c, row=row: c.execute(
                        "INSERT INTO audit_log (ts, host, actor, action, detail)"
                        " VALUES (to_timestamp($1), $2, $3, $4, $5::jsonb)", *row))
                except DbError:
                    return
                self.audit_backlog.pop(0)
