"""Signed commands for the trading bus.

Titan's execution engine accepts a command only with an HMAC-SHA256 signature in the NATS
headers, over the subject, a millisecond timestamp, a one-time nonce and the body, keyed by
TITAN_HMAC_SECRET. Commands older than 30 s or with a reused nonce are rejected.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
import time
import urllib.parse
from typing import Any

from ripcord.errors import RipcordError

SIG_HEADER = "Titan-Signature"
TS_HEADER = "Titan-Timestamp"
NONCE_HEADER = "Titan-Nonce"

HALT_SUBJECT = "titan.cmd.sys.halt.v1"
FLATTEN_SUBJECT = "titan.cmd.risk.flatten"
CANCEL_ALL_SUBJECT = "titan.cmd.exec.cancel_all"
STATE_EVENT_SUBJECT = "titan.evt.exec.state"


def encode(body: dict[str, Any]) -> bytes:
    """The exact bytes that are signed and sent."""
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def sign(subject: str, body: bytes, secret: str, *, timestamp_ms: int | None = None,
         nonce: str | None = None) -> dict[str, str]:
    """NATS headers that authenticate `body` on `subject`."""
    timestamp = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    nonce = nonce or secrets.token_hex(16)
    payload = f"{subject}\n{timestamp}\n{nonce}\n".encode() + body
    signature = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    return {TS_HEADER: timestamp, NONCE_HEADER: nonce, SIG_HEADER: signature}


def fingerprint(secret: str) -> str:
    """What an engine reports as `secret_fingerprint`: safe to print, identifies the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


# --- talking to the bus (nats-py), bounded in time ------------------------------------------------

def preload() -> None:
    """Import nats-py in the background (~0.12 s): a module that will publish calls this when it
    is loaded, so the import overlaps the SSH handshakes instead of delaying the halt."""
    import importlib
    import threading

    threading.Thread(target=importlib.import_module, args=("nats.aio.client",), daemon=True).start()


class BusError(RipcordError):
    """NATS could not be reached or did not answer; the message names no credential."""


class JetStreamError(BusError):
    """The JetStream API answered with an error (code 404 and err_code say what was missing)."""

    def __init__(self, error: dict[str, Any]):
        self.description = str(error.get("description") or error)
        super().__init__(f"JetStream: {self.description}")
        self.code = error.get("code")
        self.err_code = error.get("err_code")


CONSUMER_NOT_FOUND = 10014  # JetStream API err_code


def public_url(url: str) -> str:
    """The URL without user and password, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


async def connect(url: str, timeout: float = 2.0, *, retry_refused: bool = False,
                  shown_as: str | None = None):
    """A connected nats-py client, or BusError within `timeout` seconds.

    nats-py's first connect does not fail fast: with max_reconnect_attempts=0 it retries a
    refused server for ever and tells only error_cb. So the first error reported ends the
    attempt, and the whole attempt is bounded by `timeout`. retry_refused keeps trying a refused
    port until the deadline: an SSH tunnel binds its local port in a background thread.
    Messages name `shown_as` (what the operator asked for) instead of `url` if given.
    """
    from nats.aio.client import Client

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    reason: BaseException | None = None
    while True:
        failed: asyncio.Future = loop.create_future()

        async def on_error(exc: Exception, failed: asyncio.Future = failed) -> None:
            if not failed.done():
                failed.set_result(exc)

        nc = Client()
        attempt = asyncio.ensure_future(nc.connect(
            url, name="ripcord", connect_timeout=timeout, allow_reconnect=False,
            max_reconnect_attempts=0, error_cb=on_error))
        await asyncio.wait({attempt, failed}, timeout=max(0.0, deadline - loop.time()),
                           return_when=asyncio.FIRST_COMPLETED)
        if attempt.done() and not attempt.cancelled() and attempt.exception() is None:
            return nc
        attempt.cancel()
        with contextlib.suppress(BaseException):
            await attempt
        await close(nc)
        reason = failed.result() if failed.done() else reason
        if not (retry_refused and isinstance(reason, ConnectionRefusedError)
                and loop.time() < deadline):
            break
        await asyncio.sleep(0.05)
    why = ("connection refused" if isinstance(reason, ConnectionRefusedError)
           else f"no answer within {timeout:g}s" if reason is None or isinstance(reason, TimeoutError)
           else str(reason) or type(reason).__name__)
    raise BusError(f"cannot connect to NATS at {shown_as or public_url(url)}: {why}")


async def close(nc, timeout: float = 2.0) -> None:
    """Close a client without letting a dead connection hold the caller up."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), timeout)


async def send(nc, subject: str, data: bytes, headers: dict[str, str] | None = None, *,
               request: bool = False, timeout: float = 2.0, collect: str | None = None,
               count: int = 0, collect_timeout: float = 2.0) -> tuple[bytes | None, list[bytes]]:
    """Publish (or request) one message; return the reply and up to `count` messages on `collect`.

    The collecting subscription is in place at the server before the message goes out, so an
    answer faster than us (an engine's halt event) is not missed.
    """
    import nats.errors

    inbox: asyncio.Queue = asyncio.Queue()
    sub = None
    if collect and count > 0:
        sub = await nc.subscribe(collect, cb=inbox.put)
        await nc.flush(timeout)
    loop = asyncio.get_running_loop()
    until = loop.time() + collect_timeout
    try:
        reply = None
        if request:
            try:
                reply = (await nc.request(subject, data, timeout=timeout, headers=headers)).data
            except nats.errors.NoRespondersError:
                raise BusError(f"no responders on {subject}") from None
            except TimeoutError:
                raise BusError(f"no reply on {subject} within {timeout:g}s") from None
        else:
            await nc.publish(subject, data, headers=headers)
            await nc.flush(timeout)  # the server has it: close() does not promise that
        collected: list[bytes] = []
        while len(collected) < count and (left := until - loop.time()) > 0:
            try:
                collected.append((await asyncio.wait_for(inbox.get(), left)).data)
            except TimeoutError:
                break
        return reply, collected
    finally:
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


async def scatter(nc, subject: str, data: bytes, headers: dict[str, str] | None, *,
                  expect: set[str], timeout: float) -> dict[str, tuple[float, dict]]:
    """Publish with a reply inbox and gather one answer per responder, keyed by the answer's
    "host", until every expected responder answered or `timeout` seconds passed.

    Returns host -> (seconds from the publish to the answer, the answer). Request/reply with
    many responders: core NATS may drop a message, so whoever did not answer did not act.
    """
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()

    async def arrived(msg) -> None:
        await inbox.put((loop.time(), msg))

    reply_to = nc.new_inbox()
    sub = await nc.subscribe(reply_to, cb=arrived)  # the server sees SUB before our PUB
    answers: dict[str, tuple[float, dict]] = {}
    try:
        sent = loop.time()
        await nc.publish(subject, data, reply=reply_to, headers=headers)
        await nc.flush(timeout)
        while expect - answers.keys() and (left := sent + timeout - loop.time()) > 0:
            try:
                at, msg = await asyncio.wait_for(inbox.get(), left)
            except TimeoutError:
                break
            with contextlib.suppress(ValueError):
                answer = json.loads(msg.data)
                if isinstance(answer, dict) and isinstance(answer.get("host"), str):
                    answers.setdefault(answer["host"], (at - sent, answer))
    except Exception as exc:  # nats-py's own errors: the server went away mid-way
        if not answers:
            raise BusError(f"publish to {subject} failed: {exc or type(exc).__name__}") from None
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return answers


async def jetstream_api(nc, endpoint: str, timeout: float = 2.0) -> dict[str, Any]:
    """One JetStream API call (`$JS.API.<endpoint>`): the server's JSON, as `nats --json` shows it."""
    import nats.errors

    try:
        msg = await nc.request(f"$JS.API.{endpoint}", b"", timeout=timeout)
    except nats.errors.NoRespondersError:
        raise BusError("JetStream is not enabled on this NATS server") from None
    except TimeoutError:
        raise BusError(f"JetStream did not answer {endpoint} within {timeout:g}s") from None
    reply = json.loads(msg.data)
    if reply.get("error"):
        raise JetStreamError(reply["error"])
    reply.pop("type", None)
    return reply
