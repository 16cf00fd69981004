"""nats and jetstream: Titan's bus, reached from the controller.

The controller talks to NATS itself (nats-py), straight to `url` or, for production where NATS
listens only on a host's loopback, through an SSH tunnel via the task's host (`tunnel: true`).
Signing happens on the controller, so the HMAC secret is the one secret it must hold: it is read
from the host's env_file over SFTP (never through a command line), registered with ctx.secrets
for redaction and kept in memory only. Every bus operation is bounded by `timeout`. A signed
request's reply is checked for the engine's signature (`reply_verified`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shlex
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import paramiko
from invoke.exceptions import ThreadException

from ripcord import bus, dotenv
from ripcord.errors import RipcordError
from ripcord.modules.base import Arg, Module, Result, TaskContext, register

JS_NAME = re.compile(r"[^.*>\s]+")  # a stream or consumer name is one token of an API subject

COMMON = {
    "url": Arg(str, help="NATS URL; default: inventory nats_url"),
    "tunnel": Arg(bool, default=False, help="reach NATS through an SSH forward via the host"),
    "timeout": Arg(float, default=2.0, help="seconds for connecting and for each answer"),
}


class EnvFileError(RipcordError):
    """A value could not be read from the host's env_file."""


def env_secret(ctx: TaskContext, key: str) -> str:
    """One secret from the host's env_file, registered for redaction.

    Read by `cat` over one exec channel (the file comes back on the channel, never a command
    line): starting an SFTP session first took ~40 ms, on the halt's path to its publish.
    """
    path = ctx.vars.get("env_file")
    if not path:
        raise EnvFileError("inventory variable env_file is not set: it names the host's .env")
    out = ctx.conn.run(f"cat -- {shlex.quote(str(path))}", timeout=10)  # UnreachableError: gone
    if out.rc != 0:
        why = out.stderr.strip().rpartition(": ")[2] or f"exit {out.rc}"
        raise EnvFileError(f"cannot read {path}: {why}")
    value = dotenv.parse(out.stdout).get(key)
    if not value:
        raise EnvFileError(f"{key} is not set in {path}")
    if ctx.secrets is not None:
        ctx.secrets.add(value)
    return value


def parse_payload(data: bytes | None) -> Any:
    """A message body as JSON when it is JSON, else as text."""
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data.decode(errors="replace")


@contextlib.contextmanager
def nats_tunnel(ctx: TaskContext, url: str) -> Iterator[str]:
    """The URL to use from here: `url` as the host sees it, forwarded over its SSH connection."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 4222
    auth = parts.netloc.rpartition("@")[0]
    try:
        with ctx.conn.forward(port, remote_host=host) as local_port:
            netloc = f"{auth}@127.0.0.1:{local_port}" if auth else f"127.0.0.1:{local_port}"
            yield urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ThreadException as exc:  # the forwarding thread failed: say how
        error = exc.exceptions[0].value if exc.exceptions else exc
        if not isinstance(error, paramiko.ChannelException):
            raise ctx.conn.lost(f": {error}") from None
        raise bus.BusError(f"SSH tunnel via {ctx.host} to {host}:{port} failed: "
                           f"{error.text or 'connect failed'}") from None


def on_bus(ctx: TaskContext, args: dict, work: Callable[[Any], Awaitable[Result]]) -> Result:
    """Connect (bounded), run `work(nc)` and close; an unreachable bus is a failed task."""
    url = args.get("url") or ctx.vars.get("nats_url")
    if not url:
        return Result(failed=True, msg="no NATS URL: give url or set inventory variable nats_url")
    timeout = float(args["timeout"])

    async def session(target: str, tunnelled: bool) -> Result:
        shown = f"{bus.public_url(url)} (through an SSH tunnel via {ctx.host})" if tunnelled else None
        nc = await bus.connect(target, timeout, retry_refused=tunnelled, shown_as=shown)
        try:
            return await work(nc)
        finally:
            await bus.close(nc, timeout)

    try:
        if not args.get("tunnel"):
            return asyncio.run(session(url, False))
        with nats_tunnel(ctx, url) as local_url:
            return asyncio.run(session(local_url, True))
    except bus.BusError as exc:
        return Result(failed=True, msg=ctx.secrets.redact(str(exc)) if ctx.secrets else str(exc))


@register
class Nats(Module):
    """Publishes (or requests) one message, signed as Titan's engines require, and collects answers.

    Changed: when the message was published.
    Check mode: skipped (nothing is published).
    Example:
        - name: ask every engine for its state
          nats:
            subject: titan.cmd.sys.status.v1
            mode: request
            body:
              operator: ripcord
    """

    name = "nats"
    args = {
        "subject": Arg(str, required=True),
        "body": Arg(dict, help="a mapping, JSON-encoded with ripcord.bus.encode"),
        "sign": Arg(bool, default=True, help="HMAC headers keyed by the host's secret_key"),
        "secret_key": Arg(str, default="TITAN_HMAC_SECRET", help="the env_file key to sign with"),
        "mode": Arg(str, default="publish", choices=("publish", "request")),
        "collect": Arg(dict, help="{subject, count, timeout}: subscribed before sending"),
        **COMMON,
    }

    @classmethod
    def check_combination(cls, args: dict) -> list[str]:
        collect = args.get("collect")
        if not isinstance(collect, dict):
            return []
        problems = [f"collect: unknown key {k!r} (expected: count, subject, timeout)"
                    for k in collect if k not in ("subject", "count", "timeout")]
        if not isinstance(collect.get("subject"), str):
            problems.append("collect: 'subject' (a string) is required")
        count = collect.get("count", 1)
        if not isinstance(count, str) and (isinstance(count, bool) or not isinstance(count, int)
                                           or count < 1):
            problems.append("collect: 'count' must be a positive integer")
        return problems

    def run(self, ctx: TaskContext, args: dict) -> Result:
        if ctx.check:
            return Result(skipped=True, msg="skipped in check mode")
        subject = args["subject"]
        data = bus.encode(args.get("body") or {})
        try:
            secret = env_secret(ctx, args["secret_key"]) if args["sign"] else None
        except EnvFileError as exc:
            return Result(failed=True, msg=f"cannot sign: {exc}")
        headers = bus.sign(subject, data, secret) if secret else None
        collect = args.get("collect") or {}
        count = int(collect.get("count", 1)) if collect else 0
        request = args["mode"] == "request"

        async def work(nc) -> Result:
            reply, collected = await bus.send(
                nc, subject, data, headers, request=request, timeout=float(args["timeout"]),
                collect=collect.get("subject"), count=count,
                collect_timeout=float(collect.get("timeout", args["timeout"])))
            result = {"subject": subject, "signed": headers is not None,
                      "reply": parse_payload(reply.data if reply else None),
                      "collected": [parse_payload(m) for m in collected]}
            msg = f"{'request to' if request else 'published to'} {subject}"
            if request:
                # A signed request's reply counts as an engine's only if the engine signed it too
                # (anyone on the bus can answer first); reply_verified says which it was.
                why = bus.verify(reply.subject, reply.headers, reply.data, secret) if secret else "unsigned"
                result["reply_verified"] = why is None
                msg += ": answered" + ("" if why is None or not secret else
                                       f" ({why}: not an engine's acknowledgement)")
            if collect:
                msg += f"; collected {len(collected)} of {count} on {collect['subject']}"
            return Result(changed=True, msg=msg, data=result)

        return on_bus(ctx, args, work)


@register
class JetStream(Module):
    """Stream and consumer info, and consumer delete (the runbook's execution-state reset).

    Changed: consumer_delete, when it deleted the consumer.
    Check mode: the info actions run; consumer_delete is skipped.
    Example:
        - name: how far behind is the execution consumer?
          jetstream:
            action: consumer_info
            stream: TITAN_EXECUTION
            consumer: execution_group
    """

    name = "jetstream"
    args = {
        "action": Arg(str, required=True,
                      choices=("stream_info", "consumer_info", "consumer_delete")),
        "stream": Arg(str, required=True),
        "consumer": Arg(str),
        **COMMON,
    }

    @classmethod
    def check_combination(cls, args: dict) -> list[str]:
        problems = []
        if str(args.get("action", "")).startswith("consumer") and not args.get("consumer"):
            problems.append(f"action {args['action']} needs 'consumer'")
        for key in ("stream", "consumer"):
            value = args.get(key)
            if isinstance(value, str) and "{{" not in value and not JS_NAME.fullmatch(value):
                problems.append(f"argument {key!r}: {value!r} is not a valid JetStream name")
        return problems

    def run(self, ctx: TaskContext, args: dict) -> Result:
        action, stream, consumer = args["action"], args["stream"], args.get("consumer")
        if action == "consumer_delete" and ctx.check:
            return Result(skipped=True, msg="skipped in check mode")
        timeout = float(args["timeout"])
        target = (f"stream {stream}" if action == "stream_info"
                  else f"consumer {consumer} on stream {stream}")
        endpoint = {"stream_info": f"STREAM.INFO.{stream}",
                    "consumer_info": f"CONSUMER.INFO.{stream}.{consumer}",
                    "consumer_delete": f"CONSUMER.DELETE.{stream}.{consumer}"}[action]

        async def work(nc) -> Result:
            try:
                info = await bus.jetstream_api(nc, endpoint, timeout)
            except bus.JetStreamError as exc:
                if action == "consumer_delete" and exc.err_code == bus.CONSUMER_NOT_FOUND:
                    return Result(msg=f"{target}: not found, nothing to delete")
                return Result(failed=True, msg=f"{target}: {exc.description}")
            if action == "consumer_delete":
                return Result(changed=True, msg=f"deleted {target}")
            return Result(data=info)

        return on_bus(ctx, args, work)
