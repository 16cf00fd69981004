"""release: deploy a release, or roll back to the last known good, host by host, never split.

Releases live under titan_home/releases/<version>; titan_home/current is a link to the one the
services run (the supervisor programs start from current/). A deploy switches the link host by
host in dependency order (inventory/topology.yml), restarts the host's release services, and
verifies the host (every service's /health reports the new version, the health and release
checks pass) before the next. A host that fails is rolled back at once (link back, restart,
verify), then every host switched before it, so the fleet ends on one release; the run fails
naming the host. Only when the whole fleet passes is titan_home/state/last_known_good.json
written (version, config checksums, time): `rollback` reads it and puts that release back the
same way. Knight Capital (2012) lost $440M in 45 minutes with one server of eight on old code:
`preflight` refuses a deploy, and a resume, on a fleet whose hosts of one role run different
releases, naming the hosts and versions, with exit 2 before anything changes.
"""

from __future__ import annotations

import datetime
import json
import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ripcord.errors import InputError, RipcordError, UnreachableError
from ripcord.modules import httpchannel
from ripcord.modules.base import Arg, Module, Result, TaskContext, register

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # a release: a directory name, no path
LKG = "state/last_known_good.json"  # below titan_home
ENGINE = "titan-execution"  # the service that trades: halted before its code is switched
CHECKS = "release or health"  # what a switched host must pass before the next


def release_name(text: Any, option: str = "--version") -> str:
    name = str(text or "").strip()
    if not NAME.fullmatch(name) or ".." in name:
        raise InputError(f"{option} {text!r} is not a release name",
                         hint="a directory name under titan_home/releases, e.g. 1.4.3")
    return name


def release_services(hostvars: dict) -> list[str]:
    """The services that run the release's code: inventory `release_services`, else the host's
    services that have a health URL (the databases and the bus are not in a release)."""
    if hostvars.get("release_services") is not None:
        return list(hostvars["release_services"])
    urls = hostvars.get("health_urls") or {}
    return [s for s in hostvars.get("services") or [] if s in urls]


def role_of(hostvars: dict) -> str:
    """Hosts of one role run one release: inventory titan_role or role, else its services."""
    return str(hostvars.get("titan_role") or hostvars.get("role")
               or "+".join(sorted(hostvars.get("services") or [])) or "none")


def read_host(ctx: TaskContext) -> dict[str, Any]:
    """What a host runs: the link's release, the releases present, its last known good, and the
    version each release service's /health reports (None: no answer). Read-only."""
    home = ctx.vars.get("titan_home")
    if not home:
        raise RipcordError(f"{ctx.host}: no titan_home in the inventory")
    q = shlex.quote(str(home))
    out = ctx.run(f"cd -- {q} && {{ readlink current; echo @@; ls -1 releases; echo @@; "
                  f"cat {LKG} 2>/dev/null; }}", timeout=15)
    if out.rc != 0 and "@@" not in out.stdout:
        raise RipcordError(f"{ctx.host}: cannot read {home}: {out.stderr.strip()[:200]}")
    link, listing, lkg = (out.stdout.split("@@\n") + ["", ""])[:3]
    try:
        good = json.loads(lkg) if lkg.strip() else None
    except ValueError:
        good = None
    urls = ctx.vars.get("health_urls") or {}
    health = {s: _health_version(ctx, urls[s]) for s in release_services(ctx.vars) if s in urls}
    return {"link": link.strip().rstrip("/").rpartition("/")[2] or None,
            "releases": listing.split(), "lkg": good if isinstance(good, dict) else None,
            "health": health}


def _health_version(ctx: TaskContext, url: str) -> str | None:
    try:
        answer = httpchannel.request(ctx, url, timeout=2.0)
    except httpchannel.ChannelError:
        return None
    return str(answer.json.get("version")) if isinstance(answer.json, dict) else None


def split(states: dict[str, dict], roles: dict[str, str]) -> list[str]:
    """Roles whose hosts do not all run one release, each as 'role R: host version, ...' (a
    service whose /health disagrees with its host's link is named with it)."""
    problems = []
    for role in sorted(set(roles.values())):
        hosts = sorted(h for h in states if roles[h] == role)
        seen = set()
        shown = []
        for host in hosts:
            state = states[host]
            other = sorted({f"{s} reports {v}" for s, v in state["health"].items()
                            if v is not None and v != state["link"]})
            seen |= {state["link"]} | {v for v in state["health"].values() if v is not None}
            shown.append(f"{host} {state['link'] or 'no release'}"
                         + (f" ({', '.join(other)})" if other else ""))
        if len(seen) > 1:
            problems.append(f"role {role}: {', '.join(shown)}")
    return problems


# --- the module ---------------------------------------------------------------------------------

@register
class Release(Module):
    """Deploy a release, or roll back to the last known good, host by host; never left split.

    Changed: on every host whose `current` link was switched (a failure rolls back the hosts
    switched before it, and says so).
    Check mode: changes nothing; says per host what it would switch and restart, in order.
    Example:
        - name: the new release, host by host
          release:
            action: deploy
            version: "1.4.3"
    """

    name = "release"
    fleet = True
    args = {
        "action": Arg(str, required=True, choices=("deploy", "rollback")),
        "version": Arg(str, help="deploy: the release (a directory under titan_home/releases)"),
        "topology_file": Arg(str, help="default: inventory/topology.yml"),
        "timeout": Arg((int, float), default=30, help="seconds for each service to be healthy"),
        "checks": Arg(str, default=CHECKS, help="checks each switched host must pass"),
    }

    @classmethod
    def check_combination(cls, args: dict) -> list[str]:
        if args.get("action") == "deploy" and not args.get("version"):
            return ["action deploy needs 'version'"]
        return []

    def run_fleet(self, contexts: dict[str, TaskContext], args: dict[str, Any]
                  ) -> dict[str, Result | UnreachableError]:
        from ripcord.topology import find_topology, load_cached

        topology = load_cached(find_topology(args.get("topology_file")))
        with ThreadPoolExecutor(max_workers=len(contexts) or 1) as pool:
            read = dict(zip(contexts, pool.map(lambda h: _guarded(contexts[h]), contexts), strict=True))
        states = {h: state for h, (state, _) in read.items() if state is not None}
        # asked again here, right before anything changes (and for `invoke play` of the
        # playbooks, which has no preflight): every host read, every engine halted, not split
        refused = [f"{h}: {why}" for h, (_, why) in sorted(read.items()) if why]
        if args["action"] == "deploy":
            refused += [f"split release: {p}" for p in
                        split(states, {h: role_of(contexts[h].vars) for h in states})]
        try:
            if refused:
                raise InputError("; ".join(refused) + ": nothing was changed")
            version = self._version(args, states)
        except InputError as exc:
            return {h: Result(failed=True, msg=str(exc)) for h in contexts}
        order = sorted(contexts, key=lambda h: (_rank(topology, release_services(contexts[h].vars)), h))
        if any(c.check for c in contexts.values()):
            return {h: Result(changed=states[h]["link"] != version,
                              msg=f"would switch {states[h]['link']} -> {version} and restart "
                                  f"{', '.join(release_services(contexts[h].vars)) or 'nothing'}"
                                  f" (host {order.index(h) + 1} of {len(order)})") for h in contexts}
        done: list[str] = []  # switched and verified, in order
        for host in order:
            ctx, before = contexts[host], states[host]["link"]
            if before == version and all(v == version for v in states[host]["health"].values()):
                continue  # already there, and every service runs it
            why = _switch(ctx, version, args, topology)
            if why is None:
                done.append(host)
                continue
            back = _switch(ctx, before, args, topology) if before else "no release to go back to"
            undone = {h: _switch(contexts[h], states[h]["link"], args, topology)
                      for h in reversed(done)}  # every host switched before it: never left split
            return self._failed(contexts, states, host, version, why, back, undone)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        results: dict[str, Result | UnreachableError] = {}
        for host in order:
            wrote = _write_lkg(contexts[host], version, stamp)
            switched = host in done
            msg = (f"{states[host]['link']} -> {version}, restarted and verified" if switched
                   else f"already on {version}")
            results[host] = Result(changed=True, failed=wrote is not None,
                                   msg=msg + (f"; last_known_good.json not written: {wrote}"
                                              if wrote else "; last known good"),
                                   data={"version": version, "before": states[host]["link"],
                                         "switched": switched})
        return results

    @staticmethod
    def _version(args: dict, states: dict[str, dict]) -> str:
        """The release to put in place: --version, or the last known good every host agrees on."""
        if args["action"] == "deploy":
            version = release_name(args.get("version"))
        else:
            found = {h: (s["lkg"] or {}).get("version") for h, s in states.items()}
            missing = sorted(h for h, v in found.items() if not v)
            if missing:
                raise InputError(f"no {LKG} on {', '.join(missing)}: nothing to roll back to")
            if len(set(found.values())) > 1:
                raise InputError("the hosts' last known good releases differ: "
                                 + ", ".join(f"{h} {v}" for h, v in sorted(found.items())))
            version = release_name(next(iter(found.values())), LKG)
        absent = sorted(h for h, s in states.items() if version not in s["releases"])
        if absent:
            raise InputError(f"release {version} is not on {', '.join(absent)} (no "
                             f"titan_home/releases/{version}): nothing was changed")
        return version

    @staticmethod
    def _failed(contexts, states, host, version, why, back, undone) -> dict[str, Result]:
        before = states[host]["link"]
        said = f"release {version} failed on {host}: {why}; {host} " + (
            f"rolled back to {before}" if back is None else f"NOT rolled back to {before}: {back}")
        results: dict[str, Result] = {}
        for name in contexts:
            if name == host:
                msg = said
            elif name in undone:
                msg = (f"rolled back to {states[name]['link']} after {host} failed" if undone[name] is None
                       else f"NOT rolled back to {states[name]['link']}: {undone[name]}")
            else:
                msg = f"not switched: {host} failed first"
            results[name] = Result(failed=True, changed=name == host or name in undone, msg=msg)
        return results


def _guarded(ctx: TaskContext) -> tuple[dict | None, str | None]:
    """(the host's state, why nothing may change), read at once: an engine that may be trading,
    or a host that cannot be read, refuses the run."""
    from ripcord.modules.service import may_trade

    try:
        state = read_host(ctx)
    except RipcordError as exc:
        return None, f"cannot be read ({exc})"
    engine = ENGINE in (ctx.vars.get("services") or [])
    why = may_trade(ctx, ENGINE) if engine else None
    return state, f"{why}; halt first (invoke halt)" if why else None


def _rank(topology, services: list[str]) -> int:
    """A host's place in the dependency order: the earliest tier of its release services."""
    for index, tier in enumerate(topology.tiers()):
        if set(tier) & set(services):
            return index
    return -1


def _switch(ctx: TaskContext, version: str, args: dict, topology) -> str | None:
    """Point current at releases/<version> (atomically), restart the host's release services in
    dependency order, verify; why it failed, or None."""
    home = shlex.quote(str(ctx.vars["titan_home"]))
    target = shlex.quote(f"releases/{version}")
    out = ctx.run(f"cd -- {home} && test -d {target} && ln -sfn -- {target} current.ripcord-new "
                  f"&& mv -fT -- current.ripcord-new current", timeout=15)
    if out.rc != 0:
        return f"cannot switch current to releases/{version}: {out.stderr.strip()[:200] or 'missing'}"
    services = release_services(ctx.vars)
    if services:
        why = _restart(ctx, services, args, topology)
        if why:
            return why
    wrong = {s: v for s, v in read_host(ctx)["health"].items() if v != version}
    if wrong:
        return "; ".join(f"{s} reports {v or 'nothing'}, not {version}" for s, v in wrong.items())
    return _checks(ctx, args["checks"])


def _restart(ctx: TaskContext, services: list[str], args: dict, topology) -> str | None:
    """Restart the services tier by tier in dependency order, a tier's services at once, each
    running and healthy before the next tier; why it failed, or None."""
    from ripcord.modules.service import Service

    unknown = [s for s in services if s not in topology]
    if unknown:
        return f"not in {topology.source}: {', '.join(unknown)} (its place in the order)"
    for tier in topology.tiers(services):
        with ThreadPoolExecutor(max_workers=len(tier)) as pool:
            results = list(pool.map(lambda s: Service().run(ctx, Service.with_defaults(
                {"name": s, "state": "restarted", "timeout": args["timeout"]})), tier))
        failed = [r.msg for r in results if r.failed]
        if failed:
            return "; ".join(failed)
    return None


def _checks(ctx: TaskContext, select: str) -> str | None:
    from ripcord.verify import run_checks

    report = run_checks(select, {ctx.host: ctx.conn}, {ctx.host: ctx.vars}, retry_s=5)
    failed = [r for r in report.results if r.outcome == "failed"]
    return "; ".join(f"{r.id}: {r.message}" for r in failed) or None


def _write_lkg(ctx: TaskContext, version: str, stamp: str) -> str | None:
    """titan_home/state/last_known_good.json: the release, the config files' sha256, the time."""
    from ripcord.modules.backup import write_script

    home = str(ctx.vars["titan_home"])
    configs = [str(p) for p in (ctx.vars.get("env_file"), ctx.vars.get("supervisor_config")) if p]
    out = ctx.run("sha256sum -- " + " ".join(map(shlex.quote, configs)), timeout=15) if configs else None
    sums = {}
    for line in (out.stdout.splitlines() if out else []):
        digest, _, path = line.partition("  ")
        sums[path] = digest
    record = {"version": version, "time": stamp, "host": ctx.host, "config_checksums": sums}
    out = ctx.run(f"mkdir -p -- {shlex.quote(home + '/state')} && " + write_script(f"{home}/{LKG}"),
                  stdin=json.dumps(record, indent=2) + "\n", timeout=15)
    return None if out.rc == 0 else (out.stderr.strip()[:200] or f"exit {out.rc}")


# --- preflight: read the fleet, refuse with exit 2 before anything changes ----------------------

def preflight(procedure: str, inventory, pattern: str, extra_vars: dict) -> None:
    """deploy, rollback, resume: what must hold before they run, else InputError (exit 2, one
    line, nothing changed). Every selected host is read at once over ripcord's connections."""
    from ripcord.templating import Secrets, Templar, resolve_vars
    from ripcord.verify import connect

    version = release_name(extra_vars.get("deploy_version")) if procedure == "deploy" else None
    hosts = inventory.select(pattern)
    hostvars = {h: resolve_vars(Templar(), dict(inventory.host_vars(h))) for h in inventory.select("all")}
    if procedure != "resume":  # a deploy to some hosts of a role is a split fleet by design
        roles = {role_of(hostvars[h]) for h in hosts}
        left_out = sorted(h for h in hostvars if h not in hosts and role_of(hostvars[h]) in roles)
        if left_out:
            raise InputError(f"{procedure} refused, nothing was changed: --host {pattern} leaves out "
                             f"{', '.join(left_out)}, of the same role as hosts it selects: the fleet "
                             "would run two releases (Knight Capital, 2012)",
                             hint="select every host of the role, e.g. --host exec, or the whole fleet")
    connections, unreachable = connect(inventory, hosts)
    problems = ([] if procedure == "resume" else  # resume's own steps report unreachable hosts
                [f"{h} cannot be read ({why})" for h, why in sorted(unreachable.items())])
    try:
        contexts = {h: TaskContext(h, hostvars[h], c, timeout=30, templar=Templar(), secrets=Secrets())
                    for h, c in connections.items()}

        def read(host: str) -> tuple[dict | None, str | None]:
            if procedure != "resume":
                return _guarded(contexts[host])
            try:
                return read_host(contexts[host]), None
            except RipcordError as exc:
                return None, f"cannot be read ({exc})"

        with ThreadPoolExecutor(max_workers=len(contexts) or 1) as pool:
            answers = dict(zip(contexts, pool.map(read, contexts), strict=True))
    finally:
        for conn in connections.values():
            conn.close()
    states = {h: s for h, (s, _) in answers.items() if s is not None}
    problems += [f"{h}: {why}" for h, (_, why) in sorted(answers.items()) if why]
    if version:
        absent = sorted(h for h, s in states.items() if version not in s["releases"])
        if absent:
            problems.append(f"release {version} is not on {', '.join(absent)} "
                            f"(no titan_home/releases/{version})")
    if procedure == "rollback":
        found = {h: (s["lkg"] or {}).get("version") for h, s in states.items()}
        if not all(found.values()) or len(set(found.values())) > 1:
            problems.append(f"the last known good ({LKG}) is missing or differs: "
                            + ", ".join(f"{h} {v or 'none'}" for h, v in sorted(found.items())))
    if procedure != "rollback":  # a rollback is how a split fleet is put back on one release
        problems += [f"split release (one version per role): {p}"
                     for p in split(states, {h: role_of(hostvars[h]) for h in states})]
    if problems:
        hint = {"resume": "put every host of a role on one release first (invoke rollback, or "
                          "invoke deploy --version V)",
                "rollback": "invoke deploy --version V names the release instead"}.get(
                    procedure, "halt first, name a release every host has, and roll a split fleet "
                               "back first (invoke rollback)")
        raise InputError(f"{procedure} refused, nothing was changed: " + "; ".join(problems), hint=hint)
