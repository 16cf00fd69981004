"""titan_command, exchange and checks: the building blocks of the trading procedures.

- titan_command publishes one signed command to every engine of the batch, reachable over SSH or
  not, and counts their signed answers: core NATS is at-most-once, so an engine that did not
  answer did not act.
- exchange reads (or cancels) the fleet's account at the exchange, from the host.
- checks runs checks/ in the middle of a play (a pre-check), on every host of the batch at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from ripcord import bus
from ripcord.errors import RipcordError, UnreachableError
from ripcord.fasthalt import SecretFileRefused, secret_file
from ripcord.keyring import KeyringError, keyring_secret
from ripcord.modules import servicehint
from ripcord.modules.base import Arg, Module, Result, TaskContext, register
from ripcord.modules.bus import EnvFileError, env_secret, nats_tunnel
from ripcord.templating import truthy

EXCHANGE_TIMEOUT_S = 3.0
RATE_LIMIT_TRIES = 4  # an exchange call answered 429 is tried again, this many times in all,
RATE_LIMIT_WAIT_S = 1.0  # this long apart (exchanges' per-second limits reset within a second)
ENGINE = "titan-execution"  # the service whose engine answers titan_command
SUBJECTS = {"halt": bus.HALT_SUBJECT, "flatten": bus.FLATTEN_SUBJECT,
            "cancel_all": bus.CANCEL_ALL_SUBJECT}


def tunnelled(ctx: TaskContext, args: dict) -> bool:
    """Whether to reach NATS through an SSH forward: the task says, else inventory nats_tunnel
    (production NATS often listens on a host's loopback only)."""
    if args.get("tunnel") is not None:
        return bool(args["tunnel"])
    return truthy(ctx.vars.get("nats_tunnel", False))


def reachable(contexts: dict[str, TaskContext]) -> dict[str, TaskContext]:
    """The batch's hosts that answered over SSH (an ssh_optional module also gets the others)."""
    return {h: ctx for h, ctx in contexts.items() if ctx.conn is not None}


def ssh_down(ctx: TaskContext) -> str:
    """Why a host given without a connection has none, for its result."""
    return f"SSH down ({ctx.unreachable})" if ctx.unreachable else "SSH down"


def fleet_secret(contexts: dict[str, TaskContext]) -> str:
    """The HMAC secret: from the controller's environment variable named by inventory
    titan_hmac_secret_env, its kernel keyring's key named by titan_hmac_secret_keyring, or its
    file named by titan_hmac_secret_file (needs no host), else
    from the first host that answers over SSH and has it in its env_file; EnvFileError saying
    why none had it."""
    problems = []
    first = next(iter(contexts.values()))
    named = str(first.vars.get("titan_hmac_secret_env") or "")
    if named and os.environ.get(named, "").strip():  # the controller's environment (fasthalt.py)
        if first.secrets is not None:
            first.secrets.add(os.environ[named].strip())
        return os.environ[named].strip()
    try:  # the kernel keyring: the same reader as the halt's first publish (fasthalt.py)
        held = keyring_secret(first.vars)
    except KeyringError as exc:
        problems.append(f"controller: {exc}")
    else:
        if held is not None:
            if first.secrets is not None:
                first.secrets.add(held)
            return held
    if first.vars.get("titan_hmac_secret_file"):
        try:
            return controller_secret(first, str(first.vars["titan_hmac_secret_file"]))
        except EnvFileError as exc:
            problems.append(f"controller: {exc}")
    for ctx in contexts.values():
        if ctx.conn is None:
            problems.append(f"{ctx.host}: {ssh_down(ctx)}")
            continue
        try:
            return env_secret(ctx, "TITAN_HMAC_SECRET")
        except (EnvFileError, UnreachableError) as exc:
            problems.append(f"{ctx.host}: {exc}")
    raise EnvFileError("cannot sign: " + "; ".join(problems))


def controller_secret(ctx: TaskContext, path: str) -> str:
    """The first line of a file on the controller, which only its owner may read (as ssh asks of
    a key), registered for redaction."""
    path = os.path.expanduser(path)
    try:
        value = secret_file(path)
    except SecretFileRefused:
        raise EnvFileError(f"{path} is readable by others than its owner (chmod 600 it)") from None
    except OSError as exc:
        raise EnvFileError(f"cannot read {path}: {exc.strerror}") from None
    if not value:
        raise EnvFileError(f"{path} is empty")
    if ctx.secrets is not None:
        ctx.secrets.add(value)
    return value


def command_engines(contexts: dict[str, TaskContext], subject: str, fields: dict,
                    secret: Callable[[], str], *, args: dict, timeout: float) -> bus.Answers:
    """Publish a command signed with secret(), addressed to every host of the batch (its
    `targets`: an engine not named ignores it), reachable over SSH or not, and gather the
    engines' signed answers (bus.scatter: an unsigned or forged one is not an answer).

    The connection is bounded by args["nats_timeout"]; with tunnelled(), NATS is reached through
    an SSH forward via the batch's first host that answers over SSH. BusError when NATS cannot
    be used.
    """
    first = next(iter(contexts.values()))
    url = first.vars.get("nats_url")
    if not url:
        raise bus.BusError("no NATS URL: set inventory variable nats_url")
    key = secret()
    body = bus.encode({**fields, "targets": sorted(contexts)})
    headers = bus.sign(subject, body, key)
    tunnel = tunnelled(first, args)

    async def session(target: str) -> bus.Answers:
        nc = await bus.connect(target, float(args["nats_timeout"]), retry_refused=tunnel,
                               shown_as=bus.public_url(url))
        try:
            return await bus.scatter(nc, subject, body, headers, expect=set(contexts),
                                     timeout=timeout, secret=key)
        finally:
            await bus.close(nc, 0.5)

    if not tunnel:
        return asyncio.run(session(url))
    via = next(iter(reachable(contexts).values()), None)
    if via is None:
        raise bus.BusError("NATS is reached through an SSH tunnel (nats_tunnel), and no host "
                           "of the batch answers over SSH")
    with nats_tunnel(via, url) as local_url:
        return asyncio.run(session(local_url))


class ExchangeAccount:
    """The fleet's exchange account, reached from a host with that host's API key.

    Requests leave from the host (exchange keys are usually bound to the servers' addresses);
    curl reads the key header from stdin, so it is never on a command line. The paths are those
    of the sandbox's exchange (Binance-like); another venue needs its own class.
    """

    def __init__(self, ctx: TaskContext, key_name: str = "EXCHANGE_API_KEY"):
        self.ctx = ctx
        self.url = str(ctx.vars.get("exchange_url") or "").rstrip("/")
        if not self.url:
            raise RipcordError("inventory variable exchange_url is not set")
        try:
            self.key = env_secret(ctx, key_name)
        except EnvFileError as exc:
            raise RipcordError(str(exc)) from None

    def call(self, method: str, path: str, body: dict | None = None) -> Any:
        """One API call. A rate limit (HTTP 429: the engines share the key) is waited out, a
        second at a time, up to RATE_LIMIT_TRIES times: the halt must not give up on it."""
        command = ["curl", "-sS", "--max-time", f"{EXCHANGE_TIMEOUT_S:g}", "-H", "@-",
                   "-X", method, "-w", r"\n%{http_code}"]
        if body is not None:
            command += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
        command.append(self.url + path)
        for attempt in range(1, RATE_LIMIT_TRIES + 1):
            out = self.ctx.conn.run(" ".join(shlex.quote(w) for w in command),
                                    timeout=EXCHANGE_TIMEOUT_S + 2, stdin=f"X-API-KEY: {self.key}\n")
            text, _, code = out.stdout.rpartition("\n")
            if out.rc != 0 or not code.strip().isdigit():
                raise RipcordError(f"{method} {self.url}{path}: {out.stderr.strip() or 'no answer'}")
            if int(code) != 429 or attempt == RATE_LIMIT_TRIES:
                break
            time.sleep(RATE_LIMIT_WAIT_S)
        if int(code) >= 300:
            raise RipcordError(f"{method} {self.url}{path}: HTTP {code.strip()}")
        try:
            return json.loads(text)
        except ValueError:
            raise RipcordError(f"{method} {self.url}{path}: the answer is not JSON") from None

    def open_orders(self, prefixes: list[str] | None = None) -> list[dict]:
        """The account's open orders; with prefixes, only those whose clientOrderId starts with
        one (each engine prefixes its orders with its host name)."""
        if prefixes is None:
            return list(self.call("GET", "/api/v1/openOrders") or [])
        return [o for p in prefixes for o in self.call(
            "GET", f"/api/v1/openOrders?clientPrefix={urllib.parse.quote(p)}") or []]

    def cancel_all(self, prefixes: list[str] | None = None) -> int:
        bodies = [{}] if prefixes is None else [{"clientPrefix": p} for p in prefixes]
        return sum(int((self.call("POST", "/api/v1/cancelAll", body) or {}).get("cancelled", 0))
                   for body in bodies)

    def positions(self) -> dict[str, float]:
        return {p["symbol"]: float(p["qty"]) for p in self.call("GET", "/api/v1/positions") or []}

    def dead_man_switch(self) -> dict:
        return dict(self.call("GET", "/api/v1/countdownCancelAll") or {})


@register
class TitanCommand(Module):
    """One signed command to every engine of the batch; each host's result is its engine's answer.

    Core NATS is at-most-once: an engine that did not answer did not act, and its host fails.

    Changed: on every host whose engine answered.
    Check mode: skipped (nothing is published).
    Example:
        - name: cancel every engine's open orders
          titan_command:
            command: cancel_all
            body:
              reason: stale quotes after the feed outage
    """

    name = "titan_command"
    fleet = True
    ssh_optional = True  # the command goes over NATS: an engine SSH cannot reach still gets it
    args = {
        "command": Arg(str, required=True, choices=tuple(SUBJECTS)),
        "body": Arg(dict, default={}, help="the command's fields (state, symbol, reason, ...)"),
        "timeout": Arg((int, float), default=2.0, help="seconds to wait for every answer"),
        "nats_timeout": Arg((int, float), default=1.0, help="seconds to connect to NATS"),
        "tunnel": Arg(bool, help="reach NATS through an SSH forward via a host; "
                                 "default: inventory nats_tunnel"),
    }

    def run_fleet(self, contexts: dict[str, TaskContext], args: dict[str, Any]
                  ) -> dict[str, Result | UnreachableError]:
        published_at = time.time()
        if any(ctx.check for ctx in contexts.values()):
            return dict.fromkeys(contexts, Result(skipped=True, msg="skipped in check mode",
                                                  data={"published_at": published_at}))
        first = next(iter(contexts.values()))
        subject = SUBJECTS[args["command"]]
        fields = {"operator": first.vars.get("ripcord_operator", "ripcord"),
                  **(args.get("body") or {})}
        results: dict[str, Result | UnreachableError] = {}
        if args["command"] == "halt" and fields.get("state") != "HARD_HALT":
            # Only the safe direction reaches an engine its operator cannot see over SSH:
            # a resume (NORMAL) waits until the host can be checked.
            for host, ctx in contexts.items():
                if ctx.conn is None:
                    results[host] = UnreachableError(f"{host}: {ssh_down(ctx)}; not sent: "
                                                     f"only a halt goes to a host SSH cannot reach")
            contexts = reachable(contexts)
            if not contexts:
                return results
        try:
            answers = command_engines(contexts, subject, fields, lambda: fleet_secret(contexts),
                                      args=args, timeout=float(args["timeout"]))
        except (bus.BusError, EnvFileError) as exc:
            where = servicehint.nats_hint(first, str(exc))  # which host runs NATS, and the fix
            return {**results, **dict.fromkeys(contexts, Result(failed=True, msg=f"{subject}: {where}"))}
        for host, ctx in contexts.items():
            down = [ssh_down(ctx)] if ctx.conn is None else []
            forged = answers.ignored_for(host)
            if host not in answers.by_host:
                stopped = servicehint.state_and_fix(ctx, ENGINE)  # the likely why, and its fix
                results[host] = Result(failed=True, msg="; ".join([
                    f"{subject}: no answer from the engine within {float(args['timeout']):g}s",
                    *forged, *down, *([stopped] if stopped else [])]),
                    data={"published_at": published_at, "ignored": forged})
                continue
            seconds, answer = answers.by_host[host]
            errors = answer.get("errors") or []
            data = {"answer": answer, "answered_ms": round(seconds * 1000, 1),
                    "published_at": published_at, "ignored": forged}
            said = [f"{subject}: answered in {seconds * 1000:.0f} ms"]
            if errors:
                said.append(f"errors: {'; '.join(map(str, errors))}")
            results[host] = Result(changed=True, failed=bool(errors) or answer.get("ok") is False,
                                   msg="; ".join(said + forged + down), data=data)
        return results


@register
class Exchange(Module):
    """The fleet's account at the exchange, seen from the host with its API key.

    Read-only, unless action is cancel_all.

    Changed: only cancel_all, when it cancelled at least one order.
    Check mode: the reads run; cancel_all is skipped.
    Example:
        - name: no order left open
          exchange:
            action: open_orders
          register: orders
        - assert:
            that: orders.count == 0
    """

    name = "exchange"
    args = {
        "action": Arg(str, required=True,
                      choices=("open_orders", "positions", "dead_man_switch", "cancel_all")),
        "key": Arg(str, default="EXCHANGE_API_KEY", help="the env_file variable with the key"),
    }

    def run(self, ctx: TaskContext, args: dict) -> Result:
        action = args["action"]
        if action == "cancel_all" and ctx.check:
            return Result(skipped=True, msg="skipped in check mode")
        try:
            account = ExchangeAccount(ctx, args["key"])
            if action == "open_orders":
                orders = account.open_orders()
                return Result(msg=f"{len(orders)} open orders",
                              data={"open_orders": orders, "count": len(orders)})
            if action == "positions":
                positions = account.positions()
                open_ = {s: q for s, q in positions.items() if q}
                return Result(msg="flat" if not open_ else f"positions: {open_}",
                              data={"positions": positions, "open": open_})
            if action == "dead_man_switch":
                switch = account.dead_man_switch()
                return Result(msg="armed" if switch.get("armed") else "not armed", data=switch)
            cancelled = account.cancel_all()
        except UnreachableError:
            raise
        except RipcordError as exc:
            return Result(failed=True, msg=f"exchange: {exc}")
        return Result(changed=bool(cancelled), msg=f"cancelled {cancelled} open orders",
                      data={"cancelled": cancelled})


@register
class Checks(Module):
    """Runs checks (checks/) on every host of the batch as a task, failing the hosts whose checks fail.

    A pre-check: with any_errors_fatal, the whole procedure stops.

    Changed: never.
    Check mode: runs as usual (checks only read).
    Example:
        - name: the fleet is healthy before we touch it
          checks:
            select: health
    """

    name = "checks"
    fleet = True
    args = {"select": Arg(str, required=True, help="marker expression or node ids"),
            "retry": Arg((int, float), default=0, help="seconds to retry failing checks")}

    def run_fleet(self, contexts: dict[str, TaskContext], args: dict[str, Any]
                  ) -> dict[str, Result | UnreachableError]:
        from ripcord.verify import run_checks

        report = run_checks(args["select"], {h: c.conn for h, c in contexts.items()},
                            {h: c.vars for h, c in contexts.items()},
                            retry_s=float(args["retry"]) or None)
        results: dict[str, Result | UnreachableError] = {}
        for host in contexts:
            mine = [r for r in report.results if r.host == host]
            failed = [r for r in mine if r.outcome == "failed"]
            passed = sum(r.outcome == "passed" for r in mine)
            msg = "; ".join(f"{r.id}: {r.message}" for r in failed) or f"{passed} checks passed"
            results[host] = Result(failed=bool(failed), msg=msg,
                                   data={"checks": [vars(r) for r in mine]})
        return results
