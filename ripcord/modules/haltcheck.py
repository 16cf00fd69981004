"""halt --check: the kill switch's preflight, which changes nothing.

Pulled in an incident, a broken rung is found too late; asked ahead (before a drill, before the
first real halt of a new fleet), each rung's precondition is cheap to check without acting: the
signing secret readable, NATS answering, the engine's health, the halt file's directory
writable, the service manager able to address the engine, the exchange key accepted. Each host's
result says which rungs would work; it fails where one would not.
"""

from __future__ import annotations

import os
import shlex
from concurrent.futures import ThreadPoolExecutor

from ripcord import bus, fasthalt
from ripcord.errors import RipcordError, UnreachableError
from ripcord.modules import httpchannel
from ripcord.modules.base import Result, TaskContext
from ripcord.modules.bus import nats_tunnel
from ripcord.modules.killswitch import halt_file
from ripcord.modules.service import control_for
from ripcord.modules.trading import ExchangeAccount, fleet_secret, reachable, ssh_down, tunnelled

RUNGS = ("secret", "nats", "health", "file", "stop", "exchange")


def preflight(contexts: dict[str, TaskContext], args: dict) -> dict[str, Result | UnreachableError]:
    """Whether each rung would work on each host, asked without changing anything: the signing
    secret readable (never shown), NATS answering, the engine's health answering (connected to
    NATS, with the same secret's fingerprint if it reports one), the halt file's directory
    writable (`test -w`), the exchange key accepted (a read of the engine's open orders), and
    the service manager able to address the engine. Failed where a rung would not work."""
    try:
        fasthalt.controller_secret(next(iter(contexts.values())).vars)  # a file others can read
        fingerprint: str | None = bus.fingerprint(fleet_secret(contexts))
        secret_seen = "ok"
    except (RipcordError, UnreachableError) as exc:
        fingerprint, secret_seen = None, f"cannot sign: {exc}"
    nats_seen = _nats_answers(contexts, args)
    with ThreadPoolExecutor(max_workers=len(contexts)) as pool:
        seen = dict(zip(contexts, pool.map(
            lambda ctx: _host_preflight(ctx, args, fingerprint), contexts.values()), strict=True))
    results: dict[str, Result | UnreachableError] = {}
    for host, ctx in contexts.items():
        rungs = {"secret": secret_seen, "nats": nats_seen, **seen[host]}
        if rungs["nats"] == "ok" and rungs.pop("engine_nats", "ok") != "ok":
            rungs["nats"] = seen[host]["engine_nats"]
        rungs.pop("engine_nats", None)
        bad = [f"{rung}: {rungs[rung]}" for rung in RUNGS if rungs.get(rung, "ok") != "ok"]
        good = [rung for rung in RUNGS if rungs.get(rung, "ok") == "ok"]
        msg = (f"preflight: would work: {', '.join(good) or 'none'}"
               + (f"; would NOT work: {'; '.join(bad)}" if bad else ""))
        if ctx.conn is None:
            results[host] = UnreachableError(f"{host}: {ssh_down(ctx)}; {msg}")
        else:
            results[host] = Result(failed=bool(bad), msg=msg, data={"preflight": rungs})
    return results


def _nats_answers(contexts: dict[str, TaskContext], args: dict) -> str:
    """"ok" when NATS accepts a connection and answers a round trip, else why not."""
    import asyncio

    first = next(iter(contexts.values()))
    url = first.vars.get("nats_url")
    if not url:
        return "no NATS URL: set inventory variable nats_url"
    tunnel = tunnelled(first, args)

    async def ping(target: str) -> str:
        nc = await bus.connect(target, float(args["nats_timeout"]), retry_refused=tunnel,
                               shown_as=bus.public_url(url))
        try:
            await nc.flush(float(args["nats_timeout"]))
        finally:
            await bus.close(nc, 0.5)
        return "ok"

    try:
        if not tunnel:
            return asyncio.run(ping(url))
        via = next(iter(reachable(contexts).values()), None)
        if via is None:
            return "NATS is reached through an SSH tunnel and no host answers over SSH"
        with nats_tunnel(via, url) as local_url:
            return asyncio.run(ping(local_url))
    except (bus.BusError, UnreachableError) as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - nats-py's own errors: NATS did not answer
        return f"NATS did not answer: {exc or type(exc).__name__}"


def _host_preflight(ctx: TaskContext, args: dict, fingerprint: str | None) -> dict[str, str]:
    """Each host rung: "ok" or why it would not work."""
    seen: dict[str, str] = {}
    url = (ctx.vars.get("health_urls") or {}).get(args["service"])
    try:
        if not url:
            raise httpchannel.ChannelError(f"no health URL for {args['service']}")
        if ctx.conn is None and (why := httpchannel.direct_reason(ctx, url)):
            raise httpchannel.ChannelError(why)
        answer = (httpchannel.request_direct(url, timeout=2.0) if ctx.conn is None
                  else httpchannel.request(ctx, url, timeout=2.0)).json
        if not isinstance(answer, dict) or "halted" not in answer:
            raise httpchannel.ChannelError(f"{url} answered no engine health JSON")
        seen["health"] = "ok"
        theirs = answer.get("secret_fingerprint")
        seen["engine_nats"] = ("the engine is not connected to NATS" if answer.get("nats_connected") is False
                               else "the engine holds another signing secret"
                               if fingerprint and theirs and theirs != fingerprint else "ok")
    except (httpchannel.ChannelError, UnreachableError) as exc:
        seen["health"] = str(exc)
        seen["engine_nats"] = "unknown: the engine's health does not answer"
    if ctx.conn is None:
        seen.update(file=ssh_down(ctx), stop=ssh_down(ctx), exchange=ssh_down(ctx))
        return seen
    try:
        directory = os.path.dirname(halt_file(ctx)) or "."
        out = ctx.conn.run(f"test -d {shlex.quote(directory)} && test -w {shlex.quote(directory)}",
                           timeout=5)
        seen["file"] = "ok" if out.rc == 0 else f"{directory} is not a writable directory"
    except (RipcordError, UnreachableError) as exc:
        seen["file"] = str(exc)
    try:
        control_for(ctx).status(args["service"])
        seen["stop"] = "ok"
    except (RipcordError, UnreachableError) as exc:
        seen["stop"] = f"the service manager cannot address {args['service']}: {exc}"
    try:
        ExchangeAccount(ctx).open_orders([f"{ctx.host}-"])
        seen["exchange"] = "ok"
    except (RipcordError, UnreachableError) as exc:
        seen["exchange"] = f"key not accepted or venue unreachable: {exc}"
    return seen
