"""titan-brain: the stand-in risk gate between strategies and execution.

Strategy signals reach the engines only through here, and only while the master arm is on and
the circuit breaker is CLOSED: these are the two switches runbooks flip over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import time

import common

SERVICE = "titan-brain"
SIGNAL_SUBJECT = "titan.strategy.signal"


class Brain:
    def __init__(self, cfg: common.Config, log: common.Log):
        self.cfg, self.log = cfg, log
        self.host = cfg.host
        self.port = cfg.get_int("TITAN_BRAIN_PORT")
        self.nats_url = cfg.get_url("NATS_URL", ("nats",))
        self.state_path = cfg.home / "state" / "brain.json"
        self.armed, self.breaker = self.load_state()
        self.nc = self.js = None
        self.stream_ready = False
        self.forwarded = self.blocked = 0
        self.blocked_by: str | None = None  # why signals are held back, logged once per change
        self.started = time.time()

    def load_state(self) -> tuple[bool, dict]:
        """Switch positions survive restarts; a fresh brain is armed with the breaker CLOSED."""
        breaker = {"state": "CLOSED", "reason": None, "tripped_at": None, "reset_by": None}
        try:
            state = json.loads(self.state_path.read_text())
            return bool(state.get("armed", True)), {**breaker, **state.get("breaker", {})}
        except FileNotFoundError:
            return True, breaker
        except (OSError, ValueError, AttributeError, TypeError):
            self.log.error(f"Cannot read {self.state_path}: starting DISARMED, breaker OPEN")
            return False, {**breaker, "state": "OPEN", "reason": "unreadable state file",
                           "tripped_at": time.time()}

    def save_state(self) -> None:
        try:
            common.write_json_atomic(self.state_path,
                                     {"armed": self.armed, "breaker": self.breaker})
        except OSError as exc:
            self.log.error(f"Cannot persist brain state to {self.state_path}: {exc.strerror}")

    # --- signal relay -----------------------------------------------------------------------

    async def on_signal(self, msg) -> None:
        block = ("master arm disabled" if not self.armed else
                 f"breaker {self.breaker['state']}" if self.breaker["state"] != "CLOSED" else None)
        if block != self.blocked_by:
            self.blocked_by = block
            if block:
                self.log.warn(f"Signals blocked: {block}")
            else:
                self.log.info("Signals flowing")
        if block:
            self.blocked += 1
            return
        try:
            signal_id = str(json.loads(msg.data)["signal_id"])
        except (ValueError, KeyError, TypeError):
            self.log.error("Malformed strategy signal dropped")
            return
        try:
            if not self.stream_ready:
                await common.ensure_exec_stream(self.js)
                self.stream_ready = True
            # the signal id doubles as JetStream's de-duplication id
            await self.js.publish(common.EXEC_SIGNAL_SUBJECT, msg.data, timeout=2,
                                  headers={"Nats-Msg-Id": signal_id})
        except Exception as exc:  # noqa: BLE001 - JetStream down or stream deleted: retry later
            self.stream_ready = False
            self.log.error(f"Relay failed signal={signal_id} ({exc.__class__.__name__}); dropped")
            return
        self.forwarded += 1

    async def run_nats(self) -> None:
        self.nc = await common.connect_nats(self.nats_url, self.log, f"{SERVICE}@{self.host}")
        self.js = self.nc.jetstream()
        self.log.info("NATS connected")
        try:
            await common.ensure_exec_stream(self.js)
            self.stream_ready = True
        except Exception as exc:  # noqa: BLE001 - retried on the first signal
            self.log.warn(f"Cannot ensure stream {common.EXEC_STREAM} yet "
                          f"({exc.__class__.__name__})")
        await self.nc.subscribe(SIGNAL_SUBJECT, cb=self.on_signal)

    # --- HTTP -------------------------------------------------------------------------------

    async def on_http(self, req: common.Request) -> common.Response:
        routes = {
            ("GET", "/health"): self.health,
            ("GET", "/api/breaker"): lambda _: common.Response(200, self.breaker),
            ("POST", "/api/breaker/reset"): self.reset_breaker,
            ("POST", "/api/breaker/trip"): self.trip_breaker,
            ("GET", "/api/execution/master-arm"):
                lambda _: common.Response(200, {"enabled": self.armed}),
            ("POST", "/api/execution/master-arm"): self.set_master_arm,
        }
        handler = routes.get((req.method, req.path))
        if handler is None:
            known = any(path == req.path for _, path in routes)
            return common.Response(405 if known else 404,
                                   {"error": "method not allowed" if known else "not found"})
        return await handler(req) if req.method == "POST" else handler(req)

    def health(self, _req) -> common.Response:
        nats_ok = self.nc is not None and self.nc.is_connected
        return common.Response(200, {
            "status": "ok" if nats_ok else "degraded", "service": SERVICE, "host": self.host,
            "version": self.cfg.version, "armed": self.armed, "breaker": self.breaker["state"],
            "signals_forwarded": self.forwarded, "signals_blocked": self.blocked,
            "nats_connected": nats_ok, "uptime_s": round(time.time() - self.started, 1)})

    async def reset_breaker(self, req: common.Request) -> common.Response:
        operator = body(req).get("operatorId")
        if not isinstance(operator, str) or not operator.strip():
            return common.Response(400, {"error": "operatorId is required"})
        self.breaker = {"state": "CLOSED", "reason": None, "tripped_at": None, "reset_by": operator}
        self.save_state()
        self.log.info(f"Breaker reset by {operator}")
        return common.Response(200, self.breaker)

    async def trip_breaker(self, req: common.Request) -> common.Response:
        reason = body(req).get("reason")
        reason = reason if isinstance(reason, str) and reason.strip() else "manual trip"
        self.breaker = {"state": "OPEN", "reason": reason, "tripped_at": time.time(),
                        "reset_by": None}
        self.save_state()
        self.log.warn(f"Breaker TRIPPED reason={reason}")
        return common.Response(200, self.breaker)

    async def set_master_arm(self, req: common.Request) -> common.Response:
        data = body(req)
        enabled, operator = data.get("enabled"), data.get("operator_id")
        if not isinstance(enabled, bool) or not isinstance(operator, str) or not operator.strip():
            return common.Response(400, {"error": "enabled (bool) and operator_id are required"})
        self.armed = enabled
        self.save_state()
        self.log.warn(f"Master arm {'enabled' if enabled else 'disabled'} by {operator}")
        return common.Response(200, {"enabled": self.armed})

    async def run(self, stop: asyncio.Event) -> None:
        self.log.info(f"Starting {SERVICE} {self.cfg.version} host={self.host} port={self.port} "
                      f"armed={self.armed} breaker={self.breaker['state']}")
        server = await common.listen(self.port, self.on_http, self.log)
        nats_task = asyncio.create_task(self.run_nats())
        await stop.wait()
        self.log.info("Stopping: signal received")
        server.close()
        await common.cancel_tasks([nats_task])
        await common.close_nats(self.nc)


def body(req: common.Request) -> dict:
    """The JSON object body; anything else reads as empty, so the field checks answer 400."""
    data = req.json()
    return data if isinstance(data, dict) else {}


def main() -> None:
    log = common.Log(SERVICE)
    common.run_service(Brain(common.Config(SERVICE, log), log).run)


if __name__ == "__main__":
    main()
