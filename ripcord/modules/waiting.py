"""wait_for and uri: wait for a condition on the host, talk HTTP from the host's position.

Both see the network as the host does: ports and URLs are reached through SSH direct-tcpip
channels (ripcord.modules.httpchannel), files through SFTP, so the host needs no curl, nc or
python. wait_for changes nothing, so it runs under --check too; uri runs GET/HEAD/OPTIONS under
--check and skips the methods that change things.

Deviations from Ansible: wait_for's port conditions are seen from the host (not the controller);
search_regex works with path only, and `offset` (a byte offset, e.g. a registered stat's size)
makes only what was written after a mark count; url/status/json_field/json_value are ripcord's.
uri follows no redirects, speaks plain http only, and always returns the content (64 KiB).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

from ripcord.modules import servicehint
from ripcord.modules.base import ANY, Arg, Module, Result, TaskContext, _is_template, register
from ripcord.modules.filesupport import IO_ERRORS, io_failure
from ripcord.modules.httpchannel import (
    MISSING,
    ChannelError,
    ForwardingDenied,
    Refused,
    dig,
    port_open,
    request,
    same_value,
    shown,
    split_url,
)

SEEN_LIMIT = 8 << 20  # bytes of a log kept for search_regex (the newest, past the offset)
UP, DOWN = ("started", "present"), ("stopped", "absent")
Probe = Callable[[float], tuple[bool, str, dict]]  # (timeout) -> (holds, what was seen, data)


def _number(args: dict, key: str) -> list[str]:
    value = args.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return [f"argument {key!r} must not be negative"]
    return []


def _url_problem(args: dict) -> list[str]:
    url = args.get("url")
    if not isinstance(url, str) or _is_template(url):
        return []
    try:
        split_url(url)
    except ChannelError as exc:
        return [f"argument 'url': {exc}"]
    return []


@register
class WaitFor(Module):
    """Waits, from the host's position, for a port, a file, a log line or a URL's JSON field.

    Changed: never.
    Check mode: runs as usual (it changes nothing).
    Example:
        - name: the engine's health port answers
          wait_for:
            port: 8080
            timeout: 30
    """

    name = "wait_for"
    args = {
        "port": Arg(int), "host": Arg(str, help="with port; default 127.0.0.1, as the host sees it"),
        "path": Arg(str), "search_regex": Arg(str), "offset": Arg(int),
        "url": Arg(str), "status": Arg(int), "json_field": Arg(str), "json_value": Arg(ANY),
        "state": Arg(str, choices=UP + DOWN),
        "timeout": Arg((int, float), default=30), "sleep": Arg((int, float), default=0.25),
        "delay": Arg((int, float), default=0), "connect_timeout": Arg((int, float), default=5),
        "msg": Arg(str, help="the failure message instead of ripcord's"),
    }

    @classmethod
    def check_combination(cls, args):
        families = [key for key in ("port", "path", "url") if key in args]
        problems = [] if len(families) == 1 else [
            "exactly one of 'port', 'path' or 'url' is required (got "
            f"{', '.join(families) or 'none'})"]
        family = families[0] if len(families) == 1 else None
        belongs = {"host": "port", "search_regex": "path", "status": "url", "json_field": "url",
                   "json_value": "url"}
        problems += [f"argument {key!r} only applies with {owner!r}" for key, owner in belongs.items()
                     if key in args and family and family != owner]
        if "offset" in args and "search_regex" not in args:
            problems.append("argument 'offset' only applies with 'search_regex'")
        if ("json_field" in args) != ("json_value" in args):
            problems.append("'json_field' and 'json_value' go together")
        if "state" in args and family == "url":
            problems.append("argument 'state' does not apply to 'url' (use status/json_value)")
        if "search_regex" in args and args.get("state") in DOWN:
            problems.append("search_regex waits for text to appear: state must be present")
        regex = args.get("search_regex")
        if isinstance(regex, str) and not _is_template(regex):
            try:
                re.compile(regex)
            except re.error as exc:
                problems.append(f"argument 'search_regex': not a valid regex: {exc}")
        for key in ("timeout", "sleep", "delay", "connect_timeout", "offset"):
            problems += _number(args, key)
        return problems + _url_problem(args)

    def run(self, ctx: TaskContext, args: dict) -> Result:
        awaited, probe = self.condition(ctx, args)
        timeout, pause = float(args["timeout"]), max(0.01, float(args["sleep"]))
        started = time.monotonic()
        deadline = started + timeout
        time.sleep(float(args.get("delay") or 0))
        while True:
            remaining = deadline - time.monotonic()
            try:
                holds, seen, data = probe(max(0.2, min(float(args["connect_timeout"]), remaining)))
            except ForwardingDenied as exc:
                return Result(failed=True, msg=f"cannot wait for {awaited}: {exc}")
            except IO_ERRORS as exc:
                failure = io_failure(ctx, exc, "error")  # raises when the host is unreachable
                holds, seen, data = False, failure.msg, {}
            elapsed = round(time.monotonic() - started, 3)
            data = {**data, "elapsed": elapsed}
            if holds:
                return Result(msg=f"waited {elapsed:.2f}s for {awaited}", data=data)
            if time.monotonic() >= deadline:
                down = servicehint.down(ctx, *data["refused"]) if data.get("refused") else None
                return Result(failed=True, data={**data, "last_seen": seen},
                              msg=args.get("msg") or f"timed out after {timeout:g}s waiting for "
                                                     f"{awaited}; last seen: {seen}"
                                                     + (f"; {down}" if down else ""))
            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))

    def condition(self, ctx: TaskContext, args: dict) -> tuple[str, Probe]:
        """What is awaited, in words, and a probe that looks once."""
        up = args.get("state") in (None, *UP)
        if args.get("port") is not None:
            host, port = args.get("host") or "127.0.0.1", int(args["port"])

            def port_probe(timeout: float):
                is_open, seen = port_open(ctx, host, port, timeout)
                data = {"host": host, "port": port, "state": seen.split()[0]}
                return is_open == up, seen, data if is_open else {**data, "refused": [host, port]}
            return f"{host}:{port} to be {'open' if up else 'closed'} (from {ctx.host})", port_probe
        if args.get("url") is not None:
            return self.url_condition(ctx, args)
        path = args["path"]
        if args.get("search_regex") is not None:
            tail = LogTail(ctx, path, int(args.get("offset") or 0), re.compile(args["search_regex"],
                                                                               re.MULTILINE))
            return f"/{args['search_regex']}/ in {path} past byte {tail.start}", tail.probe

        def path_probe(_timeout: float):
            try:
                ctx.conn.fabric.sftp().stat(path)
                exists = True
            except FileNotFoundError:
                exists = False
            return exists == up, "present" if exists else "absent", {"path": path}
        return f"{path} to be {'present' if up else 'absent'}", path_probe

    @staticmethod
    def url_condition(ctx: TaskContext, args: dict) -> tuple[str, Probe]:
        url, status = args["url"], int(args.get("status") or 200)
        field, expected = args.get("json_field"), args.get("json_value")
        awaited = f"{url} to answer {status}" + (f" with {field} == {shown(expected)}" if field else "")

        def url_probe(timeout: float):
            try:
                answer = request(ctx, url, timeout=timeout)
            except ForwardingDenied:
                raise
            except Refused as exc:
                return False, f"no answer ({exc})", {"url": url, "refused": [exc.host, exc.port]}
            except ChannelError as exc:
                return False, f"no answer ({exc})", {"url": url}
            data = {"url": url, **answer.data()}
            seen = f"HTTP {answer.status}"
            if answer.status != status:
                return False, seen, data
            if field is None:
                return True, seen, data
            if answer.json is MISSING:
                return False, f"{seen}, not JSON", data
            value = dig(answer.json, field)
            return value is not MISSING and same_value(value, expected), \
                f"{seen}, {field} = {shown(value)}", data
        return awaited, url_probe


class LogTail:
    """Reads a remote file incrementally from a byte offset and searches what was read."""

    def __init__(self, ctx: TaskContext, path: str, offset: int, regex: re.Pattern):
        self.ctx, self.path, self.regex = ctx, path, regex
        self.start = self.position = offset
        self.seen = b""

    def probe(self, _timeout: float) -> tuple[bool, str, dict]:
        sftp = self.ctx.conn.fabric.sftp()
        try:
            size = sftp.stat(self.path).st_size or 0
        except FileNotFoundError:
            return False, f"{self.path} does not exist", {"path": self.path}
        if size < self.position:  # truncated or rotated since the mark: start over
            self.position, self.seen = 0, b""
        if size > self.position:
            with sftp.open(self.path, "rb") as handle:
                handle.seek(self.position)
                chunk = handle.read(size - self.position)
            self.position += len(chunk)
            self.seen = (self.seen + chunk)[-SEEN_LIMIT:]
        data = {"path": self.path, "offset": self.position}
        found = self.regex.search(self.seen.decode("utf-8", errors="replace"))
        if not found:
            return False, f"no match in {self.position - self.start} new bytes (file size {size})", data
        return True, "match", {**data, "match": found.group(0), "match_groups": list(found.groups()),
                               "match_groupdict": found.groupdict()}


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
SENSITIVE_HEADER = re.compile(r"auth|key|token|secret|cookie|pass|sign", re.IGNORECASE)


@register
class Uri(Module):
    """One HTTP request from the host; asserts the status and, optionally, JSON fields.

    Changed: for methods that change things (POST, PUT, PATCH, DELETE); GET, HEAD and OPTIONS never.
    Check mode: GET, HEAD and OPTIONS run; the others are skipped.
    Example:
        - name: the engine's own word on its state
          uri:
            url: http://127.0.0.1:8080/health
            status: 200
          register: health
    """

    name = "uri"
    args = {
        "url": Arg(str, required=True),
        "method": Arg(str, default="GET", choices=("GET", "HEAD", "OPTIONS", "POST", "PUT",
                                                  "PATCH", "DELETE")),
        "body": Arg(ANY), "body_format": Arg(str, choices=("json", "raw")),
        "headers": Arg(dict, secret=True), "status": Arg((int, list), default=200),
        "status_code": Arg((int, list), help="Ansible's name for status"),
        "return_content": Arg(bool, help="Ansible's; the body is always returned (content, json)"),
        "json": Arg(dict, help="dotted path -> expected value, asserted"),
        "timeout": Arg((int, float), default=30),
    }

    @classmethod
    def check_combination(cls, args):
        problems = _url_problem(args) + _number(args, "timeout")
        if args.get("status_code") is not None and args.get("status") not in (None, 200):
            problems.append("give status or status_code (Ansible's name for it), not both")
        status = args["status_code"] if args.get("status_code") is not None else args.get("status")
        if isinstance(status, list) and not all(isinstance(s, int) and not isinstance(s, bool)
                                                for s in status):
            problems.append("argument 'status': expected an integer or a list of integers")
        if args.get("body_format") == "raw" and not isinstance(args.get("body", ""), str):
            problems.append("body_format raw needs a string body")
        return problems

    def run(self, ctx: TaskContext, args: dict) -> Result:
        url, method = args["url"], args["method"].upper()
        if ctx.check and method not in SAFE_METHODS:
            return Result(changed=True, skipped=True, msg="skipped in check mode",
                          data={"url": url, "method": method})
        headers = {str(k): str(v) for k, v in (args.get("headers") or {}).items()}
        for name, value in headers.items():
            if SENSITIVE_HEADER.search(name) and ctx.secrets is not None:
                ctx.secrets.add(value)
        body = self.encode(args, headers)
        started = time.monotonic()
        try:
            answer = request(ctx, url, method=method, body=body, headers=headers,
                             timeout=float(args["timeout"]))
        except Refused as exc:  # which service is down, and the command that brings it back
            return Result(failed=True, msg=servicehint.explain(ctx, exc.host, exc.port, str(exc)),
                          data={"url": url, "method": method})
        except ChannelError as exc:
            return Result(failed=True, msg=str(exc), data={"url": url, "method": method})
        data = {"url": url, "method": method, **answer.data(),
                "elapsed": round(time.monotonic() - started, 3)}
        changed = method not in SAFE_METHODS
        status = args["status_code"] if args.get("status_code") is not None else args["status"]
        wanted = status if isinstance(status, list) else [status]
        if answer.status not in [int(s) for s in wanted]:
            return Result(failed=True, changed=changed, data=data,
                          msg=f"{method} {url}: expected status "
                              f"{' or '.join(map(str, wanted))}, got {answer.status}")
        problem = self.json_problem(answer.json, args.get("json") or {})
        if problem:
            return Result(failed=True, changed=changed, data=data, msg=f"{method} {url}: {problem}")
        return Result(changed=changed, data=data, msg=f"{method} {url}: HTTP {answer.status}")

    @staticmethod
    def encode(args: dict, headers: dict[str, str]) -> bytes | None:
        body = args.get("body")
        if body is None:
            return None
        as_json = args.get("body_format") == "json" or (args.get("body_format") is None
                                                        and not isinstance(body, str))
        if not as_json:
            return str(body).encode()
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        return json.dumps(body).encode()

    @staticmethod
    def json_problem(document: Any, expected: dict) -> str | None:
        if expected and document is MISSING:
            return "the response is not JSON"
        for path, want in expected.items():
            value = dig(document, str(path))
            if value is MISSING or not same_value(value, want):
                return f"json {path}: expected {shown(want)}, got {shown(value)}"
        return None
