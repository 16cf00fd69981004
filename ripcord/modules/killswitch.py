"""halt: the runbooks' kill switch, as one verified transaction over the whole batch.

The escalation ladder, fastest first, where no broken rung stops the others:
  1. a signed HARD_HALT on titan.cmd.sys.halt.v1, with a reply inbox: every engine answers,
     and core NATS being at-most-once, a missing answer counts as a failure, not a success;
  2. at the same time, the halt file on every host (it survives restarts);
  3. each host's /health polled until it says halted, up to `deadline` seconds;
  4. any host still not halted gets its execution service stopped (the last resort);
  5. the exchange: the account's open orders confirmed 0, cancelled if not; and earlier, from
     the moment an engine misses its NATS answer until it is halted or stopped, its own orders
     cancelled again and again (an engine that ignores every halt keeps placing them).
Under --check, a preflight instead (ripcord/modules/haltcheck.py). When the controller holds the
signing secret, rung 1's command went out before anything else (ripcord/fasthalt.py): its answers
are taken from there. The result says, per host, which rung halted it. Nothing asks for
confirmation: halting is the safe direction.

SSH being down is the kind of incident a kill switch is pulled in, so the halt is given every host
of the batch (ssh_optional), SSH-reachable or not: rungs 1 and 5 need no SSH to the host they halt
(the secret and the exchange are reached through any host that answers), rung 3 reads its health
from the controller where that sees what the host sees; the halt file and the last resort are
said not run ("halt file not written: SSH down"), and the host still counts as unreachable.
"""

from __future__ import annotations

import os
import shlex
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ripcord import bus, fasthalt
from ripcord.errors import RipcordError, UnreachableError
from ripcord.modules import httpchannel
from ripcord.modules.base import Arg, Module, Result, TaskContext, register
from ripcord.modules.bus import EnvFileError
from ripcord.modules.service import control_for
from ripcord.modules.trading import ExchangeAccount, command_engines, fleet_secret, reachable, ssh_down

if fasthalt.PENDING is None or fasthalt.PENDING.published_at is None:  # else rung 1 is out already:
    bus.preload()  # nats-py is not needed, and its import would compete with the SSH handshakes
POLL_S = 0.02  # an engine says halted within ~20 ms of the command
SWEEP_S = 0.2  # an engine that missed its answer: its open orders cancelled this often


@dataclass
class HostHalt:
    """What the ladder did and saw on one host."""

    acked_ms: float | None = None  # the engine's answer to the NATS command, after the publish
    halt_file: str = ""  # "written" or why not
    halted: bool = False  # its /health said so
    halt_source: str | None = None
    stopped: bool = False  # the last resort was needed and worked
    exchange_failed: bool = False  # 0 open orders could not be confirmed for this host
    swept: int = 0  # its orders cancelled at the exchange while it had not answered
    not_run: list[str] = field(default_factory=list)  # rungs that could not run: SSH is down
    errors: list[str] = field(default_factory=list)

    @property
    def rung(self) -> str | None:
        """Which rung halted the host: nats, file, stop, seen (halted, but neither of our first
        rungs can claim it: e.g. already halted, SSH down and no answer), or None when none did."""
        if self.halted and self.acked_ms is not None:
            return "nats"
        if self.halted:
            return "file" if self.halt_file == "written" else "seen"
        return "stop" if self.stopped else None


@register
class Halt(Module):
    """Halts every execution engine of the batch, verified, by whichever rung works first.

    The ladder: a signed HARD_HALT over NATS and the halt file at once, each engine's health polled
    until it says halted, then the engine's service stopped (the last resort), then the exchange's
    open orders confirmed 0. The result says, per host, which rung halted it.

    Changed: on every engine host (a halt is always recorded, even of an engine already halted).
    Check mode: a preflight that changes nothing: says per host which rungs would work.
    Example:
        - name: stop trading now
          halt:
            reason: runaway orders on BTCUSDT
    """

    name = "halt"
    fleet = True
    ssh_optional = True  # an engine SSH cannot reach is still halted over NATS
    args = {
        "reason": Arg(str, required=True, help="recorded by each engine and in its halt file"),
        "operator": Arg(str, default="ripcord"),
        "deadline": Arg((int, float), default=5.0,
                        help="seconds for every engine to be halted before its service is stopped"),
        "ack_timeout": Arg((int, float), default=1.0, help="seconds to wait for NATS answers"),
        "nats_timeout": Arg((int, float), default=1.0, help="seconds to connect to NATS"),
        "tunnel": Arg(bool, help="reach NATS through an SSH forward via a host; "
                                 "default: inventory nats_tunnel"),
        "service": Arg(str, default="titan-execution"),
        "last_resort": Arg(bool, default=True, help="stop the service of an engine not halted"),
        "exchange": Arg(bool, default=True, help="confirm 0 open orders at the exchange"),
    }

    def run_fleet(self, contexts: dict[str, TaskContext], args: dict[str, Any]
                  ) -> dict[str, Result | UnreachableError]:
        if any(ctx.check for ctx in contexts.values()):
            from ripcord.modules.haltcheck import preflight

            return preflight(contexts, args)
        started = time.monotonic()
        state = {host: HostHalt() for host in contexts}
        up = reachable(contexts)
        lost: dict[str, UnreachableError] = {}
        early = fasthalt.taken(list(contexts))  # published before any SSH connection opened
        secret: str | Exception = ""
        if early is None:
            try:
                secret = fleet_secret(contexts)  # first: the publish must not wait
            except EnvFileError as exc:
                secret = exc
        with ThreadPoolExecutor(max_workers=len(contexts) + 1) as pool:
            signalled = pool.submit(self._signal, contexts, args, state, secret, early)
            files = {h: pool.submit(self._write_halt_file, ctx, args, state[h])
                     for h, ctx in up.items()}
            polls = {h: pool.submit(self._wait_halted, ctx, args, state[h],
                                    started + float(args["deadline"]))
                     for h, ctx in contexts.items()}
            bus_note = signalled.result()
            silent = [h for h in contexts if state[h].acked_ms is None]
            done = threading.Event()
            sweeper = threading.Thread(target=self._sweep, args=(contexts, silent, state, done),
                                       daemon=True)
            if silent and args["exchange"]:
                sweeper.start()
            try:
                for host, future in [*files.items(), *polls.items()]:
                    try:
                        future.result()
                    except UnreachableError as exc:
                        lost[host] = exc
                stuck = [h for h in up if not state[h].halted and h not in lost]
                if args["last_resort"]:
                    for host, future in [(h, pool.submit(self._stop, contexts[h], args, state[h]))
                                         for h in stuck]:
                        try:
                            future.result()
                        except UnreachableError as exc:
                            lost[host] = exc
            finally:
                done.set()
                if sweeper.is_alive():
                    sweeper.join()
        for host, ctx in contexts.items():
            if ctx.conn is None:
                state[host].halt_file = f"not written: {ssh_down(ctx)}"
                state[host].not_run.append(f"halt file not written: {ssh_down(ctx)}")
                if args["last_resort"] and not state[host].halted:
                    state[host].not_run.append(f"service not stopped (last resort): {ssh_down(ctx)}")
        notes: dict[str, str] = {}
        if args["exchange"]:
            notes = self._exchange(contexts, lost, state, whole_fleet(contexts))
        results: dict[str, Result | UnreachableError] = {}
        for host in contexts:
            result = self._result(host, state[host], bus_note, notes.get(host, ""))
            results[host] = UnreachableError(f"{lost[host]} ({result.msg})") if host in lost else result
        return results

    # --- rung 1: the signed command, and every engine's answer ---------------------------------

    def _signal(self, contexts: dict[str, TaskContext], args: dict, state: dict[str, HostHalt],
                secret: str | Exception, early: fasthalt.Publish | None = None) -> str:
        """Publish HARD_HALT and record each engine's answer (or take those of the publish
        fasthalt made before anything else); returns a note on the bus rung."""
        fields = {"state": "HARD_HALT", "reason": args["reason"], "operator": args["operator"],
                  "source": "ripcord"}
        try:
            if early is not None:
                if early.error:
                    raise bus.BusError(early.error)
                answers = early.answers
            elif isinstance(secret, Exception):
                raise secret
            else:
                answers = command_engines(contexts, bus.HALT_SUBJECT, fields, lambda: secret,
                                          args=args, timeout=float(args["ack_timeout"]))
        except (bus.BusError, EnvFileError) as exc:
            return f"NATS rung failed: {exc}"
        for host, (seconds, answer) in answers.by_host.items():
            if answer.get("halted"):
                state[host].acked_ms = round(seconds * 1000, 1)
        for host in contexts:  # an answer in its name that is not its own: worth an operator's eye
            state[host].errors.extend(answers.ignored_for(host))
        missing = sorted(set(contexts) - set(answers.by_host))
        return "; ".join([f"no NATS answer from {', '.join(missing)}"] * bool(missing)
                         + answers.ignored_elsewhere(set(contexts)))

    # --- rung 2: the halt file -------------------------------------------------------------------

    @staticmethod
    def _write_halt_file(ctx: TaskContext, args: dict, state: HostHalt) -> None:
        try:
            path = halt_file(ctx)
        except RipcordError as exc:
            state.halt_file = f"not written: {exc}"
            state.errors.append(str(exc))
            return
        text = f"HARD_HALT {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} " \
               f"operator={args['operator']} reason={args['reason']}\n"
        # One exec channel (a new file beside it, then rename: atomic), not an SFTP session:
        # opening SFTP on every host at once costs more than the rest of the rung.
        tmp = f"{path}.ripcord-{os.getpid()}"
        command = (f"umask 022 && printf %s {shlex.quote(text)} > {shlex.quote(tmp)} && "
                   f"mv -f {shlex.quote(tmp)} {shlex.quote(path)}")
        out = ctx.conn.run(command, timeout=5)  # UnreachableError: the host is gone
        if out.rc == 0:
            state.halt_file = "written"
        else:
            why = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.rc}"
            state.halt_file = f"not written: {why}"
            state.errors.append(f"halt file {path}: {why}")

    # --- rung 3: verified halted, from the engine's own health endpoint -------------------------

    @staticmethod
    def _wait_halted(ctx: TaskContext, args: dict, state: HostHalt, deadline: float) -> None:
        url = (ctx.vars.get("health_urls") or {}).get(args["service"])
        if not url:
            state.errors.append(f"no health URL for {args['service']}: cannot verify the halt")
            return
        if ctx.conn is None:  # from the controller, when it sees what the host sees
            why = httpchannel.direct_reason(ctx, url)
            if why:
                state.not_run.append(f"cannot verify: {ssh_down(ctx)} and {why}")
                return
        seen = ""
        while True:
            try:
                answer = (httpchannel.request_direct(url, timeout=1.0) if ctx.conn is None
                          else httpchannel.request(ctx, url, timeout=1.0)).json
                if isinstance(answer, dict) and answer.get("halted") is True:
                    state.halted, state.halt_source = True, answer.get("halt_source")
                    return
                seen = f"it reports {answer.get('state')!r}" if isinstance(answer, dict) \
                    else "it answered no JSON"
            except httpchannel.ChannelError as exc:
                seen = str(exc)
            if time.monotonic() >= deadline:
                state.errors.append(f"not halted after {float(args['deadline']):g}s: {seen}")
                return
            time.sleep(POLL_S)

    # --- rung 4: the last resort -----------------------------------------------------------------

    @staticmethod
    def _stop(ctx: TaskContext, args: dict, state: HostHalt) -> None:
        try:
            control = control_for(ctx)
            control.act("stop", args["service"])
            status = control.status(args["service"])
        except UnreachableError:
            raise
        except RipcordError as exc:
            state.errors.append(f"last resort failed: {exc}")
            return
        state.stopped = not status.active
        if not state.stopped:
            state.errors.append(f"last resort failed: {args['service']} is {status.raw}")

    # --- rung 5, early: the orders of an engine that did not answer ------------------------------

    @staticmethod
    def _sweep(contexts: dict[str, TaskContext], silent: list[str], state: dict[str, HostHalt],
               done: threading.Event) -> None:
        """From the moment an engine misses its NATS answer until it is seen halted or the last
        resort is over: its open orders at the exchange cancelled, again and again (an engine
        that ignores every halt keeps placing them), through the first host that answers over
        SSH. One read of the account a round, a cancel only for engines with orders open."""
        via = next(iter(reachable(contexts).values()), None)
        if via is None:
            return
        try:
            exchange = ExchangeAccount(via)
        except (RipcordError, UnreachableError):
            return  # rung 5 says why, after the ladder
        while not done.is_set():
            left = [h for h in silent if not state[h].halted and not state[h].stopped]
            if not left:
                return
            try:
                ids = [str(o.get("clientOrderId") or "") for o in exchange.open_orders()]
                for host in left:
                    if any(i.startswith(f"{host}-") for i in ids):
                        state[host].swept += exchange.cancel_all([f"{host}-"])
            except (RipcordError, UnreachableError):
                pass  # rung 5 still confirms 0 at the end, and says why if it cannot
            done.wait(SWEEP_S)

    # --- rung 5: the exchange --------------------------------------------------------------------

    @staticmethod
    def _exchange(contexts: dict[str, TaskContext], lost: dict, state: dict[str, HostHalt],
                  account_wide: bool) -> dict[str, str]:
        """Through the first host that answers over SSH: the open orders of the account when the
        whole fleet halts, else those of the halted engines (by their clientOrderId prefix, SSH
        reachable or not); cancelled if any. Returns the note for each host it speaks for: the
        host it went through and every engine SSH cannot reach."""
        prefixes = None if account_wide else [f"{h}-" for h in contexts]
        down = [h for h, ctx in contexts.items() if ctx.conn is None]
        for host, ctx in reachable(contexts).items():
            if host in lost:
                continue
            failure = ""
            try:
                exchange = ExchangeAccount(ctx)
                before = exchange.open_orders(prefixes)
                if not before:
                    note = "exchange: 0 open orders"
                else:
                    cancelled = exchange.cancel_all(prefixes)
                    after = exchange.open_orders(prefixes)
                    note = f"exchange: cancelled {cancelled} open orders, now 0"
                    if after:
                        failure = f"exchange: {len(after)} open orders remain after cancel-all"
            except UnreachableError as exc:
                lost[host] = exc
                continue
            except RipcordError as exc:
                failure = f"exchange: cannot confirm 0 open orders: {exc}"
            for each in [host, *down]:
                if failure:
                    state[each].exchange_failed = True
                    state[each].errors.append(failure if each == host else f"{failure} (through {host})")
            if failure:
                return {}
            return {host: note, **{h: f"{note} (through {host})" for h in down}}
        for host in down:
            state[host].exchange_failed = True
            state[host].not_run.append("exchange not checked: no host of the batch answers over SSH")
        return {}

    # --- the answer ------------------------------------------------------------------------------

    @staticmethod
    def _result(host: str, state: HostHalt, bus_note: str, exchange_note: str) -> Result:
        rung = state.rung
        if rung == "nats":
            said = f"halted by NATS (answered in {state.acked_ms:g} ms)"
        elif rung == "file":
            said = "halted by the halt file"
        elif rung == "seen":
            said = f"halted (its health says so, source: {state.halt_source})"
        elif rung == "stop":
            said = "halted by stopping its service (last resort)"
        else:
            said = "NOT HALTED"
        if rung is None and state.acked_ms is not None:  # its answer says halted; unseen
            said = f"answered halted by NATS in {state.acked_ms:g} ms, NOT VERIFIED"
        notes = [said, *state.not_run, *state.errors]
        if state.swept:
            notes.append(f"exchange: cancelled {state.swept} of its open orders while it had not answered")
        if bus_note and rung != "nats":
            notes.append(bus_note)
        if exchange_note:
            notes.append(exchange_note)
        data = {"rung": rung, "acked_ms": state.acked_ms, "halt_file": state.halt_file,
                "halted": state.halted, "halt_source": state.halt_source,
                "stopped": state.stopped, "swept": state.swept, "not_run": state.not_run,
                "errors": state.errors}
        return Result(changed=True, failed=rung is None or state.exchange_failed,
                      msg="; ".join(notes), data=data)


def whole_fleet(contexts: dict[str, TaskContext]) -> bool:
    """Whether the batch is every execution host of the inventory (group exec, if it has one)."""
    first = next(iter(contexts.values()))
    engines = (first.vars.get("groups") or {}).get("exec")
    return not engines or set(engines) <= set(contexts)


def halt_file(ctx: TaskContext) -> str:
    """The host's halt file: inventory titan_halt_file, default {{ titan_home }}/system.halt."""
    path = ctx.vars.get("titan_halt_file")
    if path:
        return str(path)
    home = ctx.vars.get("titan_home")
    if not home:
        raise RipcordError(f"{ctx.host}: neither titan_halt_file nor titan_home is set")
    return f"{home}/system.halt"
