"""titan-console: the stand-in operator console; here it only watches that the brain answers."""

from __future__ import annotations

import asyncio
import time

import common

SERVICE = "titan-console"
POLL_S = 2.0


class Console:
    def __init__(self, cfg: common.Config, log: common.Log):
        self.cfg, self.log = cfg, log
        self.host = cfg.host
        self.port = cfg.get_int("TITAN_CONSOLE_PORT")
        self.brain_health = cfg.get_url("BRAIN_URL", ("http",)).rstrip("/") + "/health"
        self.brain_reachable: bool | None = None  # None until the first poll
        self.started = time.time()

    async def watch_brain(self) -> None:
        while True:
            try:
                status, _, _ = await common.http_json("GET", self.brain_health, timeout=1.5)
                reachable, why = status == 200, f"HTTP {status}"
            except ConnectionError as exc:
                reachable, why = False, str(exc)
            if reachable != self.brain_reachable:
                self.log.info("Brain reachable") if reachable else self.log.warn(
                    f"Brain unreachable ({why})")
            self.brain_reachable = reachable
            await asyncio.sleep(POLL_S)

    async def on_http(self, req: common.Request) -> common.Response:
        if req.path != "/health":
            return common.Response(404, {"error": "not found"})
        return common.Response(200, {
            "status": "ok" if self.brain_reachable else "degraded", "service": SERVICE,
            "host": self.host, "version": self.cfg.version,
            "brain_reachable": bool(self.brain_reachable),
            "uptime_s": round(time.time() - self.started, 1)})

    async def run(self, stop: asyncio.Event) -> None:
        self.log.info(f"Starting {SERVICE} {self.cfg.version} host={self.host} port={self.port}")
        server = await common.listen(self.port, self.on_http, self.log)
        watcher = asyncio.create_task(
            common.keep_running("brain-watch", self.watch_brain, self.log))
        await stop.wait()
        self.log.info("Stopping: signal received")
        server.close()
        await common.cancel_tasks([watcher])


def main() -> None:
    log = common.Log(SERVICE)
    common.run_service(Console(common.Config(SERVICE, log), log).run)


if __name__ == "__main__":
    main()
