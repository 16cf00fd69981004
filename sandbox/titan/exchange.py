"""Stand-in crypto exchange, outside the sandbox fleet as a real one would be.

It has what incidents revolve around: per-key rate limits, LIMIT orders that stay open for a
while, and a per-key dead-man's switch. State is in memory; a restart resets it to the seed.
An account may hold several API keys: a key of the account creates another and revokes one by
its id (what a key rotation needs); keys.json is rewritten on each change.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import os
import random
import secrets
import signal
import sys
import time
from urllib.parse import unquote_plus

from common import Config, Log, Request, Response, now_ms, serve_http

BASE_PRICES = {"BTCUSDT": 64000.0, "ETHUSDT": 3100.0, "SOLUSDT": 150.0}
TICK_S = 0.05  # how often LIMIT fills and dead-man's switches are checked
PRICE_STEP_MS = 100  # prices move at most this often
PUBLIC_PATHS = {"/health", "/api/v1/time", "/api/v1/ticker"}


class BadRequest(Exception):
    """A validation failure, answered as 400 with the message."""


def positive(value, name: str) -> float:
    """A strictly positive finite number (numeric strings accepted, as exchanges do)."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise BadRequest(f"{name} must be a positive number")
    return number


def public(order: dict) -> dict:
    """The order as clients see it: without the internal fields (key, fill time)."""
    return {k: v for k, v in order.items() if not k.startswith("_")}


class Ticker:
    """Prices doing a small mean-reverting random walk, stepped lazily when read."""

    def __init__(self):
        self.prices = dict(BASE_PRICES)
        self.updated = 0

    def snapshot(self) -> dict[str, float]:
        now = now_ms()
        if now - self.updated >= PRICE_STEP_MS:
            for symbol, price in self.prices.items():
                base = BASE_PRICES[symbol]
                price *= 1 + random.gauss(0, 0.0005)
                self.prices[symbol] = round(price + (base - price) * 0.01, 2)
            self.updated = now
        return self.prices


class Exchange:
    def __init__(self, config: Config, log: Log):
        self.log = log
        self.config = config
        self.revoked: dict[str, dict] = {}  # revoked keys' entries: their orders still name them
        self.rate_limit = config.get_int("EXCHANGE_RATE_LIMIT", 20)
        self.fill_delay_ms = config.get_int("EXCHANGE_FILL_DELAY_MS", 2000)
        if self.rate_limit <= 0 or self.fill_delay_ms < 0:
            config.fatal("EXCHANGE_RATE_LIMIT must be > 0 and EXCHANGE_FILL_DELAY_MS >= 0")
        self.keys = load_keys(config)
        self.positions = load_positions(config)
        self.ticker = Ticker()
        self.ids = itertools.count(1000001)
        self.orders: dict[str, dict] = {}
        self.open: dict[str, dict] = {}  # the NEW subset of orders, which the tick loop scans
        self.client_ids: dict[str, set[str]] = {}  # account -> clientOrderIds ever used
        self.windows: dict[str, tuple[int, int]] = {}  # key -> (second, requests in it)
        self.switches: dict[str, tuple[int, int]] = {}  # key -> (timeoutMs, expiresAt ms)
        self.routes = {
            "/health": {"GET": self.health},
            "/api/v1/time": {"GET": self.server_time},
            "/api/v1/ticker": {"GET": self.get_ticker},
            "/api/v1/order": {"POST": self.place_order},
            "/api/v1/order/": {"GET": self.get_order, "DELETE": self.cancel_order},
            "/api/v1/openOrders": {"GET": self.open_orders},
            "/api/v1/cancelAll": {"POST": self.cancel_all},
            "/api/v1/positions": {"GET": self.get_positions},
            "/api/v1/countdownCancelAll": {"GET": self.get_switch, "POST": self.set_switch},
            "/api/v1/apiKeys": {"GET": self.list_keys, "POST": self.create_key},
            "/api/v1/apiKeys/": {"DELETE": self.revoke_key},
        }

    # --- dispatch: routing, auth, rate limit ----------------------------------------------

    async def handle(self, req: Request) -> Response:
        route = req.path
        for prefix in ("/api/v1/order/", "/api/v1/apiKeys/"):
            if route.startswith(prefix) and len(route) > len(prefix):
                route = prefix
        methods = self.routes.get(route)
        if methods is None:
            return Response(404, {"error": "not found"})
        handler = methods.get(req.method)
        if handler is None:
            return Response(405, {"error": "method not allowed"})
        key = None
        if route not in PUBLIC_PATHS:
            key = req.headers.get("x-api-key", "")
            if key not in self.keys:
                return Response(401, {"error": "invalid api key"})
            if not self.allow(key):
                return Response(429, {"error": "rate limit exceeded"}, {"Retry-After": "1"})
        try:
            return handler(req, key)
        except BadRequest as exc:
            return Response(400, {"error": str(exc)})

    def allow(self, key: str) -> bool:
        """Fixed one-second window per key, so Retry-After: 1 is always enough."""
        second = int(time.monotonic())
        start, count = self.windows.get(key, (second, 0))
        count = count if start == second else 0
        if count >= self.rate_limit:
            return False
        self.windows[key] = (second, count + 1)
        return True

    def account(self, key: str) -> str:
        return self.keys[key]["account"]

    def label(self, key: str) -> str:
        return (self.keys.get(key) or self.revoked.get(key) or {"label": "?"})["label"]

    # --- API keys: several per account, so a rotation can overlap them -----------------------

    def list_keys(self, req: Request, key: str) -> Response:
        account = self.account(key)
        return Response(200, [{"id": key_id(k), "label": e["label"]}
                              for k, e in self.keys.items() if e["account"] == account])

    def create_key(self, req: Request, key: str) -> Response:
        """A new key of the caller's account (the value is shown once, in this answer only)."""
        label = json_object(req).get("label", self.label(key))
        if not isinstance(label, str) or not label:
            raise BadRequest("label must be a non-empty string")
        new = secrets.token_hex(20)
        self.keys[new] = {"account": self.account(key), "label": label}
        self.save_keys()
        self.log.info(f"API key {key_id(new)} ({label}) created by {self.label(key)}")
        return Response(201, {"apiKey": new, "id": key_id(new), "label": label})

    def revoke_key(self, req: Request, key: str) -> Response:
        wanted = req.path.rsplit("/", 1)[1]
        found = [k for k, e in self.keys.items()
                 if key_id(k) == wanted and e["account"] == self.account(key)]
        if not found:
            return Response(404, {"error": "no such key"})
        self.revoked[found[0]] = self.keys.pop(found[0])
        self.save_keys()
        self.log.info(f"API key {wanted} ({self.label(found[0])}) revoked by {self.label(key)}")
        return Response(200, {"revoked": wanted})

    def save_keys(self) -> None:
        """keys.json as the keys now are (mode 600, replaced whole): a restart keeps them."""
        path = self.config.home / "keys.json"
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(json.dumps(self.keys, indent=2) + "\n")
            tmp.replace(path)
        except OSError as exc:
            self.log.error(f"cannot save keys to {path}: {exc.strerror}")

    # --- public endpoints -------------------------------------------------------------------

    def health(self, req: Request, key: None) -> Response:
        return Response(200, {"status": "ok", "service": "exchange"})

    def server_time(self, req: Request, key: None) -> Response:
        return Response(200, {"serverTime": now_ms()})

    def get_ticker(self, req: Request, key: None) -> Response:
        prices, ts = self.ticker.snapshot(), self.ticker.updated
        return Response(200, [{"symbol": s, "price": p, "ts": ts} for s, p in prices.items()])

    # --- orders -----------------------------------------------------------------------------

    def place_order(self, req: Request, key: str) -> Response:
        body = json_object(req)
        symbol, side, kind = body.get("symbol"), body.get("side"), body.get("type")
        if symbol not in BASE_PRICES:
            raise BadRequest(f"unknown symbol {symbol!r}")
        if side not in ("BUY", "SELL"):
            raise BadRequest("side must be BUY or SELL")
        if kind not in ("LIMIT", "MARKET"):
            raise BadRequest("type must be LIMIT or MARKET")
        quantity = positive(body.get("quantity"), "quantity")
        price = positive(body.get("price"), "price") if kind == "LIMIT" else None
        client_id = body.get("clientOrderId")
        # A test may ask a LIMIT order to rest longer (a sandbox affordance; engines never do).
        fill_delay = int(positive(body["fillDelayMs"], "fillDelayMs")) if "fillDelayMs" in body \
            else self.fill_delay_ms
        account = self.account(key)
        used = self.client_ids.setdefault(account, set())
        if client_id is not None:
            if not isinstance(client_id, str) or not client_id:
                raise BadRequest("clientOrderId must be a non-empty string")
            if client_id in used:
                raise BadRequest(f"duplicate clientOrderId {client_id!r}")
            used.add(client_id)
        now = now_ms()
        order = {
            "orderId": str(next(self.ids)), "clientOrderId": client_id, "symbol": symbol,
            "side": side, "type": kind, "quantity": quantity, "price": price, "status": "NEW",
            "createdAt": now, "filledAt": None, "fillPrice": None, "account": account,
            "placedBy": self.label(key), "_key": key, "_fillAt": now + fill_delay,
        }
        self.orders[order["orderId"]] = order
        self.log.info(f"Order {order['orderId']} placed by {order['placedBy']}: {side} {quantity} "
                      f"{symbol} {kind}{f' @ {price}' if price else ''} client={client_id}")
        if kind == "MARKET":
            self.fill(order, self.ticker.snapshot()[symbol])
        else:
            self.open[order["orderId"]] = order
        return Response(201, public(order))

    def find(self, req: Request, key: str) -> dict | None:
        order = self.orders.get(req.path.rsplit("/", 1)[1])
        return order if order and order["account"] == self.account(key) else None

    def get_order(self, req: Request, key: str) -> Response:
        order = self.find(req, key)
        return Response(200, public(order)) if order else Response(404, {"error": "order not found"})

    def cancel_order(self, req: Request, key: str) -> Response:
        order = self.find(req, key)
        if order is None:
            return Response(404, {"error": "order not found"})
        if order["status"] != "NEW":
            raise BadRequest(f"order is already {order['status']}")
        self.cancel(order)
        self.log.info(f"Order {order['orderId']} cancelled by {self.label(key)}")
        return Response(200, public(order))

    def matching(self, account: str, prefix: str | None, symbol: str | None) -> list[dict]:
        """The account's open orders, filtered by clientOrderId prefix and symbol."""
        return [o for o in self.open.values() if o["account"] == account
                and (not prefix or (o["clientOrderId"] or "").startswith(prefix))
                and (not symbol or o["symbol"] == symbol)]

    def open_orders(self, req: Request, key: str) -> Response:
        prefix, symbol = (unquote_plus(req.query.get(n, "")) for n in ("clientPrefix", "symbol"))
        return Response(200, [public(o) for o in self.matching(self.account(key), prefix, symbol)])

    def cancel_all(self, req: Request, key: str) -> Response:
        body = json_object(req)
        prefix, symbol = body.get("clientPrefix"), body.get("symbol")
        if not all(v is None or isinstance(v, str) for v in (prefix, symbol)):
            raise BadRequest("clientPrefix and symbol must be strings")
        orders = self.matching(self.account(key), prefix, symbol)
        for order in orders:
            self.cancel(order)
        self.log.info(f"cancelAll by {self.label(key)} (clientPrefix={prefix}, symbol={symbol}): "
                      f"cancelled {len(orders)} orders")
        return Response(200, {"cancelled": len(orders)})

    def cancel(self, order: dict) -> None:
        order["status"] = "CANCELED"
        self.open.pop(order["orderId"], None)

    def fill(self, order: dict, price: float) -> None:
        """Mark the order FILLED and move the account's position (avgPrice resets across zero)."""
        order.update(status="FILLED", filledAt=now_ms(), fillPrice=price)
        self.open.pop(order["orderId"], None)
        book = self.positions.setdefault(order["account"], {})
        pos = book.setdefault(order["symbol"], {"qty": 0.0, "avgPrice": 0.0})
        old, delta = pos["qty"], order["quantity"] if order["side"] == "BUY" else -order["quantity"]
        new = round(old + delta, 10)
        if new == 0:
            pos["avgPrice"] = 0.0
        elif old == 0 or (old > 0) == (delta > 0):  # opening or adding: weighted average
            pos["avgPrice"] = round((abs(old) * pos["avgPrice"] + abs(delta) * price) / abs(new), 8)
        elif (old > 0) != (new > 0):  # crossed zero: the remainder was opened at this price
            pos["avgPrice"] = price
        pos["qty"] = new  # reducing without crossing keeps avgPrice
        self.log.info(f"Order {order['orderId']} filled: {order['side']} {order['quantity']} "
                      f"{order['symbol']} @ {price}; {order['account']} position {new}")

    def get_positions(self, req: Request, key: str) -> Response:
        book = self.positions.get(self.account(key), {})
        return Response(200, [{"symbol": s, **p} for s, p in book.items()])

    # --- dead-man's switch ------------------------------------------------------------------

    def switch_state(self, key: str) -> dict:
        timeout_ms, expires_at = self.switches.get(key, (0, None))
        return {"armed": key in self.switches, "timeoutMs": timeout_ms, "expiresAt": expires_at}

    def get_switch(self, req: Request, key: str) -> Response:
        return Response(200, self.switch_state(key))

    def set_switch(self, req: Request, key: str) -> Response:
        timeout_ms = json_object(req).get("timeoutMs")
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms < 0:
            raise BadRequest("timeoutMs must be a non-negative integer")
        if timeout_ms:
            was_armed = key in self.switches
            self.switches[key] = (timeout_ms, now_ms() + timeout_ms)
            if not was_armed:  # re-arming is a heartbeat: logging each one would flood the log
                self.log.info(f"Dead-man switch armed for {self.label(key)}: {timeout_ms} ms")
        elif self.switches.pop(key, None):
            self.log.info(f"Dead-man switch disarmed for {self.label(key)}")
        return Response(200, self.switch_state(key))

    # --- background: LIMIT fills and switch expiry ----------------------------------------

    async def run_ticks(self) -> None:
        while True:
            now = now_ms()
            for order in [o for o in self.open.values() if o["_fillAt"] <= now]:
                self.fill(order, order["price"])
            for key, (_, expires_at) in list(self.switches.items()):
                if expires_at <= now:
                    del self.switches[key]
                    orders = [o for o in self.open.values() if o["_key"] == key]
                    for order in orders:
                        self.cancel(order)
                    self.log.info(f"Dead-man switch expired for {self.label(key)}: "
                                  f"cancelled {len(orders)} orders")
            await asyncio.sleep(TICK_S)


def key_id(key: str) -> str:
    """How a key is named in the API and the log: never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def json_object(req: Request) -> dict:
    body = req.json()
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def load_json(config: Config, name: str, required: bool):
    path = config.home / name
    if not path.exists() and not required:
        return {}
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        config.fatal(f"cannot read {path}: {exc.strerror}")
    except ValueError as exc:
        config.fatal(f"{path} is not valid JSON: {exc}")


def valid_keys(keys) -> bool:
    """keys.json: {"<key>": {"account": ..., "label": ...}}, non-empty, all strings."""
    return isinstance(keys, dict) and bool(keys) and all(
        isinstance(entry, dict) and isinstance(entry.get("account"), str)
        and isinstance(entry.get("label"), str) and entry["account"] and entry["label"]
        for entry in keys.values())


def load_keys(config: Config) -> dict[str, dict]:
    """The API keys at start-up; errors never echo a key."""
    keys = load_json(config, "keys.json", required=True)
    if not valid_keys(keys):
        config.fatal(f"{config.home / 'keys.json'} must map each key to a string account and label")
    return keys


def reload_keys(exchange: Exchange, config: Config, log: Log) -> None:
    """SIGHUP: pick up keys added or revoked in keys.json; a bad file keeps the keys in force."""
    try:
        keys = json.loads((config.home / "keys.json").read_text())
    except (OSError, ValueError):
        keys = None
    if not valid_keys(keys):
        log.error("keys.json reload failed: keeping the keys in force")
        return
    exchange.keys = keys
    log.info(f"reloaded keys.json ({len(keys)} keys)")


def load_positions(config: Config) -> dict[str, dict[str, dict]]:
    """positions.json (optional): {"<account>": {"<symbol>": {"qty": .., "avgPrice": ..}}}."""
    seed = load_json(config, "positions.json", required=False)
    book: dict[str, dict[str, dict]] = {}
    try:
        for account, symbols in seed.items():
            book[account] = {s: {"qty": float(p["qty"]), "avgPrice": float(p["avgPrice"])}
                             for s, p in symbols.items()}
    except (AttributeError, KeyError, TypeError, ValueError):
        config.fatal(f"{config.home / 'positions.json'} must map account -> symbol -> "
                     "{qty, avgPrice}")
    return book


def quiet_cancellation(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """Python 3.11.7 reports keep-alive connections cancelled at shutdown as errors: drop those."""
    if not isinstance(context.get("exception"), asyncio.CancelledError):
        loop.default_exception_handler(context)


async def main() -> None:
    log = Log("exchange")
    config = Config("exchange", log)
    port = config.get_int("EXCHANGE_PORT")
    if not 0 < port < 65536:
        config.fatal("EXCHANGE_PORT must be between 1 and 65535")
    exchange = Exchange(config, log)
    try:
        server = await serve_http(port, exchange.handle, log)
    except OSError as exc:
        log.error(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}")
        sys.exit(1)
    loop, stop = asyncio.get_running_loop(), asyncio.Event()
    loop.set_exception_handler(quiet_cancellation)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_keys, exchange, config, log)
    ticks = asyncio.create_task(exchange.run_ticks())
    log.info(f"listening on 127.0.0.1:{port} ({len(exchange.keys)} keys, rate limit "
             f"{exchange.rate_limit}/s, fill delay {exchange.fill_delay_ms} ms)")
    await stop.wait()
    log.info("stopping")
    ticks.cancel()
    server.close()
    save_positions(exchange, config, log)


def save_positions(exchange: Exchange, config: Config, log: Log) -> None:
    """Keep the account's positions across a restart, as a real exchange does: the ledger in
    PostgreSQL survives `sandbox down`/`up`, so the account must too, or they disagree."""
    path = config.home / "positions.json"
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(exchange.positions, indent=2) + "\n")
        tmp.replace(path)
    except OSError as exc:
        log.error(f"cannot save positions to {path}: {exc.strerror}")


if __name__ == "__main__":
    asyncio.run(main())
