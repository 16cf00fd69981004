"""titan-market-data: polls the exchange ticker, publishes prices on NATS, order books in Redis.

The engines price their LIMIT orders from these prices; runbooks read the Redis books and the
health's last_price_ts to tell a stale feed (sandbox fault stale_prices) from a live one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time

import common
import redis.asyncio as aioredis
import redis.exceptions

SERVICE = "titan-market-data"
POLL_S = 0.5
STALE_AFTER_S = 5.0  # health turns degraded when the newest price is older than this


class MarketData:
    def __init__(self, cfg: common.Config, log: common.Log):
        self.cfg, self.log = cfg, log
        self.host = cfg.host
        self.port = cfg.get_int("TITAN_MARKET_DATA_PORT")
        self.nats_url = cfg.get_url("NATS_URL", ("nats",))
        self.ticker_url = cfg.get_url("EXCHANGE_URL", ("http",)).rstrip("/") + "/api/v1/ticker"
        self.redis = aioredis.from_url(cfg.get_url("REDIS_URL", ("redis",)), socket_timeout=1,
                                       socket_connect_timeout=1)
        self.symbols = [s.strip() for s in cfg.get("TITAN_SYMBOLS").split(",") if s.strip()]
        if not self.symbols:
            cfg.fatal("TITAN_SYMBOLS lists no symbol")
        self.nc = None
        self.redis_ok: bool | None = None  # None until the first attempt
        self.exchange_ok: bool | None = None
        self.last_price_ts: float | None = None
        self.started = time.time()

    async def poll(self) -> None:
        while True:
            if self.cfg.fault("stale_prices") or self.cfg.latched("stuck_feed"):
                await asyncio.sleep(POLL_S)
                continue
            try:
                status, _, ticker = await common.http_json("GET", self.ticker_url, timeout=1.0)
                if status != 200 or not isinstance(ticker, list):
                    raise ConnectionError(f"ticker answered HTTP {status}")
                prices = {t["symbol"]: float(t["price"])
                          for t in ticker if t.get("symbol") in self.symbols}
                self.set_exchange(True, "")
            except (ConnectionError, KeyError, TypeError, ValueError) as exc:
                self.set_exchange(False, str(exc))
                await asyncio.sleep(POLL_S)
                continue
            now = time.time()
            await self.publish(prices, now)
            await self.store_books(prices, now)
            if prices:
                self.last_price_ts = now
            await asyncio.sleep(POLL_S)

    async def publish(self, prices: dict[str, float], now: float) -> None:
        if self.nc is None or not self.nc.is_connected:
            return
        for symbol, price in prices.items():
            tick = {"symbol": symbol, "price": price, "ts": now}
            await self.nc.publish(f"titan.data.price.{symbol}", json.dumps(tick).encode())

    async def store_books(self, prices: dict[str, float], now: float) -> None:
        """A synthetic 5-level book around the price, one key per symbol. Under the sandbox fault
        desync_book the first symbol's book is left as it was while the others move on."""
        frozen = self.symbols[0] if self.cfg.latched("desync_book") else None
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for symbol, price in prices.items():
                    if symbol == frozen:
                        continue
                    pipe.set(f"orderbook:{symbol}", json.dumps(book(symbol, price, now)))
                await pipe.execute()
        except (redis.exceptions.RedisError, OSError) as exc:
            if self.redis_ok is not False:
                self.log.warn(f"Redis unavailable ({exc.__class__.__name__}); retrying")
            self.redis_ok = False
            return
        if not self.redis_ok:
            self.log.info("Redis connected")
        self.redis_ok = True

    def set_exchange(self, ok: bool, why: str) -> None:
        if ok != self.exchange_ok:
            self.log.info("Exchange ticker available") if ok else self.log.warn(
                f"Exchange ticker unavailable ({why}); retrying")
        self.exchange_ok = ok

    async def on_http(self, req: common.Request) -> common.Response:
        if req.path != "/health":
            return common.Response(404, {"error": "not found"})
        nats_ok = self.nc is not None and self.nc.is_connected
        fresh = self.last_price_ts is not None and time.time() - self.last_price_ts < STALE_AFTER_S
        return common.Response(200, {
            "status": "ok" if nats_ok and self.redis_ok and fresh else "degraded",
            "service": SERVICE, "host": self.host, "version": self.cfg.version,
            "last_price_ts": self.last_price_ts, "symbols": self.symbols,
            "redis_connected": bool(self.redis_ok), "nats_connected": nats_ok,
            "uptime_s": round(time.time() - self.started, 1)})

    async def connect(self) -> None:
        self.nc = await common.connect_nats(self.nats_url, self.log, f"{SERVICE}@{self.host}")
        self.log.info("NATS connected")

    async def run(self, stop: asyncio.Event) -> None:
        self.log.info(f"Starting {SERVICE} {self.cfg.version} host={self.host} port={self.port} "
                      f"symbols={','.join(self.symbols)}")
        server = await common.listen(self.port, self.on_http, self.log)
        tasks = [asyncio.create_task(self.connect()),
                 asyncio.create_task(common.keep_running("price", self.poll, self.log))]
        await stop.wait()
        self.log.info("Stopping: signal received")
        server.close()
        await common.cancel_tasks(tasks)
        await common.close_nats(self.nc)
        with contextlib.suppress(redis.exceptions.RedisError, OSError):  # TimeoutError included
            await asyncio.wait_for(self.redis.aclose(), 0.5)


def book(symbol: str, price: float, ts: float) -> dict:
    """Five levels a basis point apart, each worth 5k-50k USDT."""
    def level(distance: int) -> list[float]:
        return [round(price * (1 + distance * 0.0001), 2),
                round(random.uniform(5_000, 50_000) / price, 4)]

    return {"symbol": symbol, "bids": [level(-i) for i in range(1, 6)],
            "asks": [level(i) for i in range(1, 6)], "ts": ts}


def main() -> None:
    log = common.Log(SERVICE)
    common.run_service(MarketData(common.Config(SERVICE, log), log).run)


if __name__ == "__main__":
    main()
