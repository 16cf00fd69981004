"""TCP and HTTP from the host's network position, with no tool on the host.

An SSH "direct-tcpip" channel asks the host's sshd to connect to (host, port) for us: if the
channel opens, the host can reach that port; if the host cannot, the channel is refused. HTTP
runs over such a channel with the standard library's http.client. So wait_for and uri see the
network exactly as the host does (its loopback, its firewall), as curl on the host would, and
need neither curl nor python there. Plain http only: https over the channel is not supported.
For a host SSH cannot reach, request_direct asks from the controller, where direct_reason says
the controller sees the URL as the host does.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import paramiko
from paramiko.common import OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

from ripcord.modules.base import TaskContext

BODY_LIMIT = 4 << 20  # bytes read from a response at most
CONTENT_LIMIT = 64 << 10  # characters of text kept in a result
MISSING = object()


class ChannelError(Exception):
    """The host could not open the TCP connection, or the HTTP exchange failed (one line)."""


class Refused(ChannelError):
    """The host's connection to host:port was refused: nothing listens there (a stopped service?)."""

    def __init__(self, message: str, host: str, port: int):
        super().__init__(message)
        self.host, self.port = host, port


class ForwardingDenied(ChannelError):
    """The host's sshd refuses direct-tcpip channels: ports cannot be probed this way at all."""


class _QuietRefusals(logging.Filter):
    """A refused channel is an answer (the port is closed), not an error worth a log line:
    paramiko logs each one at ERROR, which would print on every poll of wait_for."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "open FAILED" not in record.getMessage()


_QUIET = _QuietRefusals()


def transport(ctx: TaskContext) -> paramiko.Transport:
    """The host connection's SSH transport; a closed one means the host is unreachable."""
    assert ctx.conn is not None, "this module needs a host connection"
    found = ctx.conn.fabric.client.get_transport()
    if found is None or not found.is_active():
        raise ctx.conn.lost()  # "closed by ripcord: why" when ripcord closed it itself
    return found


def open_tcp(ctx: TaskContext, host: str, port: int, timeout: float) -> paramiko.Channel:
    """A channel connected, by the host, to host:port; ChannelError when it cannot connect."""
    if not hasattr(ctx.conn, "fabric"):  # the controller itself (delegate_to: localhost)
        return _controller_tcp(host, port, timeout)
    ssh = transport(ctx)
    if _QUIET not in ssh.logger.filters:
        ssh.logger.addFilter(_QUIET)
    try:
        channel = ssh.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout)
    except paramiko.ChannelException as exc:
        if exc.code == OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED:
            raise ForwardingDenied(f"{ctx.host}'s sshd does not allow TCP forwarding "
                                   "(AllowTcpForwarding), so ports and URLs cannot be reached "
                                   "through it") from None
        raise Refused(f"{host}:{port}: {(exc.text or 'connect failed').lower()}", host, port) from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        if not ssh.is_active():
            raise ctx.conn.lost(f": {exc}") from None
        raise ChannelError(f"{host}:{port}: {exc or 'no answer'}") from None
    channel.settimeout(timeout)
    return channel


def _controller_tcp(host: str, port: int, timeout: float) -> socket.socket:
    """A socket connected from the controller (a local task) to host:port."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        raise Refused(f"{host}:{port}: connection refused", host, port) from None
    except OSError as exc:
        raise ChannelError(f"{host}:{port}: {exc.strerror or exc}") from None
    sock.settimeout(timeout)
    return sock


def port_open(ctx: TaskContext, host: str, port: int, timeout: float) -> tuple[bool, str]:
    """Can the host connect to host:port? (answer, what was seen)."""
    try:
        open_tcp(ctx, host, port, timeout).close()
    except ForwardingDenied:
        raise
    except ChannelError as exc:
        return False, f"closed ({exc})"
    return True, "open"


class _ChannelHTTPConnection(http.client.HTTPConnection):
    def __init__(self, ctx: TaskContext, host: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._ctx = ctx

    def connect(self) -> None:
        self.sock = open_tcp(self._ctx, self.host, self.port, self.timeout)


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    json: Any = field(default=MISSING, init=False)  # the parsed body, when it is JSON

    def __post_init__(self) -> None:
        try:
            self.json = json.loads(self.body) if self.body else MISSING
        except ValueError:
            self.json = MISSING

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")[:CONTENT_LIMIT]

    def data(self) -> dict[str, Any]:
        """The result fields: status, json (parsed body, when JSON), content (text, capped)."""
        return {"status": self.status, "json": None if self.json is MISSING else self.json,
                "content": self.text, "content_type": self.headers.get("content-type", "")}


def split_url(url: str) -> tuple[str, int, str]:
    """(host, port, path?query) of an http:// URL; ChannelError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ChannelError(f"{url}: only http:// URLs are supported over the SSH channel")
    if not parts.hostname:
        raise ChannelError(f"{url}: no host in the URL")
    try:
        port = parts.port or 80
    except ValueError:
        raise ChannelError(f"{url}: bad port") from None
    return parts.hostname, port, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def request(ctx: TaskContext, url: str, *, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 10.0) -> Response:
    """One HTTP request from the host's network position. ChannelError when there is no answer."""
    host, port, target = split_url(url)
    conn = _ChannelHTTPConnection(ctx, host, port, timeout)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        answer = conn.getresponse()
        payload = answer.read(BODY_LIMIT)
        return Response(answer.status, answer.reason,
                        {k.lower(): v for k, v in answer.getheaders()}, payload)
    except (http.client.HTTPException, OSError, EOFError, paramiko.SSHException) as exc:
        if hasattr(ctx.conn, "fabric"):
            transport(ctx)  # raises UnreachableError when the connection itself is gone
        reason = str(exc) or exc.__class__.__name__
        raise ChannelError(f"{method} {url}: {reason}") from None
    finally:
        conn.close()


def request_direct(url: str, *, timeout: float = 10.0) -> Response:
    """One GET from the controller itself, for a host SSH cannot reach (see direct_reason)."""
    host, port, target = split_url(url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", target)
        answer = conn.getresponse()
        return Response(answer.status, answer.reason,
                        {k.lower(): v for k, v in answer.getheaders()}, answer.read(BODY_LIMIT))
    except (http.client.HTTPException, OSError) as exc:
        raise ChannelError(f"GET {url} (from the controller): {exc or type(exc).__name__}") from None
    finally:
        conn.close()


def direct_reason(ctx: TaskContext, url: str) -> str | None:
    """Why the controller cannot fetch url as the host would (None: it can try).

    A loopback URL means the host's own loopback: the controller's is the same only when the
    host is this machine (its address is loopback, as in the sandbox). Any other address is the
    same from here, if routes and firewalls let the controller reach it.
    """
    try:
        host = split_url(url)[0]
    except ChannelError as exc:
        return str(exc)
    address = str(ctx.vars.get("ansible_host") or ctx.vars.get("ansible_ssh_host") or ctx.host)
    if _loopback(host) and not _loopback(address):
        return f"{url} is on {ctx.host}'s loopback"
    return None


def _loopback(name: str) -> bool:
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return name.lower() in ("localhost", "localhost.localdomain")


def dig(data: Any, dotted: str) -> Any:
    """data's value at a dotted path ("a.b.0.c": list indexes are numbers), or MISSING."""
    for part in dotted.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.lstrip("-").isdigit() and -len(data) <= int(part) < len(data):
            data = data[int(part)]
        else:
            return MISSING
    return data


def same_value(actual: Any, expected: Any) -> bool:
    """JSON value == expected; a string expected also matches the value's JSON text ("true", "5")."""
    if isinstance(actual, bool) != isinstance(expected, bool):
        return isinstance(expected, str) and json.dumps(actual) == expected
    if actual == expected:
        return True
    return isinstance(expected, str) and not isinstance(actual, str) and json.dumps(actual) == expected


def shown(value: Any, limit: int = 120) -> str:
    """A value for a message: missing says so, long ones are cut."""
    if value is MISSING:
        return "(missing)"
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
