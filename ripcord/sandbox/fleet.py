"""Bring the sandbox fleet up and down, and say how it is.

`up` is idempotent and recovers from a crash (stale pid files, orphaned processes, a
half-started fleet); `down` stops every process the fleet started and leaves no port
listening. One "control" supervisord plays the data centre: it runs each host's sshd and
supervisord, and the outside exchange; each host's supervisord runs that host's services.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
import xmlrpc.client
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ripcord.errors import SandboxError
from ripcord.paths import checkout
from ripcord.sandbox import procs, provision, render
from ripcord.sandbox.health import probe_health, ssh_banner
from ripcord.sandbox.plan import DEFAULT_BASE_PORT, Plan, build_plan, default_root, login_user, state_base
from ripcord.sandbox.runtime import ensure_runtime

DEFAULT_HOSTS = 4  # db-1, core-1, exec-1, exec-2
STREAM, CONSUMER = "TITAN_EXECUTION", "execution_group"

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def default_inventory(root: Path) -> Path:
    """The checkout's inventory/sandbox.yml; installed (no checkout), the fleet directory's
    inventory.yml: never a file inside the installed package."""
    home = checkout()
    return home / "inventory" / "sandbox.yml" if home else root / "inventory.yml"


class Fleet:
    """One sandbox fleet, rooted in a directory; its settings persist in root/fleet.json."""

    def __init__(self, root: Path | None = None, *, base_port: int | None = None,
                 hosts: int | None = None, inventory: Path | None = None, say: Say = _quiet):
        self.root = Path(root or default_root()).resolve()
        self.say = say
        saved = self._saved()
        if saved and base_port and base_port != saved["base_port"]:
            raise SandboxError(
                f"the sandbox in {self.root} uses base port {saved['base_port']}, not {base_port}",
                hint="run `invoke sandbox.down --purge` first to move it")
        self.base_port = base_port or (saved or {}).get("base_port") or DEFAULT_BASE_PORT
        self.hosts = hosts or (saved or {}).get("hosts") or DEFAULT_HOSTS
        if self.hosts < 3:
            raise SandboxError(f"a fleet needs at least 3 hosts (db, core, exec), not {self.hosts}")
        # This checkout's inventory, not the one of whichever checkout brought the fleet up:
        # a second checkout (or a moved one) gets its own inventory/sandbox.yml from `up`.
        self.inventory = Path(inventory or default_inventory(self.root)).resolve()
        self.user = login_user()
        self.plan: Plan = build_plan(self.root, self.base_port, self.hosts - 2)
        self.runtime = state_base() / "runtime" / "venv"

    # --- state ------------------------------------------------------------------------

    def _saved(self) -> dict | None:
        try:
            return json.loads((self.root / "fleet.json").read_text())
        except (OSError, ValueError):
            return None

    def _save(self) -> None:
        state = {**self._wanted_state(), "inventories": self._inventories()}
        provision.write(self.plan.state_file, json.dumps(state, indent=2) + "\n")

    def _state_matches(self) -> bool:
        saved = self._saved() or {}
        return all(saved.get(key) == value for key, value in self._wanted_state().items())

    def _written(self) -> list[str]:
        """Every inventory this fleet has written (one per checkout that ran up): down --purge
        removes them all, and no other (another fleet's may sit in this checkout)."""
        saved = self._saved() or {}
        return saved.get("inventories") or ([saved["inventory"]] if saved.get("inventory") else [])

    def _inventories(self) -> list[str]:
        return [p for p in self._written() if p != str(self.inventory)] + [str(self.inventory)]

    def control_pid(self) -> int | None:
        return procs.pid_from_file(self.plan.control_pidfile)

    def running(self) -> bool:
        return self.control_pid() is not None and self.plan.control_socket.exists()

    # --- up -----------------------------------------------------------------------------

    def up(self, timeout: float | None = None) -> dict:
        """Bring every host and service up and healthy; a no-op on a healthy running fleet."""
        started = time.monotonic()
        if self.running() and self._state_matches() and not self.unhealthy():
            self._write_inventory()  # this checkout's, and a newer ripcord may generate more
            self._save()
            self.say(f"sandbox already up and healthy; inventory written to {self.inventory}")
            return self.status()
        if not self.running():
            self._recover_crashed()
            self._check_ports_free(self.plan.ports())
        else:
            new_ports = [p for p in self.plan.ports() if not procs.listening(p)]
            self._check_ports_free(new_ports)
        with provision.machine_lock():  # the users and the runtime are the machine's, not a fleet's
            provision.ensure_login_user(self.user)
            provision.ensure_become_user(self.user)
            ensure_runtime(self.runtime, log=self.say)
        self.say(f"provisioning {len(self.plan.hosts)} hosts in {self.root}")
        secrets = provision.provision(self.plan, self.user, self.runtime)
        self._start_control()
        self._seed_database(secrets, timeout=60)
        self._backup_database()
        self._ensure_stream(timeout=30)
        self._write_inventory()
        self._save()
        self._wait_healthy(timeout or 60 + 1.5 * len(self.plan.hosts))
        self.say(f"sandbox up in {time.monotonic() - started:.1f}s")
        return self.status()

    def _wanted_state(self) -> dict:
        return {"base_port": self.base_port, "hosts": self.hosts, "user": self.user}

    def _recover_crashed(self) -> None:
        """Orphans of a crashed fleet (control supervisord gone) hold ports: stop them."""
        leftovers = procs.fleet_procs(self.root)
        if leftovers:
            self.say(f"recovering from an earlier crash: stopping {len(leftovers)} stale processes")
            procs.terminate(leftovers)
        for stale in (self.plan.control_socket, self.plan.control_pidfile):
            stale.unlink(missing_ok=True)

    def _check_ports_free(self, ports: list[int]) -> None:
        busy = [p for p in ports if procs.port_in_use(p)]
        if busy:
            raise SandboxError(
                f"port{'s' if len(busy) > 1 else ''} {', '.join(map(str, busy[:5]))} on 127.0.0.1 "
                f"already in use, so the sandbox cannot use ports {self.base_port}-{max(ports)}",
                hint="free them, or choose another range: invoke sandbox.up --base-port N "
                     "(or RIPCORD_SANDBOX_BASE_PORT)")

    def _start_control(self) -> None:
        supervisord = self.runtime / "bin" / "supervisord"
        if self.running():
            self._supervisorctl(self.plan.control_conf, "update")
            self._supervisorctl(self.plan.control_conf, "start", "all", check=False)
            # New hosts bring new exchange API keys: the exchange reloads keys.json on HUP.
            self._supervisorctl(self.plan.control_conf, "signal", "HUP", "exchange", check=False)
            for host in self.plan.hosts:  # a half-started host: start what is not running
                if host.supervisor_socket.exists():
                    self._supervisorctl(host.supervisor_conf, "start", "all", check=False)
            return
        self.say("starting hosts (sshd + supervisord each) and the exchange")
        provision.run([str(supervisord), "-c", str(self.plan.control_conf)])
        deadline = time.monotonic() + 10
        while not self.running():
            if time.monotonic() > deadline:
                raise SandboxError("the control supervisord did not start",
                                   hint=f"see {self.plan.control_dir / 'supervisord.log'}")
            time.sleep(0.05)

    def _supervisorctl(self, conf: Path, *args: str, check: bool = True) -> str:
        ctl = self.runtime / "bin" / "supervisorctl"
        result = subprocess.run([str(ctl), "-c", str(conf), *args], capture_output=True,
                                text=True, timeout=120)
        if check and result.returncode != 0:
            raise SandboxError(f"supervisorctl {' '.join(args)} failed: {result.stdout.strip()}")
        return result.stdout

    def _psql(self, sql: str, database: str = "postgres", *, single_transaction: bool = False) -> str:
        """Run SQL as the database superuser over db-1's unix socket (SQL on stdin, not argv)."""
        owner = provision.Owner(self.user)
        psql = render.postgres_bin() / "psql"
        argv = [str(psql) if psql.exists() else "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-tA",
                "-h", str(self.plan.db.run), "-p", str(self.plan.postgres_port), "-d", database]
        if single_transaction:
            argv.append("--single-transaction")
        return provision.run(owner.as_user(argv), stdin=sql)

    def _seed_database(self, secrets: dict[str, str], timeout: float) -> None:
        """Role titan, database titan, then schema (every time) and seed (only once) in one transaction."""
        schema = (provision.STANDINS / "schema.sql").read_text()
        seed = (provision.STANDINS / "seed.sql").read_text()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._psql("SELECT 1;")
                break
            except SandboxError:
                if time.monotonic() > deadline:
                    log = self.plan.db.titan_home / "logs" / "postgresql.log"
                    raise SandboxError("PostgreSQL did not come up on db-1",
                                       hint=f"see {log}") from None
                time.sleep(0.2)
        password = secrets["db_password"]  # hex: safe inside a SQL literal
        self._psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'titan') THEN "
                   f"CREATE ROLE titan LOGIN PASSWORD '{password}'; END IF; END $$;")
        if self._psql("SELECT 1 FROM pg_database WHERE datname = 'titan';").strip() != "1":
            self._psql("CREATE DATABASE titan OWNER titan;")
        # schema.sql is idempotent: applied again, a database an older checkout made gets what is new
        fresh = self._psql("SELECT to_regclass('public.positions') IS NULL;", "titan").strip() == "t"
        if fresh:
            self.say("creating and seeding the titan database")
        self._psql("SET ROLE titan;\n" + schema + ("\n" + seed if fresh else ""), "titan",
                   single_transaction=True)

    def _backup_database(self, max_age_s: float = 3600) -> None:
        """A fresh backup in db-1's titan_home/backups, as the nightly job leaves one on a real db
        host and as `invoke backup-db` makes it (custom dump and manifest: ripcord/modules/backup.py),
        so a healthy fleet passes the backups check; none when one is younger than an hour."""
        from ripcord.modules import backup

        backups = self.plan.db.titan_home / "backups"
        made = sorted(backups.glob("titan-*" + backup.MANIFEST), key=lambda p: p.stat().st_mtime)
        if made and time.time() - made[-1].stat().st_mtime < max_age_s:
            return
        name = time.strftime("titan-%Y%m%dT%H%M%SZ", time.gmtime())
        target, owner = backups / (name + backup.DUMP), provision.Owner(self.user)
        pg_dump, pg_restore = (render.postgres_bin() / tool for tool in ("pg_dump", "pg_restore"))
        argv = [str(pg_dump) if pg_dump.exists() else "pg_dump", "--format=custom", "-h",
                str(self.plan.db.run), "-p", str(self.plan.postgres_port), "-d", "titan", "-f", str(target)]
        provision.run(owner.as_user(argv))
        target.chmod(0o600)
        script = backup.manifest_script(str(target), str(pg_restore) if pg_restore.exists() else "pg_restore")
        version, tables = backup.parse_counts(provision.run(owner.as_user(["sh", "-c", script])))
        data = target.read_bytes()
        record = backup.manifest(name, "titan", len(data), hashlib.sha256(data).hexdigest(), version, tables)
        provision.write(backups / (name + backup.MANIFEST), json.dumps(record, indent=2) + "\n",
                        mode=0o600, owner=owner)

    def _ensure_stream(self, timeout: float) -> None:
        """The execution stream and its durable consumer, as the engine expects them."""
        asyncio.run(_ensure_stream(self.plan.nats_url, timeout))

    def _write_inventory(self) -> None:
        self.inventory.parent.mkdir(parents=True, exist_ok=True)
        provision.write(self.inventory, render.inventory(self.plan, self.user))

    def unhealthy(self) -> list[str]:
        """What is not up yet: sshd banners, health endpoints, the exchange."""
        checks: list[tuple[str, Callable[[], bool]]] = []
        for host in self.plan.hosts:
            checks.append((f"{host.name} sshd", lambda h=host: ssh_banner(h.ssh_port)))
            for service in host.services:
                if service.health_url:
                    checks.append((f"{host.name} {service.name}",
                                   lambda u=service.health_url: probe_health(u) == "ok"))
        checks.append(("exchange", lambda: probe_health(self.plan.exchange_url + "/health") == "ok"))
        with ThreadPoolExecutor(max_workers=32) as pool:
            results = list(pool.map(lambda c: c[1](), checks))
        return [name for (name, _), ok in zip(checks, results, strict=True) if not ok]

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            pending = self.unhealthy()
            if not pending:
                return
            if time.monotonic() > deadline:
                shown = ", ".join(pending[:6]) + (f" and {len(pending) - 6} more" if len(pending) > 6 else "")
                raise SandboxError(f"not healthy after {timeout:.0f}s: {shown}",
                                   hint="see the service logs in each host's titan_home/logs "
                                        f"and {self.plan.control_dir / 'logs'}")
            time.sleep(0.25)

    # --- down ---------------------------------------------------------------------------

    def down(self, purge: bool = False) -> None:
        """Stop everything the fleet started; with purge, also delete what it made."""
        tracked = procs.fleet_procs(self.root, (self.control_pid() or 0,))
        if self.running():
            self.say("stopping the sandbox fleet")
            try:
                self._control_rpc().supervisor.shutdown()
            except (OSError, xmlrpc.client.Fault):
                pass
            deadline = time.monotonic() + 60
            while self.control_pid() and time.monotonic() < deadline:
                time.sleep(0.1)
        killed = procs.terminate([p for p in tracked if procs.alive(p)])
        if killed:
            self.say(f"killed {len(killed)} processes that did not stop in time")
        busy = [p for p in self.plan.ports() if procs.port_in_use(p)]
        if busy:
            raise SandboxError(f"ports still in use after down: {', '.join(map(str, busy[:5]))}",
                               hint="something outside the sandbox listens there")
        if purge:
            inventories = self._written()
            provision.remove_tree(self.root)
            for inventory in map(Path, inventories):
                if inventory.exists() and "Generated by `invoke sandbox.up`" in inventory.read_text():
                    inventory.unlink()
            self.say(f"removed {self.root}")

    # --- status -------------------------------------------------------------------------

    def _control_rpc(self) -> xmlrpc.client.ServerProxy:
        return _unix_rpc(self.plan.control_socket)

    def status(self) -> dict:
        """Everything an operator (or a test) needs to reach each piece of the fleet."""
        running = self.running()
        programs: dict[str, str] = {}
        if running:
            try:
                programs = {p["name"]: p["statename"]
                            for p in self._control_rpc().supervisor.getAllProcessInfo()}
            except (OSError, xmlrpc.client.Fault):
                pass
        with ThreadPoolExecutor(max_workers=32) as pool:
            states = pool.map(lambda h: self._host_status(h, programs, running), self.plan.hosts)
            hosts = {host.name: state for host, state in zip(self.plan.hosts, states, strict=True)}
        plan = self.plan
        return {
            "running": running, "root": str(self.root), "base_port": self.base_port,
            "inventory": str(self.inventory), "known_hosts": str(plan.known_hosts),
            "ssh_user": self.user, "ssh_key": str(plan.client_key),
            "nats_url": plan.nats_url,
            "nats_monitor_url": f"http://127.0.0.1:{plan.nats_monitor_port}",
            "postgres_dsn": plan.postgres_dsn, "redis_url": plan.redis_url,
            "exchange_url": plan.exchange_url,
            "exchange": {"state": programs.get("exchange", "STOPPED"),
                         "health": probe_health(plan.exchange_url + "/health") if running else None},
            "hosts": hosts,
        }

    def _host_status(self, host, programs: dict[str, str], running: bool) -> dict:
        states: dict[str, str] = {}
        if running and host.supervisor_socket.exists():
            try:
                states = {p["name"]: p["statename"]
                          for p in _unix_rpc(host.supervisor_socket).supervisor.getAllProcessInfo()}
            except (OSError, xmlrpc.client.Fault):
                pass
        services = {}
        for service in host.services:
            health = None
            if running and service.health_url:
                health = _fetch_json(service.health_url)
            services[service.name] = {"state": states.get(service.name, "STOPPED"),
                                      "health_url": service.health_url, "health": health}
        return {"role": host.role, "ssh_port": host.ssh_port, "titan_home": str(host.titan_home),
                "sshd": programs.get(f"sshd-{host.name}", "STOPPED"),
                "supervisord": programs.get(f"host-{host.name}", "STOPPED"),
                "halted": host.halt_file.exists() if running else None,
                "services": services}


def _unix_rpc(socket_path: Path) -> xmlrpc.client.ServerProxy:
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{socket_path}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def _fetch_json(url: str) -> dict | None:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


async def _ensure_stream(url: str, timeout: float) -> None:
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType
    from nats.js.errors import NotFoundError

    deadline = time.monotonic() + timeout
    while True:
        try:
            nc = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0,
                                    allow_reconnect=False)
            break
        except Exception:  # noqa: BLE001 - the bus is still starting
            if time.monotonic() > deadline:
                raise SandboxError(f"NATS did not come up at {url}") from None
            await asyncio.sleep(0.2)
    try:
        js = nc.jetstream()
        while True:
            try:
                try:
                    await js.stream_info(STREAM)
                except NotFoundError:
                    await js.add_stream(name=STREAM, subjects=["titan.exec.>"],
                                        storage=StorageType.FILE, max_age=3600)
                try:
                    await js.consumer_info(STREAM, CONSUMER)
                except NotFoundError:
                    await js.add_consumer(STREAM, ConsumerConfig(
                        durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT,
                        deliver_policy=DeliverPolicy.ALL))
                return
            except NotFoundError:
                raise
            except Exception:  # noqa: BLE001 - JetStream may not be ready right after start
                if time.monotonic() > deadline:
                    raise SandboxError("JetStream did not become ready on db-1") from None
                await asyncio.sleep(0.2)
    finally:
        await nc.close()
