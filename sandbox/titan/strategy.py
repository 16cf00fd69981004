"""titan-scavenger / titan-hunter / titan-sentinel: stand-in strategies emitting random signals.

Run as `strategy.py NAME`. Signals go to the brain over core NATS, which relays them to the
engines only while trading is allowed: so a steady flow here is what a halt has to stop.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid

import common

NAMES = ("scavenger", "hunter", "sentinel")
SIGNAL_SUBJECT = "titan.strategy.signal"
BASE_QTY = {"BTCUSDT": 0.01, "ETHUSDT": 0.1, "SOLUSDT": 1.0}  # about 650, 310, 150 USDT


class Strategy:
    def __init__(self, name: str, cfg: common.Config, log: common.Log):
        self.name, self.cfg, self.log = name, cfg, log
        self.service = f"titan-{name}"
        self.host = cfg.host
        self.port = cfg.get_int(f"TITAN_{name.upper()}_PORT")
        self.nats_url = cfg.get_url("NATS_URL", ("nats",))
        self.symbols = [s.strip() for s in cfg.get("TITAN_SYMBOLS").split(",") if s.strip()]
        self.interval = cfg.get_float("TITAN_SIGNAL_INTERVAL_S", 3)
        if not self.symbols or self.interval <= 0:
            cfg.fatal("TITAN_SYMBOLS must list a symbol and TITAN_SIGNAL_INTERVAL_S be > 0")
        self.nc = None
        self.emitted, self.last_signal_ts = 0, None
        self.started = time.time()

    async def run_nats(self) -> None:
        self.nc = await common.connect_nats(self.nats_url, self.log, f"{self.service}@{self.host}")
        self.log.info("NATS connected")
        await common.keep_running("signal", self.emit, self.log)

    async def emit(self) -> None:
        while True:
            await asyncio.sleep(self.interval * random.uniform(0.8, 1.2))
            if not self.nc.is_connected:
                continue  # a signal is worthless later: do not let the client queue it
            symbol = random.choice(self.symbols)
            signal = {"signal_id": uuid.uuid4().hex, "strategy": self.name, "host": self.host,
                      "symbol": symbol, "side": random.choice(("BUY", "SELL")),
                      "qty": round(BASE_QTY.get(symbol, 1.0) * random.choice((1, 2, 3)), 8),
                      "ts": time.time()}
            await self.nc.publish(SIGNAL_SUBJECT, json.dumps(signal).encode())
            self.emitted += 1
            self.last_signal_ts = signal["ts"]
            self.log.info(f"Signal emitted signal={signal['signal_id']} {signal['side']} "
                          f"{signal['qty']} {symbol}")

    async def on_http(self, req: common.Request) -> common.Response:
        if req.path != "/health":
            return common.Response(404, {"error": "not found"})
        nats_ok = self.nc is not None and self.nc.is_connected
        return common.Response(200, {
            "status": "ok" if nats_ok else "degraded", "service": self.service, "host": self.host,
            "version": self.cfg.version, "signals_emitted": self.emitted,
            "last_signal_ts": self.last_signal_ts, "nats_connected": nats_ok,
            "uptime_s": round(time.time() - self.started, 1)})

    async def run(self, stop: asyncio.Event) -> None:
        self.log.info(f"Starting {self.service} {self.cfg.version} host={self.host} "
                      f"port={self.port}")
        server = await common.listen(self.port, self.on_http, self.log)
        emitter = asyncio.create_task(self.run_nats())
        await stop.wait()
        self.log.info("Stopping: signal received")
        server.close()
        await common.cancel_tasks([emitter])
        await common.close_nats(self.nc)


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    log = common.Log(f"titan-{name}" if name in NAMES else "titan-strategy")
    cfg = common.Config(log.service, log)
    if name not in NAMES:
        cfg.fatal(f"unknown strategy {name!r}: expected one of {', '.join(NAMES)}")
    common.run_service(Strategy(name, cfg, log).run)


if __name__ == "__main__":
    main()
