"""Shared plumbing for the stand-in Titan services: config, logging, HTTP, HMAC, NATS.

The stand-ins run on sandbox hosts from a release copy (titan_home/current), with only the
sandbox runtime's packages: they must never import ripcord.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import signal
import sys
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

CONFIG_ERROR_EXIT = 78  # EX_CONFIG: supervisord shows BACKOFF, then FATAL

SIG_HEADER = "Titan-Signature"
TS_HEADER = "Titan-Timestamp"
NONCE_HEADER = "Titan-Nonce"
MAX_COMMAND_AGE_S = 30.0


# --- logging and config -------------------------------------------------------------------

class Log:
    """One line per event on stdout; supervisord writes it to titan_home/logs/<service>.log."""

    def __init__(self, service: str):
        self.service = service

    def _emit(self, level: str, message: str) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        sys.stdout.write(f"{stamp} {level} {self.service}: {message}\n")
        sys.stdout.flush()

    def info(self, message: str) -> None:
        self._emit("INFO", message)

    def warn(self, message: str) -> None:
        self._emit("WARN", message)

    def error(self, message: str) -> None:
        self._emit("ERROR", message)


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a KEY=VALUE .env file (comments, blank lines and optional quotes allowed).

    A value starting with ' is read as sh reads it ('it'\\''s' is it's): how ripcord's env
    module writes any value beyond plain characters (see ripcord/dotenv.py).
    """
    values: dict[str, str] = {}
    for line in path.read_text().split("\n"):
        line = line.strip(" \t\r")
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        quoted = re.fullmatch(r"((?:'[^']*'|\\')+)(?:[ \t]+#.*)?", value)
        if quoted:
            value = "".join(p[1:-1] if p.startswith("'") else "'"
                            for p in re.findall(r"'[^']*'|\\'", quoted.group(1)))
        else:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
        values[key.strip()] = value
    return values


def _release() -> str:
    version_file = Path(__file__).resolve().parent / "VERSION"
    return version_file.read_text().strip() if version_file.exists() else "unknown"


RELEASE = _release()  # at import, i.e. at start


class Config:
    """The service's configuration: titan_home/.env plus a few process environment values.

    A missing or malformed value is fatal: one clear log line, exit 78, as real services do.
    """

    def __init__(self, service: str, log: Log):
        self.service = service
        self.log = log
        self.home = Path(os.environ.get("TITAN_HOME", Path(__file__).resolve().parent.parent.parent))
        self.env_path = self.home / ".env"
        try:
            self.values = read_env_file(self.env_path)
        except OSError as exc:
            self.fatal(f"cannot read {self.env_path}: {exc.strerror}")

    def fatal(self, message: str) -> None:
        self.log.error(f"FATAL config: {message}")
        sys.exit(CONFIG_ERROR_EXIT)

    def get(self, key: str, default: str | None = None) -> str:
        value = self.values.get(key, os.environ.get(key, default))
        if value is None or value == "":
            self.fatal(f"missing {key} in {self.env_path}")
        return value

    def optional(self, key: str) -> str | None:
        return self.values.get(key) or os.environ.get(key) or None

    def get_int(self, key: str, default: int | None = None) -> int:
        raw = self.get(key, None if default is None else str(default))
        try:
            return int(raw)
        except ValueError:
            self.fatal(f"{key} must be an integer in {self.env_path}")
            raise  # unreachable

    def get_float(self, key: str, default: float | None = None) -> float:
        raw = self.get(key, None if default is None else str(default))
        try:
            return float(raw)
        except ValueError:
            self.fatal(f"{key} must be a number in {self.env_path}")
            raise  # unreachable

    def get_url(self, key: str, schemes: tuple[str, ...], default: str | None = None) -> str:
        raw = self.get(key, default)
        parts = urllib.parse.urlsplit(raw)
        if parts.scheme not in schemes or not parts.hostname:
            self.fatal(f"{key} must be a {'|'.join(schemes)}:// URL in {self.env_path}")
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            self.fatal(f"{key} has a malformed port in {self.env_path}")
        return raw

    @property
    def host(self) -> str:
        return self.get("TITAN_HOST")

    @property
    def version(self) -> str:
        """The release this process runs: read once, from the release directory it started from
        (titan_home/current resolved at start), so a switched link shows until a restart."""
        return RELEASE

    def fault(self, name: str) -> bool:
        """Sandbox fault injection: titan_home/state/faults/<name> exists."""
        return (self.home / "state" / "faults" / name).exists()

    def latched(self, name: str) -> bool:
        """A fault taken in once (its file removed): the service stays broken until restarted,
        as a stuck feed or a wedged thread does (`invoke sandbox.chaos`)."""
        if name not in LATCHED and self.fault(name):
            LATCHED.add(name)
            (self.home / "state" / "faults" / name).unlink(missing_ok=True)
        return name in LATCHED


LATCHED: set[str] = set()  # faults this process has taken in (Config.latched)


# --- HTTP ---------------------------------------------------------------------------------

class Request:
    def __init__(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                 body: bytes):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers  # lower-case names
        self.body = body

    def json(self) -> Any:
        if not self.body:
            return {}
        return json.loads(self.body)


class Response:
    def __init__(self, status: int, payload: Any, headers: dict[str, str] | None = None):
        self.status = status
        self.payload = payload
        self.headers = headers or {}


Handler = Callable[[Request], Awaitable[Response]]
REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 429: "Too Many Requests", 500: "Internal Server Error",
           503: "Service Unavailable"}


async def serve_http(port: int, handler: Handler, log: Log, host: str = "127.0.0.1") -> asyncio.Server:
    """A small HTTP/1.1 JSON server (keep-alive), enough for health and admin endpoints."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    break
                try:
                    method, target, _ = request_line.decode("latin-1").split(" ", 2)
                except ValueError:
                    break
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                path, _, qs = target.partition("?")
                query = dict(p.split("=", 1) if "=" in p else (p, "") for p in qs.split("&") if p)
                try:
                    response = await handler(Request(method.upper(), path, query, headers, body))
                except json.JSONDecodeError:
                    response = Response(400, {"error": "body is not valid JSON"})
                except Exception as exc:  # a stand-in must answer, not die
                    log.error(f"HTTP handler error on {method} {path}: {exc!r}")
                    response = Response(500, {"error": "internal error"})
                data = json.dumps(response.payload).encode()
                head = [f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Status')}",
                        "Content-Type: application/json", f"Content-Length: {len(data)}"]
                head += [f"{k}: {v}" for k, v in response.headers.items()]
                keep_alive = headers.get("connection", "").lower() != "close"
                head.append("Connection: keep-alive" if keep_alive else "Connection: close")
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
                await writer.drain()
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(on_connection, host, port, reuse_address=True)


async def listen(port: int, handler: Handler, log: Log) -> asyncio.Server:
    """serve_http, or one clear line and exit 1 when the port is taken (supervisord retries)."""
    try:
        return await serve_http(port, handler, log)
    except OSError as exc:
        log.error(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}")
        sys.exit(1)


async def http_json(method: str, url: str, payload: Any = None,
                    headers: dict[str, str] | None = None,
                    timeout: float = 2.0) -> tuple[int, dict[str, str], Any]:
    """One HTTP/1.1 request with a JSON body; returns (status, lower-case headers, parsed JSON).

    asyncio streams rather than urllib in a thread, so a SIGTERM can cancel a call in flight.
    Any network failure or timeout is raised as ConnectionError (an OSError).
    """
    parts = urllib.parse.urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    body = b"" if payload is None else json.dumps(payload).encode()
    head = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close",
            "Accept: application/json", f"Content-Length: {len(body)}"]
    if payload is not None:
        head.append("Content-Type: application/json")
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]

    async def exchange() -> tuple[int, dict[str, str], bytes]:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            resp_headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                resp_headers[name.strip().lower()] = value.strip()
            length = resp_headers.get("content-length")
            data = await reader.readexactly(int(length)) if length else await reader.read()
            return status, resp_headers, data
        finally:
            writer.close()

    try:
        status, resp_headers, data = await asyncio.wait_for(exchange(), timeout)
    except (OSError, EOFError, ValueError, IndexError) as exc:  # refused, timeout, cut short
        raise ConnectionError(f"{method} {parts.path}: {exc.__class__.__name__}") from None
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        parsed = None
    return status, resp_headers, parsed


# --- signed commands ----------------------------------------------------------------------

def signing_payload(subject: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    """What the HMAC covers: subject, timestamp (ms), nonce and body, newline-separated."""
    return f"{subject}\n{timestamp}\n{nonce}\n".encode() + body


def sign_headers(subject: str, body: bytes, secret: bytes) -> dict[str, str]:
    """Headers that authenticate body on subject: how an engine signs its answers, so ripcord
    can tell them from anyone else's on the reply inbox."""
    timestamp, nonce = str(now_ms()), os.urandom(16).hex()
    signature = hmac.new(secret, signing_payload(subject, timestamp, nonce, body),
                         hashlib.sha256).hexdigest()
    return {TS_HEADER: timestamp, NONCE_HEADER: nonce, SIG_HEADER: signature}


def secret_fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


FINGERPRINT_LABEL = "titan-secret-fingerprint"


def fingerprint(key: str, value: str) -> str:
    """What /health shows of a secret: 12 hex digits of a labelled sha256, never the value, so a
    rotation can prove which secret a running service read (ripcord computes the same)."""
    return hashlib.sha256(f"{FINGERPRINT_LABEL}\0{key}\0{value}".encode()).hexdigest()[:12]


class CommandVerifier:
    """Checks HMAC-SHA256 signatures, freshness and nonce reuse on NATS commands.

    Accepts the current secret and, during a rotation, the previous one.
    """

    def __init__(self, secrets: list[str], max_age_s: float = MAX_COMMAND_AGE_S):
        self.secrets = [s.encode() for s in secrets if s]
        self.max_age_s = max_age_s
        self.seen: OrderedDict[str, float] = OrderedDict()
        self.matched = b""  # the secret that verified the last authentic command: answers use it

    def verify(self, subject: str, headers: dict[str, str] | None, body: bytes) -> str | None:
        """Return None when the command is authentic, else the reason it is rejected."""
        headers = headers or {}
        signature = headers.get(SIG_HEADER)
        timestamp = headers.get(TS_HEADER)
        nonce = headers.get(NONCE_HEADER)
        if not signature:
            return "unsigned"
        if not timestamp or not nonce:
            return "missing timestamp or nonce"
        payload = signing_payload(subject, timestamp, nonce, body)
        matched = [s for s in self.secrets
                   if hmac.compare_digest(hmac.new(s, payload, hashlib.sha256).hexdigest(), signature)]
        if not matched:
            return "bad signature"
        try:
            age = time.time() - int(timestamp) / 1000.0
        except ValueError:
            return "malformed timestamp"
        if abs(age) > self.max_age_s:
            return f"stale command ({age:.1f}s old)"
        now = time.time()
        while self.seen and next(iter(self.seen.values())) < now - 2 * self.max_age_s:
            self.seen.popitem(last=False)
        if nonce in self.seen:
            return "replayed nonce"
        self.seen[nonce] = now
        self.matched = matched[0]
        return None


def rejection_log_line(subject: str, reason: str) -> str:
    """The log lines the runbooks alert on."""
    if reason == "unsigned":
        return f"Security: Unsigned Command Detected subject={subject}"
    return f"HMAC Verification Failed: {reason} subject={subject}"


# --- NATS ---------------------------------------------------------------------------------

async def connect_nats(url: str, log: Log, name: str):
    """Connect to NATS, retrying until it is up (services start before the bus is ready)."""
    import nats  # imported here so config errors are reported before the slow import
    import nats.errors

    client, warned = None, False

    def not_reachable(exc: BaseException) -> None:
        nonlocal warned
        if not warned:
            log.warn(f"NATS not reachable at {redact_url(url)} ({exc.__class__.__name__}); retrying")
            warned = True

    async def on_disconnect() -> None:
        if client is not None and not client.is_closed:  # not our own close at shutdown
            log.warn("NATS disconnected; reconnecting")

    async def on_reconnect() -> None:
        log.info("NATS reconnected")

    async def on_error(exc: Exception) -> None:
        # connection attempts fail every 0.5 s while the bus is down: say so once before the
        # first connect (the disconnect line covers later outages); anything else is a
        # subscription callback's bug and must not vanish
        if not isinstance(exc, (OSError, nats.errors.Error)):
            log.error(f"NATS callback error: {exc!r}")
        elif client is None:
            not_reachable(exc)

    while True:
        try:
            client = await nats.connect(
                url, name=name, connect_timeout=2, max_reconnect_attempts=-1,
                reconnect_time_wait=0.5, allow_reconnect=True, error_cb=on_error,
                disconnected_cb=on_disconnect, reconnected_cb=on_reconnect,
            )
            return client
        except Exception as exc:  # noqa: BLE001 - nats raises several kinds while the bus starts
            not_reachable(exc)
            await asyncio.sleep(0.5)


def now_ms() -> int:
    return int(time.time() * 1000)


def redact_url(url: str) -> str:
    """A URL fit for a log line: any user:password part is dropped."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


EXEC_STREAM = "TITAN_EXECUTION"
EXEC_SIGNAL_SUBJECT = "titan.exec.signal"


async def ensure_exec_stream(js) -> None:
    """Create the execution stream if absent (brain and engines both call it; idempotent)."""
    import nats.js.errors

    try:
        await js.stream_info(EXEC_STREAM)
    except nats.js.errors.NotFoundError:
        await js.add_stream(name=EXEC_STREAM, subjects=["titan.exec.>"], storage="file",
                            max_age=3600)


async def close_nats(nc) -> None:
    """Close a NATS connection without letting a dead bus delay shutdown."""
    if nc is None:
        return
    try:
        await asyncio.wait_for(nc.close(), 1.0)
    except Exception:  # noqa: BLE001 - shutting down anyway
        pass


# --- process lifecycle --------------------------------------------------------------------

def run_service(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run main(stop) with stop set on SIGTERM/SIGINT; main must return promptly once it is."""

    def quiet_cancellation(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        # Python 3.11 reports keep-alive HTTP connections cancelled at shutdown as errors
        if not isinstance(context.get("exception"), asyncio.CancelledError):
            loop.default_exception_handler(context)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(quiet_cancellation)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())


async def keep_running(name: str, loop: Callable[[], Awaitable[None]], log: Log) -> None:
    """Run a service loop forever: a bug in one pass is logged and the loop restarted, not lost."""
    while True:
        try:
            await loop()
        except Exception as exc:  # noqa: BLE001 - the loop is the service: keep it alive
            log.error(f"{name} loop failed ({exc!r}); restarting in 1s")
            await asyncio.sleep(1)


async def cancel_tasks(tasks: list[asyncio.Task]) -> None:
    """Cancel background loops and give them a moment to unwind (bounded: SIGTERM is < 2 s)."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=1.0)


def write_json_atomic(path: Path, data: Any) -> None:
    """Persist state so a crash mid-write never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
