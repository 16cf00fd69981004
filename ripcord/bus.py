"""Signed commands for the trading bus.

Titan's execution engine accepts a command only with an HMAC-SHA256 signature in the NATS
headers, over the subject, a millisecond timestamp, a one-time nonce and the body, keyed by
TITAN_HMAC_SECRET. Commands older than 30 s or with a reused nonce are rejected. The engines sign
their answers the same way, over the reply subject (a fresh inbox per command, so an answer cannot
be replayed to another command): anyone on the bus can publish to that inbox, only a holder of the
secret can answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from ripcord.errors import RipcordError

SIG_HEADER = "Titan-Signature"
TS_HEADER = "Titan-Timestamp"
NONCE_HEADER = "Titan-Nonce"

HALT_SUBJECT = "titan.cmd.sys.halt.v1"
FLATTEN_SUBJECT = "titan.cmd.risk.flatten"
CANCEL_ALL_SUBJECT = "titan.cmd.exec.cancel_all"
STATE_EVENT_SUBJECT = "titan.evt.exec.state"
MAX_AGE_S = 30  # a signed message older (or newer) than this is refused, as the engines do


def encode(body: dict[str, Any]) -> bytes:
    """The exact bytes that are signed and sent."""
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def sign(subject: str, body: bytes, secret: str, *, timestamp_ms: int | None = None,
         nonce: str | None = None) -> dict[str, str]:
    """NATS headers that authenticate `body` on `subject`."""
    timestamp = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    nonce = nonce or secrets.token_hex(16)
    return {TS_HEADER: timestamp, NONCE_HEADER: nonce,
            SIG_HEADER: _mac(subject, timestamp, nonce, body, secret)}


def _mac(subject: str, timestamp: str, nonce: str, body: bytes, secret: str) -> str:
    payload = f"{subject}\n{timestamp}\n{nonce}\n".encode() + body
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def verify(subject: str, headers: dict[str, str] | None, body: bytes, secret: str,
           max_age_s: float = MAX_AGE_S) -> str | None:
    """Why a message is not authentic (signed by `secret` over subject and body, fresh), or None."""
    headers = headers or {}
    signature, timestamp, nonce = (headers.get(k) for k in (SIG_HEADER, TS_HEADER, NONCE_HEADER))
    if not signature:
        return "unsigned"
    if not timestamp or not nonce:
        return "no timestamp or nonce"
    if not hmac.compare_digest(_mac(subject, timestamp, nonce, body, secret).encode(),
                               signature.encode(errors="replace")):
        return "bad signature"
    try:
        age = time.time() - int(timestamp) / 1000
    except ValueError:
        return "bad timestamp"
    return f"stale ({age:.0f}s old)" if abs(age) > max_age_s else None


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
    import asyncio

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
    import asyncio

    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), timeout)


async def send(nc, subject: str, data: bytes, headers: dict[str, str] | None = None, *,
               request: bool = False, timeout: float = 2.0, collect: str | None = None,
               count: int = 0, collect_timeout: float = 2.0) -> tuple[Any, list[bytes]]:
    """Publish (or request) one message; return the reply (the message: data, headers and the
    inbox it came on) and up to `count` messages on `collect`.

    The collecting subscription is in place at the server before the message goes out, so an
    answer faster than us (an engine's halt event) is not missed.
    """
    import asyncio

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
                reply = await nc.request(subject, data, timeout=timeout, headers=headers)
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


@dataclass
class Answers:
    """The engines' answers to one command: host -> (seconds after the publish, its answer), and
    the answers not taken (unsigned, forged, not JSON, naming no expected host), one line each."""

    by_host: dict[str, tuple[float, dict]] = field(default_factory=dict)
    ignored: list[tuple[str | None, str]] = field(default_factory=list)  # (host claimed, why)

    def ignored_for(self, host: str) -> list[str]:
        """What was ignored in host's name, one line each."""
        return [f"ignored an answer claiming to be {host}: {why}"
                for claimed, why in self.ignored if claimed == host]

    def ignored_elsewhere(self, hosts: set[str]) -> list[str]:
        """What was ignored that claims none of hosts, one line each."""
        return [f"ignored an answer claiming to be {claimed or '(no host)'}: {why}"
                for claimed, why in self.ignored if claimed not in hosts]


async def scatter(nc, subject: str, data: bytes, headers: dict[str, str] | None, *,
                  expect: set[str], timeout: float, secret: str) -> Answers:
    """Publish with a reply inbox and gather one authentic answer per expected engine, until each
    answered or `timeout` seconds passed.

    An answer counts only when it is signed with `secret` over the inbox and its body, and its
    "host" is one expected: any bus client can publish to the inbox, so an unsigned or forged
    answer is noted in `ignored`, never taken for an engine's. Request/reply with many
    responders: core NATS may drop a message, so whoever did not answer did not act.
    """
    import asyncio  # here, not at the top: fasthalt signs with this module before asyncio loads

    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue = asyncio.Queue()

    async def arrived(msg) -> None:
        await inbox.put((loop.time(), msg))

    reply_to = nc.new_inbox()
    sub = await nc.subscribe(reply_to, cb=arrived)  # the server sees SUB before our PUB
    found = Answers()
    try:
        sent = loop.time()
        await nc.publish(subject, data, reply=reply_to, headers=headers)
        await nc.flush(timeout)
        while expect - found.by_host.keys() and (left := sent + timeout - loop.time()) > 0:
            try:
                at, msg = await asyncio.wait_for(inbox.get(), left)
            except TimeoutError:
                break
            host, why = authentic(reply_to, msg, secret, expect)
            if why:
                found.ignored.append((host, why))
            else:
                found.by_host.setdefault(host, (at - sent, json.loads(msg.data)))
    except Exception as exc:  # nats-py's own errors: the server went away mid-way
        if not found.by_host:
            raise BusError(f"publish to {subject} failed: {exc or type(exc).__name__}") from None
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return found


def authentic(reply_to: str, msg, secret: str, expect: set[str]) -> tuple[str | None, str | None]:
    """(the host an answer names, why it is not taken as that engine's answer or None)."""
    try:
        answer = json.loads(msg.data)
    except ValueError:
        return None, "not JSON"
    host = answer.get("host") if isinstance(answer, dict) else None
    if not isinstance(host, str):
        return None, "names no host"
    if host not in expect:
        return repr(host[:64]), "not an engine this command was sent to"
    return host, verify(reply_to, msg.headers, msg.data, secret)


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
