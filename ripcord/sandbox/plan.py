"""The sandbox fleet as data: hosts, roles, services, ports and paths.

Everything here is computed from (root, base_port, exec host count), with no I/O, so the
same plan drives config rendering, start-up, health checks, status and tear-down.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_BASE_PORT = 24000
HOST_PORT_BLOCK = 10  # ports reserved per host: ssh + up to 9 service health ports
FIRST_HOST_OFFSET = 10  # base+0..9 are the shared servers below
MAX_EXEC_HOSTS = 200
SANDBOX_USER = "ripcord"
STRATEGIES = ("scavenger", "hunter", "sentinel")


@dataclass(frozen=True)
class Service:
    """One supervisord program on a sandbox host."""

    name: str
    script: str | None = None  # stand-in script in the release dir; None for real servers
    args: tuple[str, ...] = ()
    port: int | None = None  # the HTTP health port of a stand-in service

    @property
    def env_port_key(self) -> str:
        """The .env key that tells a stand-in which port to serve health on."""
        return self.name.upper().replace("-", "_") + "_PORT"

    @property
    def health_url(self) -> str | None:
        return f"http://127.0.0.1:{self.port}/health" if self.port else None


@dataclass(frozen=True)
class Host:
    name: str
    role: str  # db | core | exec
    ssh_port: int
    root: Path
    services: tuple[Service, ...]

    @property
    def titan_home(self) -> Path:
        return self.root / "titan"

    @property
    def etc(self) -> Path:
        """Root-owned host config: sshd, host key, authorized_keys, supervisord.conf."""
        return self.root / "etc"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def run(self) -> Path:
        """Sockets and pid files, owned by the login user."""
        return self.root / "run"

    @property
    def var(self) -> Path:
        """Server data (PostgreSQL, Redis, JetStream), owned by the login user."""
        return self.root / "var"

    @property
    def supervisor_conf(self) -> Path:
        return self.etc / "supervisord.conf"

    @property
    def supervisor_socket(self) -> Path:
        return self.run / "supervisor.sock"

    @property
    def halt_file(self) -> Path:
        return self.titan_home / "system.halt"

    def service(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(f"{self.name} runs no service {name!r}")


@dataclass(frozen=True)
class Plan:
    """The whole fleet: shared servers on db-1, the outside exchange, and the hosts."""

    root: Path
    base_port: int
    exec_hosts: int
    hosts: tuple[Host, ...] = field(default=())

    @property
    def exchange_port(self) -> int:
        return self.base_port

    @property
    def nats_port(self) -> int:
        return self.base_port + 1

    @property
    def nats_monitor_port(self) -> int:
        return self.base_port + 2

    @property
    def postgres_port(self) -> int:
        return self.base_port + 3

    @property
    def redis_port(self) -> int:
        return self.base_port + 4

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def exchange_url(self) -> str:
        return f"http://127.0.0.1:{self.exchange_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def postgres_dsn(self) -> str:
        """No password: it lives only in the hosts' .env (TITAN_DB_PASSWORD)."""
        return f"postgresql://titan@127.0.0.1:{self.postgres_port}/titan"

    @property
    def control_dir(self) -> Path:
        """The 'data centre': the supervisord that runs every host's sshd and supervisord."""
        return self.root / "control"

    @property
    def control_conf(self) -> Path:
        return self.control_dir / "supervisord.conf"

    @property
    def control_socket(self) -> Path:
        return self.control_dir / "supervisor.sock"

    @property
    def control_pidfile(self) -> Path:
        return self.control_dir / "supervisord.pid"

    @property
    def exchange_home(self) -> Path:
        return self.root / "exchange"

    @property
    def client_key(self) -> Path:
        return self.root / "keys" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def state_file(self) -> Path:
        return self.root / "fleet.json"

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no sandbox host {name!r}")

    def by_role(self, role: str) -> list[Host]:
        return [h for h in self.hosts if h.role == role]

    @property
    def db(self) -> Host:
        return self.by_role("db")[0]

    def ports(self) -> list[int]:
        """Every port the fleet listens on, for the free-port check and the down check."""
        ports = [self.exchange_port, self.nats_port, self.nats_monitor_port,
                 self.postgres_port, self.redis_port]
        for host in self.hosts:
            ports.append(host.ssh_port)
            ports.extend(s.port for s in host.services if s.port)
        return ports


def _host(name: str, role: str, index: int, base_port: int, root: Path,
          services: list[tuple[str, str | None, tuple[str, ...]]]) -> Host:
    first = base_port + FIRST_HOST_OFFSET + index * HOST_PORT_BLOCK
    built = []
    for offset, (svc_name, script, args) in enumerate(services, start=1):
        built.append(Service(svc_name, script, args, first + offset if script else None))
    return Host(name, role, first, root / "hosts" / name, tuple(built))


def build_plan(root: Path, base_port: int = DEFAULT_BASE_PORT, exec_hosts: int = 2) -> Plan:
    """db-1, core-1 and exec-1..N, each with its services and its block of ports."""
    if not 1 <= exec_hosts <= MAX_EXEC_HOSTS:
        raise ValueError(f"exec hosts must be between 1 and {MAX_EXEC_HOSTS}, not {exec_hosts}")
    last_port = base_port + FIRST_HOST_OFFSET + (exec_hosts + 2) * HOST_PORT_BLOCK
    if base_port < 1024 or last_port > 65535:
        raise ValueError(f"base port {base_port} leaves no room for {exec_hosts} exec hosts")
    db = [("postgresql", None, ()), ("redis", None, ()), ("nats", None, ())]
    core = [("titan-brain", "brain.py", ()), ("titan-console", "console.py", ()),
            ("titan-market-data", "market_data.py", ())]
    execution = [("titan-execution", "execution.py", ())]
    execution += [(f"titan-{s}", "strategy.py", (s,)) for s in STRATEGIES]
    hosts = [_host("db-1", "db", 0, base_port, root, db),
             _host("core-1", "core", 1, base_port, root, core)]
    hosts += [_host(f"exec-{i}", "exec", i + 1, base_port, root, execution)
              for i in range(1, exec_hosts + 1)]
    return Plan(root, base_port, exec_hosts, tuple(hosts))


def state_base() -> Path:
    """Where sandbox fleets, the journal and approvals live: config's state_dir (ripcord.yaml,
    RIPCORD_STATE_DIR), by default /var/lib/ripcord as root, else $XDG_STATE_HOME/ripcord."""
    from ripcord.config import value

    return Path(value("state_dir"))


def default_root(name: str = "sandbox") -> Path:
    return Path(os.environ.get("RIPCORD_SANDBOX_DIR") or state_base() / name)


def login_user() -> str:
    """Hosts log in as a dedicated unprivileged user when run as root, else as the caller."""
    if os.geteuid() == 0:
        return os.environ.get("RIPCORD_SANDBOX_USER", SANDBOX_USER)
    return getpass.getuser()
