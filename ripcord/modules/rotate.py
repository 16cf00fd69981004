"""rotate: replace one of the fleet's secrets on every host, prove each service runs with the new
one, or put the old one back everywhere (docs/runbook.md#rotate).

A secret lives in each host's .env and is read by some services at start (inventory
`secret_readers`: key -> services), so a rotation is: a new value, written by the env module
(mode 600, the previous file kept), the readers restarted host by host in dependency order, and
proof that each one runs with the new value: the fingerprint in its /health (a labelled sha256,
never the value), a database login with the new password, an exchange call with the new key.

Each secret keeps the fleet working while hosts switch one by one:
- hmac: the engines accept TITAN_HMAC_SECRET_PREVIOUS as well, so the old secret is kept there
  until every engine runs the new one; then it is removed (and the engines restarted again), so
  a command signed with the old secret is rejected.
- db: PostgreSQL holds one password per role, and checks it only at login: ALTER ROLE first (sent
  as a SCRAM verifier, so the password is in no statement the server could log), then the .env
  and a restart host by host; a running service keeps its session meanwhile.
- exchange: each host's key; a new key is created beside it (an account may hold several), and
  the old keys are revoked only once every host runs, and has been verified with, its new one.

Any failure before the end (a host unreachable, a service that does not come back healthy on the
new secret) puts the previous values back on every host touched, restarts their readers and
verifies them, and says which host failed. Every value is registered with the run's secrets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import shlex
from typing import Any

from ripcord import dotenv
from ripcord.errors import RipcordError, UnreachableError
from ripcord.modules.base import Arg, Module, Result, TaskContext, register

SECRETS = {"hmac": "TITAN_HMAC_SECRET", "db": "TITAN_DB_PASSWORD", "exchange": "EXCHANGE_API_KEY"}
PREVIOUS = "TITAN_HMAC_SECRET_PREVIOUS"
LABEL = "titan-secret-fingerprint"  # as sandbox/titan/common.py's fingerprint()
DB = "postgresql"
KEYS_API = "/api/v1/apiKeys"


def fingerprint(key: str, value: str) -> str:
    """What a service's /health shows of a secret it read: never the value."""
    return hashlib.sha256(f"{LABEL}\0{key}\0{value}".encode()).hexdigest()[:12]


def key_id(key: str) -> str:
    """How the exchange names an API key (sandbox/titan/exchange.py key_id)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores (RFC 7677), made here as psql's \\password
    does: ALTER ROLE then carries no password the server could write to its log."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}$"
            f"{b64(hashlib.sha256(client).digest()).decode()}:{b64(server).decode()}")


class Failed(RipcordError):
    """A step of the rotation failed on `host`."""

    def __init__(self, host: str, message: str, unreachable: bool = False):
        super().__init__(f"{host}: {message}")
        self.host, self.unreachable = host, unreachable


@register
class Rotate(Module):
    """A new secret on every host of the batch, its readers restarted and verified; or none.

    Changed: every host whose .env got the new secret (and whose readers restarted); nothing
    when it failed and the previous values were put back (the task fails, naming the host).
    Check mode: says per host what it would write and restart; writes and restarts nothing.
    Example:
        - name: rotate the engines' HMAC secret
          rotate:
            secret: hmac
            timeout: 60
    """

    name = "rotate"
    fleet = True
    ssh_optional = True  # an unreachable host is named, and nothing is rotated
    args = {
        "secret": Arg(str, required=True, choices=tuple(SECRETS)),
        "readers": Arg(dict, help="key -> the services that read it; default: inventory secret_readers"),
        "topology_file": Arg(str, help="default: inventory/topology.yml"),
        "timeout": Arg((int, float), default=60, help="seconds for each restarted service"),
    }

    def run_fleet(self, contexts: dict[str, TaskContext], args: dict[str, Any]
                  ) -> dict[str, Result | UnreachableError]:
        down = sorted(h for h, ctx in contexts.items() if ctx.conn is None)
        if down:
            msg = (f"nothing rotated: {', '.join(down)} cannot be reached over SSH, and every host "
                   "holding the secret must switch")
            return {h: Result(failed=True, msg=msg) for h in contexts}
        return Rotation(contexts, args).run()


class Rotation:
    def __init__(self, contexts: dict[str, TaskContext], args: dict[str, Any]):
        from ripcord.topology import find_topology, load_cached

        self.contexts, self.kind, self.timeout = contexts, args["secret"], float(args["timeout"])
        self.key = SECRETS[self.kind]
        first = next(iter(contexts.values()))
        readers = args.get("readers") or first.vars.get("secret_readers")
        if not isinstance(readers, dict) or not isinstance(readers.get(self.key), list):
            raise RipcordError(f"no readers of {self.key}: set inventory secret_readers "
                               f"({self.key}: [services that read it])")
        self.topology = load_cached(find_topology(args.get("topology_file")))
        wanted = set(readers[self.key])
        self.readers = {h: self.topology.start_order(
            [s for s in ctx.vars.get("services") or [] if s in wanted and s in self.topology])
            for h, ctx in contexts.items()}
        self.before = {h: self.read_env(h) for h in contexts}  # every value registered
        holders = [h for h in contexts if self.before[h].get(self.key)]
        tier = {s: i for i, names in enumerate(self.topology.tiers()) for s in names}
        # hosts with nothing to restart first, then by their readers' place in the start order
        self.hosts = sorted(holders, key=lambda h: (min((tier[s] + 1 for s in self.readers[h]),
                                                        default=0), h))
        missing = [h for h in contexts if self.readers[h] and h not in holders]
        if missing:
            raise RipcordError(f"{self.key} is not set in the .env of {', '.join(missing)}, whose "
                               "services read it")
        self.touched: list[str] = []  # hosts whose .env holds new values, in order
        self.created: dict[str, str] = {}  # exchange: host -> the new key
        self.role_changed = False
        self.old_copy: str | None = None  # hmac: the controller's secret file as it was

    # --- the steps -------------------------------------------------------------------------

    def run(self) -> dict[str, Result | UnreachableError]:
        if not self.hosts:
            return {h: Result(msg=f"{self.key} is set on no host") for h in self.contexts}
        if any(ctx.check for ctx in self.contexts.values()):
            return {h: Result(changed=h in self.hosts, msg=self.would(h)) for h in self.contexts}
        old_prints = {h: fingerprint(self.key, self.before[h][self.key]) for h in self.hosts}
        try:
            {"hmac": self.hmac, "db": self.db, "exchange": self.exchange}[self.kind]()
        except Failed as exc:
            return self.failed(exc)
        return {h: Result(changed=h in self.hosts, data={"fingerprint": self.print_now(h)},
                          msg=(f"{self.key} {old_prints[h]} -> {self.print_now(h)}"
                               + (f"; restarted {', '.join(self.readers[h])}" if self.readers[h]
                                  else "") if h in self.hosts else f"{self.key} not set here"))
                for h in self.contexts}

    def would(self, host: str) -> str:
        if host not in self.hosts:
            return f"{self.key} is not set here"
        restart = self.readers[host]
        return (f"would write a new {self.key} to {self.env_file(host)}"
                + (f" and restart {', '.join(restart)}" if restart else " (no service here reads it)"))

    def hmac(self) -> None:
        values = {self.before[h][self.key] for h in self.hosts}
        if len(values) > 1:
            raise Failed(self.hosts[0], "the hosts hold different HMAC secrets (fingerprints "
                         + ", ".join(sorted({fingerprint(self.key, v) for v in values}))
                         + "): the fleet is split already; nothing was changed")
        old, new = values.pop(), self.new_secret(32)
        for host in self.hosts:  # every engine accepts both while the fleet switches
            self.switch(host, {self.key: new, PREVIOUS: old})
        self.controller_copy(new)  # ripcord signs with the new one from here on
        for host in self.hosts:  # then the old one is dropped everywhere
            self.switch(host, {PREVIOUS: None})

    def controller_copy(self, value: str) -> None:
        """The controller's own copy (inventory titan_hmac_secret_file), which ripcord signs
        with before any host's: replaced whole (0600, a mktemp file renamed over it), so the
        kill switch never signs with a retired secret."""
        import os
        import tempfile

        path = next(iter(self.contexts.values())).vars.get("titan_hmac_secret_file")
        if not path:
            return
        path = os.path.expanduser(str(path))
        if self.old_copy is None:
            try:
                with open(path) as file:
                    self.old_copy = file.readline().strip()
            except OSError as exc:
                raise Failed("controller", f"cannot read {path}: {exc.strerror}") from None
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".ripcord-")
        try:
            with os.fdopen(fd, "w") as file:
                file.write(value + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            os.unlink(tmp)
            raise Failed("controller", f"cannot write {path}: {exc.strerror}") from None

    def db(self) -> None:
        values = {self.before[h][self.key] for h in self.hosts}
        db_hosts = [h for h in self.contexts if DB in (self.contexts[h].vars.get("services") or [])]
        if len(values) > 1 or not db_hosts:
            raise Failed(self.hosts[0], "nothing was changed: " + (
                "the hosts hold different database passwords" if len(values) > 1
                else "select the database host too (it runs postgresql)"))
        self.db_host, self.old_password = db_hosts[0], values.pop()
        new = self.new_secret(24)
        self.psql(self.old_password, "SELECT 1")  # the old one works: a known start
        self.psql(self.old_password, self.alter_role(new))
        self.role_changed = True
        for host in self.hosts:  # sessions open keep working; each reader logs in anew on restart
            self.switch(host, {self.key: new})
        self.psql(new, "SELECT 1")

    def exchange(self) -> None:
        for host in self.hosts:
            old = self.before[host][self.key]
            answer = self.call(host, "POST", KEYS_API, old, {})
            new = answer.get("apiKey") if isinstance(answer, dict) else None
            if not isinstance(new, str) or not new:
                raise Failed(host, "the exchange gave no new key")
            self.register(new)
            self.created[host] = new
            self.switch(host, {self.key: new})
            self.call(host, "GET", "/api/v1/countdownCancelAll", new)  # authenticated, new key
        for host in self.hosts:  # only now: every host runs its new key
            old, new = self.before[host][self.key], self.created[host]
            self.call(host, "DELETE", f"{KEYS_API}/{key_id(old)}", new)
            self.call(host, "GET", "/api/v1/countdownCancelAll", old, expect=401)
        self.created = {}  # nothing to take back now

    # --- one host: write, restart, verify ---------------------------------------------------

    def switch(self, host: str, values: dict[str, str | None]) -> None:
        """values into host's .env (None: removed), its readers restarted and verified."""
        if host not in self.touched:
            self.touched.append(host)
        try:
            self.write(host, values)
            self.restart_and_verify(host)
        except UnreachableError as exc:
            raise Failed(host, f"unreachable ({exc})", unreachable=True) from None

    def write(self, host: str, values: dict[str, str | None]) -> None:
        from ripcord.modules.envfile import Env

        for key, value in values.items():
            args = {"path": self.env_file(host), "key": key}
            args.update({"state": "absent"} if value is None else {"value": value})
            done = Env().run(self.contexts[host], Env.with_defaults(args))
            if done.failed:
                raise Failed(host, done.msg)

    def restart_and_verify(self, host: str) -> None:
        from ripcord.modules.service import Services

        if not self.readers[host]:
            return
        done = Services().run(self.contexts[host], Services.with_defaults(
            {"state": "restarted", "names": self.readers[host], "timeout": self.timeout}))
        if done.failed:
            raise Failed(host, f"did not come back: {done.msg}")
        env = self.read_env(host)
        expect = {k: fingerprint(k, env[k]) for k in (self.key, PREVIOUS) if env.get(k)}
        for service in self.readers[host]:
            self.verify(host, service, expect)

    def verify(self, host: str, service: str, expect: dict[str, str]) -> None:
        """The service's /health shows the fingerprints of what its .env now holds (a key it
        must not hold, such as a retired previous secret, is absent)."""
        from ripcord.modules import httpchannel
        from ripcord.modules.service import _host_health_url

        url = _host_health_url(self.contexts[host], service)
        if not url:
            raise Failed(host, f"{service} has no health URL: its secret cannot be verified")
        try:
            answer = httpchannel.request(self.contexts[host], url, timeout=5)
        except httpchannel.ChannelError as exc:
            raise Failed(host, f"{service}'s health does not answer ({exc})") from None
        shown = answer.json.get("secret_fingerprints") if isinstance(answer.json, dict) else None
        if not isinstance(shown, dict):
            raise Failed(host, f"{service}'s health shows no secret_fingerprints: cannot verify")
        keys = {self.key, PREVIOUS} if self.kind == "hmac" else {self.key}
        wrong = sorted(k for k in keys if shown.get(k) != expect.get(k))
        if wrong:
            raise Failed(host, f"{service} does not run with the .env's {', '.join(wrong)}")

    # --- failure: the previous values back everywhere ---------------------------------------

    def failed(self, exc: Failed) -> dict[str, Result | UnreachableError]:
        restored, problems = [], []
        if self.role_changed:
            try:
                self.psql(self.new_password, self.alter_role(self.old_password))
            except Failed as err:
                problems.append(f"the role's password: {err}")
        for host in reversed(self.touched):
            old = {k: self.before[host].get(k) for k in (self.key, PREVIOUS)
                   if k == self.key or self.kind == "hmac"}
            try:
                self.switch(host, old)
                restored.append(host)
            except Failed as err:
                problems.append(f"{host} could not be reached: its .env may hold the new {self.key} "
                                "(compare its fingerprint once it is back; the previous file is "
                                "kept beside it)" if err.unreachable else str(err))
        if self.old_copy:
            try:
                self.controller_copy(self.old_copy)
            except Failed as err:
                problems.append(str(err))
        for host, key in self.created.items():  # never used now: revoked, through any host
            errors = []
            for via in [host, *(h for h in self.hosts if h != host)]:
                try:
                    self.call(via, "DELETE", f"{KEYS_API}/{key_id(key)}", self.before[via][self.key])
                    break
                except Failed as err:
                    errors.append(str(err))
            else:
                problems.append(f"{host}'s new key is not revoked ({'; '.join(errors)})")
        msg = (f"rotating {self.key} failed at {exc}; "
               + (f"the previous {self.key} is back on {', '.join(restored)}" if restored
                  else "nothing had been changed")
               + (f"; NOT put back: {'; '.join(problems)}" if problems else ""))
        results: dict[str, Result | UnreachableError] = {h: Result(failed=True, changed=bool(self.touched),
                                                                   msg=msg) for h in self.contexts}
        if exc.unreachable:
            results[exc.host] = UnreachableError(msg)
        return results

    # --- helpers ----------------------------------------------------------------------------

    def new_secret(self, size: int) -> str:
        value = secrets.token_hex(size)
        self.register(value)
        self.new_password = value  # db: the login that can put the old password back
        return value

    def register(self, value: str) -> None:
        for ctx in self.contexts.values():
            if ctx.secrets is not None:
                ctx.secrets.add(value)
                break

    def env_file(self, host: str) -> str:
        path = self.contexts[host].vars.get("env_file")
        if not path:
            raise Failed(host, "inventory variable env_file is not set: it names the host's .env")
        return str(path)

    def read_env(self, host: str) -> dict[str, str]:
        """The secret's keys from the host's .env (read by cat: the file never is in a command)."""
        try:
            out = self.contexts[host].run(f"cat -- {shlex.quote(self.env_file(host))}")
        except UnreachableError as exc:
            raise Failed(host, f"unreachable ({exc})", unreachable=True) from None
        if out.rc != 0:
            raise Failed(host, f"cannot read {self.env_file(host)}: {out.stderr.strip()[-200:]}")
        values = {k: v for k, v in dotenv.parse(out.stdout).items() if k in (self.key, PREVIOUS)}
        for value in values.values():
            if value:
                self.register(value)
        return values

    def print_now(self, host: str) -> str | None:
        value = self.read_env(host).get(self.key)
        return fingerprint(self.key, value) if value else None

    def alter_role(self, password: str) -> str:
        user = self.contexts[self.db_host].vars.get("postgres_user") or "titan"
        ident = '"' + str(user).replace('"', '""') + '"'
        return f"ALTER ROLE {ident} PASSWORD '{scram_verifier(password)}'"

    def psql(self, password: str, sql: str) -> None:
        """sql on the database host, logged in with `password` (read from stdin into PGPASSWORD
        by the remote shell: in no command line)."""
        ctx = self.contexts[self.db_host]
        words = ["psql", "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1",
                 "-h", ctx.vars.get("postgres_host") or "127.0.0.1",
                 "-p", ctx.vars.get("postgres_port") or 5432,
                 "-U", ctx.vars.get("postgres_user") or "titan",
                 "-d", ctx.vars.get("postgres_db") or "titan", "-f", "-"]
        command = ("IFS= read -r PGPASSWORD && export PGPASSWORD && exec "
                   + " ".join(shlex.quote(str(w)) for w in words))
        try:
            out = ctx.run(command, stdin=f"{password}\n{sql};\n")
        except UnreachableError as exc:
            raise Failed(self.db_host, f"unreachable ({exc})", unreachable=True) from None
        if out.rc != 0:
            lines = (out.stderr.strip() or f"exit {out.rc}").splitlines()
            raise Failed(self.db_host, f"psql: {lines[-1][-200:]}")

    def call(self, host: str, method: str, path: str, key: str, body: dict | None = None,
             expect: int | None = None) -> Any:
        """One exchange API call from the host, with `key` (in a header, over the SSH channel)."""
        from ripcord.modules import httpchannel

        base = str(self.contexts[host].vars.get("exchange_url") or "").rstrip("/")
        if not base:
            raise Failed(host, "inventory variable exchange_url is not set")
        data = None if body is None else json.dumps(body).encode()
        headers = {"X-API-KEY": key, **({"Content-Type": "application/json"} if data else {})}
        try:
            answer = httpchannel.request(self.contexts[host], base + path, method=method, body=data,
                                         headers=headers, timeout=5)
        except httpchannel.ChannelError as exc:
            raise Failed(host, f"the exchange does not answer ({exc})") from None
        except UnreachableError as exc:
            raise Failed(host, f"unreachable ({exc})", unreachable=True) from None
        if expect is not None:
            if answer.status != expect:
                raise Failed(host, f"{method} {path}: HTTP {answer.status}, expected {expect}")
            return None
        if answer.status >= 300:
            raise Failed(host, f"{method} {path}: HTTP {answer.status}")
        return answer.json


# --- preflight: refuse with exit 2 before anything runs ------------------------------------------

def preflight(procedure: str, inventory, pattern: str, extra_vars: dict) -> None:
    """What must hold before a rotation touches anything (InputError, exit 2, one line): a known
    secret, an inventory that says which services read it, and a --host that leaves out no host
    running one of them (the fleet would end split) nor, for db, the database host."""
    from ripcord.errors import InputError
    from ripcord.topology import find_topology, load_cached

    kind = extra_vars.get("rotate_kind", "")
    if kind not in SECRETS:
        raise InputError(f"--secret {kind!r}: say hmac, db or exchange")
    key = SECRETS[kind]
    selected = inventory.select(pattern)
    if not selected:
        raise InputError(f"--host {pattern} selects no host")
    hostvars = {h: inventory.host_vars(h) for h in inventory.select("all")}
    readers = {h: v.get("secret_readers") for h, v in hostvars.items()}
    unsaid = sorted(h for h in selected if not isinstance(readers[h], dict)
                    or not isinstance(readers[h].get(key), list))
    if unsaid:
        raise InputError(f"the inventory does not say which services read {key} on "
                         f"{', '.join(unsaid)}", hint=f"set secret_readers: {{{key}: [services]}}")
    topology = load_cached(find_topology())
    for service in {s for h in selected for s in readers[h][key]}:
        topology.require(service)
    left_out = sorted(h for h, v in hostvars.items() if h not in selected
                      and isinstance(readers[h], dict)
                      and set(readers[h].get(key) or []) & set(v.get("services") or []))
    if left_out:
        raise InputError(f"--host {pattern} leaves out {', '.join(left_out)}, whose services read "
                         f"{key}: the fleet would end split", hint="e.g. --host sandbox")
    for var, what in (("titan_hmac_secret_env", "an environment variable"),
                      ("titan_hmac_secret_keyring", "a kernel keyring key")):
        held = sorted(h for h in selected if hostvars[h].get(var))
        if kind == "hmac" and held:
            raise InputError(f"{', '.join(held)}: {var} names {what} of the controller, which a "
                             "rotation does not change: the kill switch would sign with the retired "
                             "secret", hint="rotate without it (or with a titan_hmac_secret_file, which "
                             "is updated), then store the new value there")
    if kind == "db" and not any(DB in (hostvars[h].get("services") or []) for h in selected):
        raise InputError(f"--host {pattern} selects no host that runs {DB}: its role's password "
                         "changes with the .env", hint="e.g. --host sandbox")
