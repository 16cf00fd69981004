"""Client for the (stand-in) exchange API used by titan-execution.

Kept apart from the engine so its rate-limit and health rules are easy to read in one place.
The API key travels only in the X-API-KEY header: it never appears in a log line or an error.
"""

from __future__ import annotations

import asyncio
import time

import common


class ExchangeError(Exception):
    """The exchange refused a request (status set) or could not be reached (status None)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class Exchange:
    """Authenticated calls with back-off on 429 (the exchange allows 20 req/s per key)."""

    def __init__(self, url: str, api_key: str, log: common.Log):
        self.url, self.api_key, self.log = url.rstrip("/"), api_key, log
        self.healthy: bool | None = None  # None until the first call, so either outcome is logged
        self.limited_until = 0.0
        self.last_429 = 0.0

    async def call(self, method: str, path: str, payload: dict | None = None):
        """Return the parsed JSON body; raise ExchangeError on refusal or outage."""
        where = f"{method} {path.split('?')[0]}"
        for _ in range(5):
            if (delay := self.limited_until - time.time()) > 0:
                await asyncio.sleep(delay)
            try:
                status, headers, body = await common.http_json(
                    method, self.url + path, payload, {"X-API-KEY": self.api_key})
            except ConnectionError as exc:
                self._set_health(False, f"unreachable ({exc})")
                raise ExchangeError(f"exchange unreachable: {exc}") from None
            if status == 429:
                self._back_off(headers.get("retry-after", "1"))
                continue
            self._set_health(status < 500 and status != 401, f"{where} answered HTTP {status}")
            if status >= 400:
                error = body.get("error") if isinstance(body, dict) else None
                raise ExchangeError(f"{where}: HTTP {status} {error}", status)
            return body
        raise ExchangeError(f"{where}: still rate limited", 429)

    def _back_off(self, retry_after: str) -> None:
        """Log once per burst of 429s, then wait as told (bounded) before the next call."""
        try:
            wait = min(max(float(retry_after), 0.1), 5.0)
        except ValueError:
            wait = 1.0
        now = time.time()
        if now - self.last_429 > 5.0:
            self.log.warn(f"Exchange rate limit hit (429): backing off {wait:g}s")
        self.last_429 = now
        self.limited_until = max(self.limited_until, now + wait)

    def _set_health(self, healthy: bool, why: str) -> None:
        if healthy != self.healthy:
            if healthy:
                self.log.info("Exchange reachable")
            else:
                self.log.warn(f"Exchange degraded: {why}")
        self.healthy = healthy
