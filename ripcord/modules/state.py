"""reconcile, and the preflight of recover-state and reconcile: the data corruption runbook
(runbook 000 §2) and the position mismatch runbooks (002 scenario 2, 003), docs/runbook.md.

The engines keep their books in PostgreSQL; the exchange keeps the truth. After a state reset,
a crash or a bug the two can differ, and trading on wrong books multiplies the damage. So
`reconcile` reads both sides and lists every difference (symbol, ours, theirs): the account's
position per symbol (the exchange holds one account; the ledger one row per engine) and each
engine order open on one side only. With `fix` it aligns the ledger to the exchange after a
typed confirmation, in one transaction, and says every row it changed (journaled with the run).

It compares a halted fleet only (the preflight refuses one that may trade, exit 2): while the
engines trade, orders are always in flight between the exchange and the ledger. Right after a
halt the engines still book their last fills and cancels, so a difference counts only once two
reads a second apart agree on it (`settle` seconds at most).
"""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal, InvalidOperation
from typing import Any

from ripcord.errors import DeclinedError, InputError, RipcordError, UnreachableError
from ripcord.modules.base import Arg, Module, Result, TaskContext, register

ENGINE = "titan-execution"
CONSUMER = ("TITAN_EXECUTION", "execution_group")  # the engines' shared JetStream work queue
HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # an engine's name: its orders' id prefix
EPSILON = Decimal("0.00000001")
WORD = "RECONCILE"

# One read of the ledger: every non-zero position, every working engine order, and what each
# engine's fills add up to (the position its own fills say it holds), as CSV for psql.
LEDGER_SQL = """SELECT 'position' AS kind, host, symbol, qty::text AS qty, NULL AS id, NULL AS ref
  FROM positions WHERE qty <> 0
UNION ALL SELECT 'order', host, symbol, (CASE side WHEN 'BUY' THEN qty ELSE -qty END)::text,
  client_order_id, exchange_order_id FROM orders WHERE status = 'NEW'
UNION ALL SELECT 'fills', host, symbol,
  sum(CASE side WHEN 'BUY' THEN qty ELSE -qty END)::text, NULL, NULL
  FROM fills GROUP BY host, symbol
ORDER BY 1, 2, 3, 5"""


def number(text: Any) -> Decimal:
    try:
        return Decimal(str(text)).quantize(EPSILON)
    except (InvalidOperation, ValueError):
        raise RipcordError(f"not a quantity: {text!r}") from None


def show(qty: Decimal) -> str:
    return format(qty.normalize(), "f") if qty else "0"


def compare(ledger: list[dict], exchange_positions: dict[str, Any], exchange_orders: list[dict],
            engines: list[str]) -> list[dict[str, str]]:
    """Every difference, as {kind, symbol, ours, theirs} (orders also `order`): the account's
    position per symbol against the sum of the ledger's rows; the engines' working orders (by
    clientOrderId, whose prefix is the engine's name) against the exchange's open ones."""
    ours: dict[str, Decimal] = {}
    for row in ledger:
        if row["kind"] == "position":
            ours[row["symbol"]] = ours.get(row["symbol"], Decimal(0)) + number(row["qty"])
    theirs = {s: number(q) for s, q in exchange_positions.items()}
    found = [{"kind": "position", "symbol": s, "ours": show(ours.get(s, Decimal(0))),
              "theirs": show(theirs.get(s, Decimal(0)))}
             for s in sorted(set(ours) | set(theirs))
             if abs(ours.get(s, Decimal(0)) - theirs.get(s, Decimal(0))) >= EPSILON]
    prefixes = tuple(f"{h}-" for h in engines)
    working = {r["id"]: r for r in ledger if r["kind"] == "order"}
    open_ = {o.get("clientOrderId"): o for o in exchange_orders
             if str(o.get("clientOrderId") or "").startswith(prefixes)}
    for coid in sorted(set(working) | set(open_)):
        if coid in working and coid in open_:
            continue
        order = working.get(coid) or open_[coid]
        found.append({"kind": "order", "symbol": order["symbol"], "order": coid,
                      "ours": "working" if coid in working else "none",
                      "theirs": "open" if coid in open_ else "not open"})
    return found


def describe(mismatch: dict[str, str]) -> str:
    what = f"order {mismatch['order']}" if mismatch["kind"] == "order" else "position"
    return f"{mismatch['symbol']} {what}: ours {mismatch['ours']}, theirs {mismatch['theirs']}"


def quote_literal(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


@register
class Reconcile(Module):
    """Compare the ledger's positions and working orders with the exchange's; `fix` aligns
    the ledger to the exchange after a typed RECONCILE (--yes answers it).

    Changed: with fix, when the ledger differed and was aligned; a compare never.
    Check mode: compares (failing on a mismatch); with fix says what it would align.
    Example:
        - name: the ledger against the exchange, the fleet halted
          reconcile:
            engines: "{{ groups['exec'] }}"
          run_once: true
    """

    name = "reconcile"
    args = {
        "fix": Arg(bool, default=False, help="align the ledger to the exchange (typed RECONCILE)"),
        "engines": Arg(list, required=True, help="the engines' names (their ledger rows and order prefix)"),
        "settle": Arg((int, float), default=5, help="seconds for a difference to hold still"),
        "key": Arg(str, default="EXCHANGE_API_KEY", help="the exchange key's name in env_file"),
    }

    @classmethod
    def check_combination(cls, args: dict) -> list[str]:
        engines = args.get("engines")
        if isinstance(engines, list):
            return [f"engine name {e!r} is not a host name" for e in engines
                    if not isinstance(e, str) or not HOST.fullmatch(e)]
        return []

    def run(self, ctx: TaskContext, args: dict) -> Result:
        engines = [str(e) for e in args["engines"]]
        bad = self.check_combination({"engines": engines})
        if bad or not engines:
            return Result(failed=True, msg="; ".join(bad) or "no engines to reconcile")
        try:
            ledger, positions, found = self.settled(ctx, args, engines)
            if not found:
                return Result(msg="the ledger matches the exchange: positions and open orders",
                              data={"mismatches": []})
            listed = "; ".join(describe(m) for m in found)
            if args["fix"] and ctx.check:
                return Result(changed=True, msg=f"would align the ledger to the exchange: {listed}",
                              data={"mismatches": found})
            if not args["fix"]:
                return Result(failed=True, msg=f"{len(found)} mismatch"
                              f"{'es' if len(found) > 1 else ''}: {listed}",
                              data={"mismatches": found})
            if ctx.confirm is None or not ctx.confirm(
                    f"Align the ledger to the exchange ({listed})?", WORD):
                raise DeclinedError("declined: the ledger was not changed", hint="nothing was changed")
            changes, sql = self.plan_fix(ctx, args, ledger, found, engines, positions)
            self.write(ctx, sql)
            left = self.settled(ctx, args, engines)[2]
        except (UnreachableError, DeclinedError):
            raise
        except RipcordError as exc:
            return Result(failed=True, msg=str(exc))
        data = {"mismatches": found, "changes": changes, "left": left}
        if left:
            return Result(failed=True, changed=True, data=data,
                          msg=f"changed {'; '.join(changes)}, yet still: "
                              + "; ".join(describe(m) for m in left))
        return Result(changed=True, data=data,
                      msg=f"aligned the ledger to the exchange: {'; '.join(changes)}")

    # --- reading ---------------------------------------------------------------------------

    def settled(self, ctx: TaskContext, args: dict, engines: list[str]
                ) -> tuple[list[dict], dict[str, Any], list[dict]]:
        """(ledger rows, exchange positions, mismatches) once two reads a second apart agree
        on the mismatches, or settle is up."""
        deadline = time.monotonic() + float(args["settle"])
        ledger, positions, found = self.read(ctx, args, engines)
        while found and time.monotonic() < deadline:
            time.sleep(1)
            again = self.read(ctx, args, engines)
            if again[2] == found:
                return again
            ledger, positions, found = again
        return ledger, positions, found

    def read(self, ctx: TaskContext, args: dict, engines: list[str]
             ) -> tuple[list[dict], dict[str, Any], list[dict]]:
        from ripcord.modules.trading import ExchangeAccount

        ledger = self.query(ctx, LEDGER_SQL, write=False)
        account = ExchangeAccount(ctx, args["key"])
        positions = account.positions()
        orders = account.open_orders([f"{e}-" for e in engines])
        return ledger, positions, compare(ledger, positions, orders, engines)

    def query(self, ctx: TaskContext, sql: str, write: bool) -> list[dict]:
        from dataclasses import replace

        from ripcord.modules.data import Postgres

        # Postgres skips writes under --check; reconcile writes only with fix, never in check mode
        out = Postgres().run(replace(ctx, check=False), Postgres.with_defaults(
            {"action": "query", "sql": sql, "write": write}))
        if out.failed:
            raise RipcordError(f"the ledger: {out.msg}")
        return out.data["rows"]

    # --- fixing ----------------------------------------------------------------------------

    def plan_fix(self, ctx: TaskContext, args: dict, ledger: list[dict], found: list[dict],
                 engines: list[str], positions: dict[str, Any]) -> tuple[list[str], str]:
        """What to change in the ledger, said and as SQL. Orders first: one the exchange filled
        is booked as the engine books a fill (order FILLED, a fills row, the position moved).
        Then each symbol whose positions still differ: the difference goes to the engine rows
        that disagree with their own fills when that explains it, else to the only engine
        holding the symbol; else it cannot be told whose row is wrong: refused."""
        from ripcord.modules.trading import ExchangeAccount

        changes, sql = [], []
        before = {(r["host"], r["symbol"]): number(r["qty"]) for r in ledger if r["kind"] == "position"}
        rows = dict(before)
        fills = {(r["host"], r["symbol"]): number(r["qty"]) for r in ledger if r["kind"] == "fills"}
        moved: set[tuple[str, str]] = set()  # rows a booked fill moved
        orders = [m for m in found if m["kind"] == "order"]
        account = ExchangeAccount(ctx, args["key"]) if orders else None
        for m in orders:
            coid = m["order"]
            if m["ours"] == "working":  # the exchange no longer has it open: say what it became
                row = next(r for r in ledger if r["kind"] == "order" and r["id"] == coid)
                status, price = self.exchange_status(account, row)
                update = (f"UPDATE orders SET status = {quote_literal(status)}, updated_at = now() "
                          f"WHERE client_order_id = {quote_literal(coid)} AND status = 'NEW'")
                if status == "CANCELED":
                    changes.append(f"order {coid} NEW -> CANCELED")
                    sql.append(update + ";")
                    continue
                key, signed = (row["host"], row["symbol"]), number(row["qty"])
                changes.append(f"order {coid} NEW -> FILLED, its fill booked ({show(signed)} @ "
                               f"{show(price)})")
                sql.append(f"WITH o AS ({update} RETURNING id, host, symbol, side, qty) "
                           "INSERT INTO fills (order_id, host, symbol, side, qty, price) "
                           f"SELECT id, host, symbol, side, qty, {show(price)} FROM o;")
                rows[key] = rows.get(key, Decimal(0)) + signed
                fills[key] = fills.get(key, Decimal(0)) + signed
                moved.add(key)
            else:  # open at the exchange, unknown to the ledger: booked as working
                order = next(o for o in account.open_orders([coid]) if o.get("clientOrderId") == coid)
                host = next(e for e in engines if coid.startswith(f"{e}-"))
                changes.append(f"order {coid} (none) -> NEW, as the exchange has it")
                values = [coid, order.get("orderId"), host, "reconcile", order["symbol"],
                          order["side"], order.get("type") or "LIMIT"]
                sql.append("INSERT INTO orders (client_order_id, exchange_order_id, host, strategy, "
                           "symbol, side, type, qty, price, status) VALUES ("
                           + ", ".join(quote_literal(v) for v in values)
                           + f", {number(order['quantity'])}, "
                           + (str(number(order["price"])) if order.get("price") else "NULL")
                           + ", 'NEW');")
        targets = {key: rows[key] for key in moved}
        theirs_all = {s: number(q) for s, q in positions.items()}
        for symbol in sorted({s for _, s in rows} | set(theirs_all)):
            ours = sum((q for (_, s), q in rows.items() if s == symbol), Decimal(0))
            theirs = theirs_all.get(symbol, Decimal(0))
            if abs(ours - theirs) < EPSILON:
                continue
            holders = sorted({h for h, s in set(rows) | set(fills) if s == symbol} or set(engines))
            by_fills = {h: fills.get((h, symbol), Decimal(0)) for h in holders}
            if sum(by_fills.values()) == theirs:
                targets.update({(h, symbol): q for h, q in by_fills.items()})
            elif len(holders) == 1:
                targets[(holders[0], symbol)] = rows.get((holders[0], symbol), Decimal(0)) + theirs - ours
            else:
                raise RipcordError(f"{symbol}: ours {show(ours)}, theirs {show(theirs)}, and "
                                   f"neither the fills nor a single holder ({', '.join(holders)}) "
                                   "tell whose row is wrong: nothing was changed")
        for (host, symbol), qty in sorted(targets.items()):
            was = before.get((host, symbol), Decimal(0))
            if qty == was:
                continue
            changes.append(f"position {host} {symbol} {show(was)} -> {show(qty)}")
            sql.append("INSERT INTO positions AS p (host, symbol, qty) VALUES "
                       f"({quote_literal(host)}, {quote_literal(symbol)}, {show(qty)}) "
                       f"ON CONFLICT (host, symbol) DO UPDATE SET qty = {show(qty)}, avg_price = "
                       f"CASE WHEN {show(qty)} = 0 THEN 0 ELSE p.avg_price END, updated_at = now();")
        audit = [ctx.host, str(ctx.vars.get("ripcord_operator") or "ripcord"), "reconcile",
                 json.dumps({"changes": changes})]
        sql.append("INSERT INTO audit_log (host, actor, action, detail) VALUES ("
                   + ", ".join(map(quote_literal, audit)) + ");")
        return changes, "\n".join(sql) + "\n"

    @staticmethod
    def exchange_status(account, row: dict) -> tuple[str, Decimal]:
        """(FILLED or CANCELED, the fill price) as the exchange says; an order it does not know
        cannot fill."""
        ref = row.get("ref")
        if not ref or not str(ref).isdigit():
            return "CANCELED", Decimal(0)
        try:
            reply = account.call("GET", f"/api/v1/order/{ref}") or {}
        except RipcordError as exc:
            if "HTTP 404" not in str(exc):
                raise
            return "CANCELED", Decimal(0)
        if reply.get("status") not in ("FILLED", "CANCELED"):
            raise RipcordError(f"order {row['id']}: the exchange says {reply.get('status')}, yet "
                               "does not list it open")
        return reply["status"], number(reply.get("fillPrice") or reply.get("price") or 0)

    def write(self, ctx: TaskContext, sql: str) -> None:
        self.query(ctx, sql, write=True)


# --- preflight: read the fleet, refuse with exit 2 before anything runs -------------------------

def preflight(procedure: str, inventory, pattern: str, extra_vars: dict) -> None:
    """recover-state and reconcile act on the whole fleet's engines (one shared consumer, one
    exchange account): a --host that leaves an engine out is invalid input. reconcile compares
    a halted fleet only: an engine that may trade is refused, with nothing read or changed."""
    selected = set(inventory.select(pattern))
    hostvars = {h: inventory.host_vars(h) for h in inventory.select("all")}
    engines = sorted(h for h, v in hostvars.items() if ENGINE in (v.get("services") or []))
    if not engines:
        raise InputError(f"the inventory has no host that runs {ENGINE}")
    left_out = [h for h in engines if h not in selected]
    if left_out:
        raise InputError(f"--host {pattern} leaves out {', '.join(left_out)}: {procedure} acts on "
                         "every engine (one consumer, one exchange account)",
                         hint="select the whole fleet, e.g. --host sandbox")
    if procedure == "recover-state":
        if not any("postgresql" in (hostvars[h].get("services") or []) for h in selected):
            raise InputError(f"--host {pattern} selects no database host: recover-state "
                             "snapshots the database first", hint="e.g. --host sandbox")
        return
    problems = _trading(inventory, engines)
    if problems:
        raise InputError("reconcile refused, nothing was read: " + "; ".join(problems),
                         hint="halt the fleet first (invoke halt): positions move while engines trade")


def _trading(inventory, engines: list[str]) -> list[str]:
    """Why each engine may be trading (its health not saying halted), or can't be read."""
    from concurrent.futures import ThreadPoolExecutor

    from ripcord.modules.service import may_trade
    from ripcord.templating import Secrets, Templar, resolve_vars
    from ripcord.verify import connect

    connections, unreachable = connect(inventory, engines)
    problems = [f"{h} cannot be read ({why})" for h, why in sorted(unreachable.items())]
    try:
        def ask(host: str) -> str | None:
            ctx = TaskContext(host, resolve_vars(Templar(), dict(inventory.host_vars(host))),
                              connections[host], timeout=30, templar=Templar(), secrets=Secrets())
            why = may_trade(ctx, ENGINE)
            return f"{host}: {why}" if why else None

        with ThreadPoolExecutor(max_workers=len(connections) or 1) as pool:
            problems += [p for p in pool.map(ask, sorted(connections)) if p]
    finally:
        for conn in connections.values():
            conn.close()
    return problems
