"""titan-execution: the stand-in order engine on an exec host.

It takes strategy signals from the shared JetStream work queue, places orders at the exchange,
books fills in PostgreSQL (ledger.py), and obeys the kill switches the runbooks pull: the halt
file and the signed NATS commands (halt, flatten, cancel-all), answering each with a signed reply
that names this host.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.parse
import uuid
from decimal import Decimal, InvalidOperation
from pathlib import Path

import common
from exchange_client import Exchange, ExchangeError
from ledger import DbError, Ledger
from signal_queue import SignalQueue

SERVICE = "titan-execution"
CMD_HALT = "titan.cmd.sys.halt.v1"
CMD_FLATTEN = "titan.cmd.risk.flatten"
CMD_CANCEL_ALL = "titan.cmd.exec.cancel_all"
STATE_EVENT = "titan.evt.exec.state"
LEAK_CHUNK, LEAK_CHUNKS = 128 << 20, 2  # fault leak_memory: +128 MB a second, up to 256 MB
STALE_SIGNAL_S = 10.0
DEADMAN_EVERY_S = 5.0
DEADMAN_TIMEOUT_MS = 15000
DEFAULT_PRICES = {"BTCUSDT": 64000.0, "ETHUSDT": 3100.0, "SOLUSDT": 150.0}


class Engine:
    def __init__(self, cfg: common.Config, log: common.Log):
        self.cfg, self.log = cfg, log
        self.host = cfg.host
        self.prefix = f"{self.host}-"  # clientOrderId prefix: how this engine finds its own orders
        self.port = cfg.get_int("TITAN_EXECUTION_PORT")
        self.nats_url = cfg.get_url("NATS_URL", ("nats",))
        self.secret = cfg.get("TITAN_HMAC_SECRET")
        self.verifier = common.CommandVerifier(
            [self.secret, cfg.optional("TITAN_HMAC_SECRET_PREVIOUS") or ""])
        self.exchange = Exchange(cfg.get_url("EXCHANGE_URL", ("http",)),
                                 cfg.get("EXCHANGE_API_KEY"), log)
        self.ledger = Ledger(dict(host=cfg.get("TITAN_DB_HOST"), port=cfg.get_int("TITAN_DB_PORT"),
                                  database=cfg.get("TITAN_DB_NAME"), user=cfg.get("TITAN_DB_USER"),
                                  password=cfg.get("TITAN_DB_PASSWORD")), self.host, log)
        self.halt_file = Path(cfg.get("TITAN_HALT_FILE", str(cfg.home / "system.halt")))
        # the secrets this engine read at start, as fingerprints: what a rotation verifies
        self.fingerprints = {k: common.fingerprint(k, v) for k in (
            "TITAN_HMAC_SECRET", "TITAN_HMAC_SECRET_PREVIOUS", "TITAN_DB_PASSWORD", "EXCHANGE_API_KEY")
            if (v := cfg.optional(k))}
        self.state_path = cfg.home / "state" / "execution.json"
        self.nats_halt = self.load_nats_halt()
        self.file_halt: str | None = None  # the halt file's reason while it is in force
        self.announced: tuple[str, str | None] = ("NORMAL", None)  # (state, source) acted upon
        self.halted_since: float | None = None
        self.pending_cancel = False  # halted, but working orders not yet cancelled at the exchange
        self.nc = self.js = None
        self.prices: dict[str, float] = {}
        self.working: dict[str, dict] = {}  # client_order_id -> order we believe is working
        self.positions: dict[str, float] = {}  # last read, served while the DB is down
        self.signals_received, self.last_signal_ts, self.last_order_ts = 0, None, None
        self.tasks: set[asyncio.Task] = set()
        self.cancel_lock, self.reconcile_lock = asyncio.Lock(), asyncio.Lock()
        self.started = time.time()
        self.next_prune = 0.0  # when housekeeping next forgets old signals (monotonic)
        self.leaked: list[bytes] = []  # sandbox fault leak_memory: what the leak holds

    # --- halt state -----------------------------------------------------------------------

    def load_nats_halt(self) -> dict:
        """The NATS halt survives restarts; an unreadable state file keeps the engine halted."""
        try:
            state = json.loads(self.state_path.read_text())
            if state.get("state") in ("HARD_HALT", "NORMAL"):
                return state
        except FileNotFoundError:
            return {"state": "NORMAL", "reason": None, "operator": None, "ts": None}
        except (OSError, ValueError, AttributeError):
            pass
        self.log.error(f"Cannot read {self.state_path}: staying HALTED until a signed NORMAL")
        return {"state": "HARD_HALT", "reason": "unreadable state file", "operator": "engine",
                "ts": time.time()}

    @property
    def halt_source(self) -> str | None:
        sources = [name for name, on in (("file", self.file_halt is not None),
                                         ("nats", self.nats_halt["state"] == "HARD_HALT")) if on]
        return "+".join(sources) or None

    @property
    def halted(self) -> bool:
        return self.halt_source is not None

    def check_halt_file(self) -> None:
        present = self.halt_file.exists() and not self.cfg.fault("ignore_halt_file")
        if present == (self.file_halt is not None):
            return
        self.file_halt = None
        if present:  # operators often write the reason into the file
            with contextlib.suppress(OSError):
                self.file_halt = self.halt_file.read_text(errors="replace").strip()[:200]
            self.file_halt = self.file_halt or "halt file present"
        self.update_state(self.file_halt or "halt file removed", "halt-file")

    def update_state(self, reason: str, operator: str, always_announce: bool = False) -> None:
        """Act on a change of halted state or of its source, and announce it on NATS."""
        source = self.halt_source
        now = ("HARD_HALT" if source else "NORMAL", source)
        before, self.announced = self.announced, now
        if now == before and not always_announce:
            return
        if now[0] == "HARD_HALT" and before[0] == "NORMAL":
            self.halted_since = time.time()
            self.log.warn(f"System HALTED source={source} reason={reason} operator={operator}")
            self.pending_cancel = True
            self.spawn(self.cancel_and_disarm())
            self.spawn(self.ledger.audit(operator, "halt", {"source": source, "reason": reason}))
        elif now[0] == "NORMAL" and before[0] == "HARD_HALT":
            self.halted_since, self.pending_cancel = None, False
            self.log.info(f"System NORMAL: trading resumed operator={operator}")
            self.spawn(self.arm_deadman())
            self.spawn(self.ledger.audit(operator, "resume", {"reason": reason}))
        elif now != before:
            self.log.warn(f"Halt source now {source} reason={reason} operator={operator}")
        if self.nc is not None and self.nc.is_connected:
            self.spawn(self.nc.publish(STATE_EVENT, json.dumps({
                "host": self.host, "service": SERVICE, "state": now[0], "halted": self.halted,
                "halt_source": source, "reason": reason, "operator": operator,
                "ts": time.time()}).encode()))

    async def watch_halt_file(self) -> None:
        while True:
            self.check_halt_file()
            await asyncio.sleep(0.05)

    async def cancel_and_disarm(self) -> None:
        """On halt: cancel this engine's working orders and disarm its dead-man's switch."""
        async with self.cancel_lock:
            if not (self.halted and self.pending_cancel):
                return
            try:
                result = await self.exchange.call("POST", "/api/v1/cancelAll",
                                                  {"clientPrefix": self.prefix})
                await self.exchange.call("POST", "/api/v1/countdownCancelAll", {"timeoutMs": 0})
            except ExchangeError as exc:
                self.log.error(f"Halt: cancelling working orders failed ({exc}); retrying")
                return
            self.pending_cancel = False
            cancelled = result.get("cancelled") if isinstance(result, dict) else "?"
            self.log.info(f"Halt: cancelled {cancelled} working orders, dead-man's switch disarmed")
        await self.reconcile()

    async def arm_deadman(self) -> None:
        try:
            await self.exchange.call("POST", "/api/v1/countdownCancelAll",
                                     {"timeoutMs": DEADMAN_TIMEOUT_MS})
        except ExchangeError as exc:
            if exc.status is not None:  # an outage is already logged by the client
                self.log.error(f"Dead-man's switch not armed: {exc}")
        if self.halted:  # a halt raced the re-arm: make sure the switch ends disarmed
            self.pending_cancel = True

    async def deadman_loop(self) -> None:
        """Keep the exchange countdown armed while trading: a dead engine's orders get cancelled."""
        while True:
            if not self.halted:
                await self.arm_deadman()
            else:  # still probe the exchange, so health tells the truth while halted
                with contextlib.suppress(ExchangeError):
                    await self.exchange.call("GET", "/api/v1/countdownCancelAll")
            await asyncio.sleep(DEADMAN_EVERY_S)

    # --- signed commands --------------------------------------------------------------------

    async def on_command(self, msg) -> None:
        if self.cfg.fault("deaf_nats"):
            return
        subject = msg.subject
        rejected = self.verifier.verify(subject, msg.headers, msg.data)
        if rejected:
            self.log.warn(common.rejection_log_line(subject, rejected))
            return
        key = self.verifier.matched  # the answer is signed with the secret the command was
        try:
            body = json.loads(msg.data)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError:
            self.log.error(f"Malformed command on {subject}: body is not a JSON object; ignored")
            return
        targets = body.get("targets")
        if isinstance(targets, list) and self.host not in targets:
            return  # addressed to other engines: a per-host halt or flatten is not fleet-wide
        operator = str(body.get("operator") or "unknown")
        reason = str(body.get("reason") or "")
        if subject == CMD_HALT:
            result = self.halt_command(body.get("state"), reason, operator)
        elif subject == CMD_FLATTEN:
            result = await self.flatten(body.get("symbol"), reason, operator)
        else:
            result = await self.cancel_all(reason, operator)
        if result is not None and msg.reply:
            answer = json.dumps({
                "ok": not result.get("errors"), "host": self.host, "service": SERVICE,
                "command": subject, "state": self.announced[0], "halted": self.halted,
                **result}).encode()
            await self.nc.publish(msg.reply, answer,
                                  headers=common.sign_headers(msg.reply, answer, key))

    def halt_command(self, state, reason: str, operator: str) -> dict | None:
        if state not in ("HARD_HALT", "NORMAL"):
            self.log.error(f"Halt command with unknown state {state!r} operator={operator}; "
                           "ignored")
            return None
        self.log.info(f"Halt command accepted state={state} reason={reason} operator={operator}")
        self.nats_halt = {"state": state, "reason": reason, "operator": operator, "ts": time.time()}
        try:
            common.write_json_atomic(self.state_path, self.nats_halt)
        except OSError as exc:
            self.log.error(f"Cannot persist halt state to {self.state_path}: {exc.strerror}")
        self.update_state(reason, operator, always_announce=True)
        return {}

    async def flatten(self, symbol, reason: str, operator: str) -> dict | None:
        """Close this host's positions with MARKET orders; allowed while halted (its point)."""
        if not isinstance(symbol, str) or not symbol:
            self.log.error(f"Flatten command without a symbol operator={operator}; ignored")
            return None
        symbol = symbol.upper()
        self.log.warn(f"Flatten requested symbol={symbol} reason={reason} operator={operator}")
        flattened, errors = [], []
        try:
            positions = await self.ledger.positions(symbol)
        except DbError as exc:
            positions, errors = {}, [f"positions unavailable: {exc}"]
        for sym, qty in positions.items():
            try:
                order, reply = await self.place(sym, "SELL" if qty > 0 else "BUY", abs(qty),
                                                "MARKET", "flatten")
                if reply.get("status") != "FILLED":
                    raise ExchangeError(f"market order {order['coid']} is {reply.get('status')}")
                await self.ledger.book_fill(order, fill_price(reply))
            except (ExchangeError, DbError) as exc:
                self.log.error(f"Flatten failed symbol={sym}: {exc}")
                errors.append(f"{sym}: {exc}")
                continue
            self.log.warn(f"Flatten complete symbol={sym} qty={qty}")
            flattened.append({"symbol": sym, "qty": float(qty)})
        if not positions and not errors:
            self.log.info(f"Flatten complete symbol={symbol} qty=0 (no open position)")
        self.spawn(self.ledger.audit(operator, "flatten", {
            "symbol": symbol, "reason": reason, "flattened": flattened, "errors": errors}))
        return {"flattened": flattened, "errors": errors}

    async def cancel_all(self, reason: str, operator: str) -> dict:
        try:
            result = await self.exchange.call("POST", "/api/v1/cancelAll",
                                              {"clientPrefix": self.prefix})
            cancelled, errors = result.get("cancelled", 0), []
        except ExchangeError as exc:
            cancelled, errors = 0, [str(exc)]
        self.log.warn(f"Cancel-all: cancelled={cancelled} errors={len(errors)} reason={reason} "
                      f"operator={operator}")
        self.spawn(self.ledger.audit(operator, "cancel_all", {
            "reason": reason, "cancelled": cancelled, "errors": errors}))
        self.spawn(self.reconcile())  # books the cancels; the reply need not wait for it
        return {"cancelled": cancelled, "errors": errors}

    # --- orders -----------------------------------------------------------------------------

    async def place(self, symbol: str, side: str, qty: Decimal, kind: str, strategy: str,
                    price: float | None = None, signal_id: str | None = None) -> tuple[dict, dict]:
        """Send an order and book it; an order that cannot be booked is cancelled at once."""
        coid = f"{self.prefix}{uuid.uuid4().hex[:12]}"
        request = {"symbol": symbol, "side": side, "type": kind, "quantity": float(qty),
                   "clientOrderId": coid}
        if price is not None:
            request["price"] = price
        reply = await self.exchange.call("POST", "/api/v1/order", request)
        self.last_order_ts = time.time()
        order = {"coid": coid, "exchange_id": str(reply.get("orderId")), "symbol": symbol,
                 "side": side, "qty": Decimal(qty)}
        status = reply.get("status", "NEW")
        try:  # a FILLED order is booked NEW here: book_fill marks it FILLED with its fill
            order["id"] = await self.ledger.record_order(order, strategy, kind, price,
                                                         "NEW" if status == "FILLED" else status,
                                                         signal_id)
        except DbError:
            if status == "NEW":
                await self.exchange.call("DELETE", f"/api/v1/order/{order['exchange_id']}")
            raise
        if status == "NEW":
            self.working[coid] = order
        return order, reply

    async def reconcile(self) -> None:
        """Orders gone from the exchange's open list were filled or cancelled: book which."""
        async with self.reconcile_lock:
            if not self.working:
                return
            query = urllib.parse.urlencode({"clientPrefix": self.prefix})
            try:
                listed = await self.exchange.call("GET", f"/api/v1/openOrders?{query}") or []
            except ExchangeError:
                return
            still_open = {o.get("clientOrderId") for o in listed}
            for coid, order in list(self.working.items()):
                if coid in still_open:
                    continue
                try:
                    reply = await self.exchange.call("GET", f"/api/v1/order/{order['exchange_id']}")
                    status = reply.get("status")
                except ExchangeError as exc:
                    if exc.status != 404:
                        continue
                    reply, status = {}, "CANCELED"  # unknown to the exchange: it cannot fill
                try:
                    if status == "FILLED":
                        await self.ledger.book_fill(order, fill_price(reply))
                    elif status == "CANCELED":
                        await self.ledger.mark_canceled(order["id"])
                    else:
                        continue
                except DbError:
                    continue
                del self.working[coid]
                price = f" @ {fill_price(reply)}" if status == "FILLED" else ""
                self.log.info(f"Order {status} id={coid} {order['side']} {order['qty']} "
                              f"{order['symbol']}{price}")

    # --- signals ----------------------------------------------------------------------------

    async def handle_signal(self, msg) -> None:
        try:
            signal = json.loads(msg.data)
            sid, strategy, symbol, side = (str(signal[k])
                                           for k in ("signal_id", "strategy", "symbol", "side"))
            qty, ts = Decimal(str(signal["qty"])), float(signal["ts"])
            if side not in ("BUY", "SELL") or not qty > 0:
                raise ValueError("bad side or qty")
        except (ValueError, KeyError, TypeError, InvalidOperation) as exc:
            self.log.error(f"Malformed signal dropped ({exc.__class__.__name__})")
            await msg.ack()
            return
        self.signals_received += 1
        self.last_signal_ts = time.time()
        if (age := time.time() - ts) > STALE_SIGNAL_S:
            self.log.warn(f"Stale signal dropped signal={sid} strategy={strategy} age={age:.1f}s")
        elif self.halted:
            self.log.warn(f"Order Rejected: System Halted signal={sid} strategy={strategy} "
                          f"symbol={symbol}")
        elif not self.ledger.connected:  # do not trade what we cannot book; the outage is logged
            await msg.nak(delay=1)
            return
        elif not await self.take_signal(sid, msg):
            return
        else:
            last = self.prices.get(symbol) or DEFAULT_PRICES.get(symbol, 100.0)
            price = round(last * (1.001 if side == "BUY" else 0.999), 2)  # marketable limit
            try:
                order, _ = await self.place(symbol, side, qty, "LIMIT", strategy, price, sid)
            except (ExchangeError, DbError) as exc:
                if isinstance(exc, ExchangeError) and exc.status not in (None, 429):
                    self.log.error(f"Order refused by exchange signal={sid}: {exc}")
                else:  # transient: any engine may place it while it is still fresh
                    if msg.metadata.num_delivered == 1:  # once per signal, not per retry
                        self.log.error(f"Order not placed signal={sid}: {exc}; will retry")
                    if isinstance(exc, ExchangeError):  # not placed: a retry may place it
                        with contextlib.suppress(DbError):  # else it stays taken: never twice
                            await self.ledger.release_signal(sid)
                    await msg.nak(delay=1)
                    return
            else:
                self.log.info(f"Order placed id={order['coid']} {side} {qty} {symbol} @ {price} "
                              f"signal={sid} strategy={strategy}")
                if self.halted:  # a halt landed while the order was in flight
                    self.pending_cancel = True
        await msg.ack()

    async def take_signal(self, sid: str, msg) -> bool:
        """Claim the signal in the ledger before trading it. A signal taken before (JetStream
        delivers it again after a consumer reset) is acked and dropped; a database error naks."""
        try:
            if await self.ledger.take_signal(sid):
                return True
        except DbError:
            await msg.nak(delay=1)
            return False
        self.log.warn(f"Duplicate signal dropped signal={sid}: traded already")
        await msg.ack()
        return False

    # --- plumbing ---------------------------------------------------------------------------

    async def housekeeping(self) -> None:
        """Every second: (re)connect the DB, retry halt cancels, reconcile, flush audit rows."""
        while True:
            if await self.ledger.check():
                with contextlib.suppress(DbError):  # orders an earlier run left working
                    for order in await self.ledger.working_orders():
                        self.working.setdefault(order["coid"], order)
            if self.halted and self.pending_cancel:
                await self.cancel_and_disarm()
            await self.reconcile()
            await self.ledger.flush_audit()
            if self.cfg.latched("leak_memory") and len(self.leaked) < LEAK_CHUNKS:
                self.leaked.append(b"\xa5" * LEAK_CHUNK)  # written, so resident: a real leak
            if time.monotonic() > self.next_prune:
                with contextlib.suppress(DbError):
                    await self.ledger.prune_signals()
                    self.next_prune = time.monotonic() + 60
            await asyncio.sleep(1)

    def spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def on_price(self, msg) -> None:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            data = json.loads(msg.data)
            self.prices[str(data["symbol"])] = float(data["price"])

    async def run_nats(self) -> None:
        self.nc = await common.connect_nats(self.nats_url, self.log, f"{SERVICE}@{self.host}")
        self.js = self.nc.jetstream()
        self.log.info("NATS connected")
        for subject in (CMD_HALT, CMD_FLATTEN, CMD_CANCEL_ALL):
            await self.nc.subscribe(subject, cb=self.on_command)
        await self.nc.subscribe("titan.data.price.*", cb=self.on_price)
        self.update_state("engine started", "engine", always_announce=True)
        await common.keep_running("signal", self.consume_signals, self.log)

    async def consume_signals(self) -> None:
        async for batch in SignalQueue(self.js, self.log).batches():
            for msg in batch:
                await self.handle_signal(msg)

    async def on_http(self, request: common.Request) -> common.Response:
        if request.path != "/health":
            return common.Response(404, {"error": "not found"})
        if request.method != "GET":
            return common.Response(405, {"error": "method not allowed"})
        with contextlib.suppress(DbError):  # else the last known; db_connected says they may be old
            self.positions = {s: float(q) for s, q in
                              (await self.ledger.positions(timeout=1.0)).items()}
        nats_ok = self.nc is not None and self.nc.is_connected
        ok = nats_ok and self.ledger.connected and self.exchange.healthy
        return common.Response(200, {
            "status": "ok" if ok else "degraded", "service": SERVICE, "host": self.host,
            "version": self.cfg.version, "state": self.announced[0], "halted": self.halted,
            "halt_source": self.halt_source, "halted_since": self.halted_since,
            "positions": self.positions, "open_orders": len(self.working),
            "last_order_ts": self.last_order_ts, "signals_received": self.signals_received,
            "last_signal_ts": self.last_signal_ts,
            "secret_fingerprint": common.secret_fingerprint(self.secret),
            "secret_fingerprints": self.fingerprints,
            "nats_connected": nats_ok, "db_connected": self.ledger.connected,
            "uptime_s": round(time.time() - self.started, 1)})

    async def run(self, stop: asyncio.Event) -> None:
        self.log.info(f"Starting {SERVICE} {self.cfg.version} host={self.host} port={self.port}")
        server = await common.listen(self.port, self.on_http, self.log)
        self.check_halt_file()
        if self.nats_halt["state"] == "HARD_HALT":  # restored from state/execution.json
            self.update_state(self.nats_halt.get("reason") or "",
                              self.nats_halt.get("operator") or "")
        loops = [asyncio.create_task(common.keep_running(name, loop, self.log)) for name, loop in (
            ("halt-file", self.watch_halt_file), ("housekeeping", self.housekeeping),
            ("dead-man", self.deadman_loop))] + [asyncio.create_task(self.run_nats())]
        await stop.wait()
        self.log.info("Stopping: signal received")
        server.close()
        await common.cancel_tasks(loops + list(self.tasks))
        await common.close_nats(self.nc)
        await self.ledger.close()


def fill_price(reply: dict) -> Decimal:
    return Decimal(str(reply.get("fillPrice") or reply.get("price") or 0))


def main() -> None:
    log = common.Log(SERVICE)
    common.run_service(Engine(common.Config(SERVICE, log), log).run)


if __name__ == "__main__":
    main()
