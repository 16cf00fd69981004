"""diagnostics: the runbooks' evidence collection (002 Phase 4 "Data Collection", 004's
system_diagnostics) from every selected host into one timestamped tar.gz on the controller.

Per host: the last lines of every service log, each service's state under its manager, disk,
memory and load, listening sockets, release versions (the link, the releases, the last known
good, each service's /health), and where they run: database activity and schema version, NATS
and JetStream information. Read-only on the hosts. Everything is redacted before it is written:
every value of a secret-looking key in each host's .env and in its inventory variables, and every
secret the run already knows, so the bundle can be handed to anyone. The bundle lands in the
state directory (ripcord.yaml's state_dir)/diagnostics, mode 600.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import re
import shlex
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ripcord import dotenv
from ripcord.errors import RipcordError, UnreachableError
from ripcord.modules import httpchannel
from ripcord.modules.base import Arg, Module, Result, TaskContext, register
from ripcord.runstate import SECRET_NAME
from ripcord.templating import REDACTED

SCHEMA_SQL = ("SELECT version() AS server, (SELECT string_agg(version::text, ',' ORDER BY version) "
              "FROM schema_migrations) AS migrations")
ACTIVITY_SQL = """SELECT pid, usename, application_name, client_addr, state, wait_event_type,
  date_trunc('second', now() - query_start) AS running_for, left(query, 200) AS query
FROM pg_stat_activity WHERE datname = current_database() ORDER BY query_start"""


@register
class Diagnostics(Module):
    """Collect every selected host's evidence into one redacted tar.gz; its path in `path`.

    Changed: never (read-only on the hosts; the bundle is written on the controller).
    Check mode: collects nothing; says it would.
    Example:
        - name: the evidence, before anything is restarted
          diagnostics:
            lines: 500
          register: bundle
    """

    name = "diagnostics"
    fleet = True
    args = {
        "lines": Arg(int, default=200, help="last lines of each service log"),
        "dir": Arg(str, help="where the bundle goes; default: the state directory's diagnostics/"),
    }

    def run_fleet(self, contexts: dict[str, TaskContext], args: dict[str, Any]
                  ) -> dict[str, Result | UnreachableError]:
        if any(c.check for c in contexts.values()):
            return {h: Result(msg="would collect diagnostics") for h in contexts}
        with ThreadPoolExecutor(max_workers=min(16, len(contexts)) or 1) as pool:
            futures = {h: pool.submit(collect, c, int(args["lines"])) for h, c in contexts.items()}
        found: dict[str, Any] = {}
        for host, future in futures.items():
            try:
                found[host] = future.result()
            except UnreachableError as exc:
                found[host] = exc
        secrets = set().union(*(c.secrets.values for c in contexts.values() if c.secrets),
                              *(f[2] for f in found.values() if isinstance(f, tuple)))
        collected = {h: f for h, f in found.items() if isinstance(f, tuple)}
        summary = [collected[h][1] for h in sorted(collected)]
        summary += [f"{h}: unreachable ({f})" for h, f in sorted(found.items()) if h not in collected]
        try:
            path = write_bundle(args.get("dir"), collected, "\n".join(summary) + "\n", secrets)
        except OSError as exc:
            return {h: Result(failed=True, msg=f"cannot write the bundle: {exc}") for h in contexts}
        results: dict[str, Result | UnreachableError] = {}
        for host, value in found.items():
            if isinstance(value, UnreachableError):
                results[host] = value
                continue
            results[host] = Result(msg=redact(value[1], secrets), data={
                "path": str(path), "summary": redact(value[1], secrets),
                "members": sorted(f"{host}/{name}" for name in value[0])})
        return results


def collect(ctx: TaskContext, lines: int) -> tuple[dict[str, str], str, set[str]]:
    """One host's files (name -> text, unredacted), its summary line, and its secret values."""
    home, linked = str(ctx.vars.get("titan_home") or ""), ""
    files: dict[str, str] = {}
    secrets = host_secrets(ctx, files)

    def shell(name: str, command: str) -> str:
        out = ctx.run(command, timeout=30)
        files[name] = f"$ {command}\n{out.stdout}{out.stderr}" + (f"(exit {out.rc})\n" if out.rc else "")
        return out.stdout

    system = shell("system.txt", "uname -a; uptime; echo; cat /proc/loadavg; echo; free -m; echo; df -hP")
    shell("sockets.txt", "ss -ltnp 2>/dev/null || netstat -ltnp 2>/dev/null")
    if home:
        q = shlex.quote(f"{home}/logs")
        logs = ctx.run(f"for f in {q}/*.log; do [ -f \"$f\" ] && echo \"@@ $f\" && "
                       f"tail -n {int(lines)} -- \"$f\"; done", timeout=60).stdout
        for part in logs.split("@@ ")[1:]:
            path, _, text = part.partition("\n")
            files[f"logs/{Path(path).name}"] = text
        linked = shell("release.txt", f"cd -- {shlex.quote(home)} && readlink current; ls -l releases; "
                                      "cat state/last_known_good.json").partition("\n")[0]
    states = service_states(ctx)
    files["services.txt"] = "".join(f"{s}: {raw}\n" for s, (_, raw) in states.items())
    health = {s: http_json(ctx, url) for s, url in (ctx.vars.get("health_urls") or {}).items()}
    files["health.json"] = json.dumps(health, indent=2, default=str) + "\n"
    services = ctx.vars.get("services") or []
    if "postgresql" in services:
        files["database.txt"] = database(ctx)
    monitor = ctx.vars.get("nats_monitor_url")
    if "nats" in services and monitor:
        for page in ("varz", "jsz?streams=true&consumers=true"):
            files[f"nats-{page.partition('?')[0]}.json"] = json.dumps(
                http_json(ctx, f"{str(monitor).rstrip('/')}/{page}"), indent=2, default=str) + "\n"
    running = sum(state == "RUNNING" for state, _ in states.values())
    errors = sum(text.count(" ERROR ") for name, text in files.items() if name.startswith("logs/"))
    load = system.split("\n\n")[1].split()[:3] if "\n\n" in system else []
    disk = max((int(w[:-1]) for w in system.split() if re.fullmatch(r"\d+%", w)), default=None)
    versions = sorted({str(h["version"]) for h in health.values() if isinstance(h, dict) and "version" in h})
    line = (f"{ctx.host}: {running}/{len(states)} services running; release "
            f"{linked.rpartition('/')[2] or '-'} (services report {', '.join(versions) or 'none'}); "
            f"load {' '.join(load) or '?'}; fullest disk {'?' if disk is None else f'{disk}%'}; "
            f"{errors} ERROR lines in the last {lines} of each log")
    return files, line, secrets


def host_secrets(ctx: TaskContext, files: dict[str, str]) -> set[str]:
    """Every secret value this host gives the run: .env values of secret-looking keys, inventory
    variables with secret-looking names, the controller's copy of the signing secret
    (titan_hmac_secret_env/_file); each registered for the run's redaction. The
    .env itself goes in as env.txt (its secret values redacted with the rest)."""
    found = {str(v) for k, v in ctx.vars.items()
             if SECRET_NAME.search(k) and isinstance(v, (str, int)) and not isinstance(v, bool) and str(v)}
    try:  # the signing secret the controller holds, where the inventory says it does
        from ripcord.fasthalt import controller_secret

        found |= {v for v in [controller_secret(ctx.vars)] if v}
    except (ImportError, RipcordError):
        pass
    env_file = ctx.vars.get("env_file")
    if env_file:
        out = ctx.run(f"cat -- {shlex.quote(str(env_file))}", timeout=15)
        if out.rc == 0:
            found |= {v for k, v in dotenv.parse(out.stdout).items() if SECRET_NAME.search(k) and v}
            files["env.txt"] = out.stdout
    if ctx.secrets is not None:
        for value in found:
            ctx.secrets.add(value)
    return found


def service_states(ctx: TaskContext) -> dict[str, tuple[str, str]]:
    from ripcord.modules.service import control_for

    try:
        control = control_for(ctx)
    except RipcordError as exc:
        return {"(service manager)": ("UNKNOWN", str(exc))}
    states = {}
    for service in ctx.vars.get("services") or []:
        try:
            status = control.status(service)
            states[service] = (status.state, f"{status.raw} {status.detail}".strip())
        except RipcordError as exc:
            states[service] = ("UNKNOWN", str(exc))
    return states


def http_json(ctx: TaskContext, url: str) -> Any:
    try:
        answer = httpchannel.request(ctx, url, timeout=3.0)
    except httpchannel.ChannelError as exc:
        return {"error": str(exc)}
    return answer.json if answer.json is not httpchannel.MISSING else {"status": answer.status,
                                                                         "content": answer.text}


def database(ctx: TaskContext) -> str:
    """The server's version, the migrations applied (schema version) and every session."""
    from ripcord.modules.data import Postgres

    def query(sql: str) -> Result:
        return Postgres().run(ctx, Postgres.with_defaults({"action": "query", "sql": sql}))

    def shown(result: Result) -> str:
        return (f"cannot query: {result.msg}" if result.failed else
                json.dumps(result.data.get("rows"), indent=2, default=str)) + "\n"

    schema = query(SCHEMA_SQL)
    if schema.failed:  # no schema_migrations table: the version alone
        schema = query("SELECT version() AS server, 'no schema_migrations table' AS migrations")
    return f"-- schema\n{shown(schema)}-- activity (pg_stat_activity)\n{shown(query(ACTIVITY_SQL))}"


def redact(text: str, secrets: set[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def write_bundle(folder: str | None, collected: dict[str, tuple], summary: str, secrets: set[str]
                 ) -> Path:
    """One tar.gz (mode 600): summary.txt, then <host>/<file> for every host; all redacted."""
    from ripcord.config import value

    where = Path(folder) if folder else Path(value("state_dir")) / "diagnostics"
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = where / f"diagnostics-{stamp}.tar.gz"
    n = 1
    while path.exists():
        n += 1
        path = where / f"diagnostics-{stamp}-{n}.tar.gz"
    members = {"summary.txt": summary}
    for host, (files, _, _) in sorted(collected.items()):
        members.update({f"{host}/{name}": text for name, text in sorted(files.items())})
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, text in members.items():
            data = redact(text, secrets).encode()
            info = tarfile.TarInfo(f"{path.name.removesuffix('.tar.gz')}/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(data))
    return path
