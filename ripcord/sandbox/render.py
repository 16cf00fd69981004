"""Config files of the sandbox fleet, rendered from the plan. Pure functions: text in, text out."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from ripcord import hostconfigs
from ripcord.paths import data_dir
from ripcord.sandbox.plan import Host, Plan, state_base

SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT"


def sshd_config(host: Host, user: str) -> str:
    """A real sshd for one host: loopback only, key auth only, one login user.

    SetEnv gives every session the host's identity and PATH, as a real host's profile would,
    without a slow shell rc.
    """
    path = f"{host.bin}:/usr/local/bin:/usr/bin:/bin"
    return f"""# ripcord sandbox host {host.name}
Port {host.ssh_port}
ListenAddress 127.0.0.1
HostKey {host.etc}/ssh_host_ed25519_key
PidFile {host.run}/sshd.pid
AuthorizedKeysFile {host.etc}/authorized_keys
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
StrictModes yes
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding yes
MaxStartups 200:30:400
MaxSessions 100
LoginGraceTime 20
Subsystem sftp internal-sftp
SetEnv TITAN_HOME={host.titan_home} RIPCORD_HOST={host.name} PATH={path}
"""


def _program(name: str, command: str, *, directory: Path, log: Path, user: str | None = None,
             environment: dict[str, str] | None = None, stopsignal: str = "TERM",
             stopwaitsecs: int = 10) -> str:
    lines = [f"[program:{name}]", f"command={command}", f"directory={directory}",
             "autostart=true", "autorestart=true", "startsecs=1", "startretries=3",
             f"stopsignal={stopsignal}", f"stopwaitsecs={stopwaitsecs}", "stopasgroup=true",
             "killasgroup=true", f"stdout_logfile={log}", "stdout_logfile_maxbytes=10MB",
             "stdout_logfile_backups=2", "redirect_stderr=true"]
    if user:
        lines.append(f"user={user}")
    if environment:
        env = ",".join(f'{k}="{v}"' for k, v in environment.items())
        lines.append(f"environment={env}")
    return "\n".join(lines) + "\n"


def _supervisord_header(socket: Path, pidfile: Path, logfile: Path, identifier: str,
                        nodaemon: bool) -> str:
    return f"""[unix_http_server]
file={socket}
chmod=0700

[supervisord]
nodaemon={'true' if nodaemon else 'false'}
logfile={logfile}
logfile_maxbytes=10MB
pidfile={pidfile}
identifier={identifier}
minfds=4096

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{socket}

"""


def host_supervisord_conf(plan: Plan, host: Host, runtime: Path) -> str:
    """The host's own supervisord: the services a real host's init system would run
    (templates/supervisord.conf.j2, with the variables the inventory gives the host)."""
    return hostconfigs.render("supervisord.conf.j2", template_vars(plan, host, runtime))


def control_supervisord_conf(plan: Plan, runtime: Path, user: str | None) -> str:
    """The 'data centre': every host's sshd and supervisord, and the outside exchange.

    sshd runs as the caller (root can then log a session in as the login user); everything
    else runs as the login user.
    """
    ctl = plan.control_dir
    user_env = _login_env(user)
    out = [_supervisord_header(plan.control_socket, plan.control_pidfile, ctl / "supervisord.log",
                               f"ripcord-sandbox-{plan.base_port}", nodaemon=False)]
    for host in plan.hosts:
        out.append(_program(f"sshd-{host.name}",
                            f"{sshd_bin()} -D -e -f {host.etc}/sshd_config",
                            directory=host.root, log=ctl / "logs" / f"sshd-{host.name}.log"))
        out.append(_program(f"host-{host.name}",
                            f"{runtime}/bin/supervisord -n -c {host.supervisor_conf}",
                            directory=host.titan_home, log=ctl / "logs" / f"host-{host.name}.log",
                            user=user, environment=user_env, stopwaitsecs=40))
    exchange = plan.exchange_home
    out.append(_program("exchange", f"{runtime}/bin/python -u {exchange}/app/exchange.py",
                        directory=exchange, log=exchange / "exchange.log", user=user,
                        environment={**user_env, "TITAN_HOME": str(exchange)}))
    return "\n".join(out)


def _login_env(user: str | None) -> dict[str, str]:
    """supervisord's user= switches uid only: give the login user its own HOME and names."""
    if not user:
        return {}
    import pwd

    return {"HOME": pwd.getpwnam(user).pw_dir, "USER": user, "LOGNAME": user}


def nats_conf(plan: Plan, host: Host) -> str:
    return hostconfigs.render("nats.conf.j2", template_vars(plan, host))


def redis_conf(plan: Plan, host: Host) -> str:
    return hostconfigs.render("redis.conf.j2", template_vars(plan, host))


def host_env(plan: Plan, host: Host, secrets: dict[str, str]) -> str:
    """titan_home/.env: the only place secrets live (mode 600, owned by the login user)."""
    return hostconfigs.render("titan.env.j2", {**template_vars(plan, host), "secrets": secrets})


def default_runtime() -> Path:
    """The hosts' runtime venv (as the fleet makes it)."""
    return state_base() / "runtime" / "venv"


def shared_vars(plan: Plan, runtime: Path | None = None) -> dict:
    """The fleet's variables the host configs' templates use: the inventory's sandbox group has them."""
    return {
        "nats_url": plan.nats_url,
        "exchange_url": plan.exchange_url,
        "brain_url": f"http://127.0.0.1:{plan.by_role('core')[0].service('titan-brain').port}",
        "redis_url": plan.redis_url,
        "postgres_host": "127.0.0.1",
        "postgres_port": plan.postgres_port,
        "postgres_db": "titan",
        "postgres_user": "titan",
        "postgres_max_connections": postgres_max_connections(plan),
        "nats_port": plan.nats_port,
        "nats_monitor_port": plan.nats_monitor_port,
        "redis_port": plan.redis_port,
        "titan_symbols": SYMBOLS,
        "titan_signal_interval_s": 3,
        "titan_runtime": str(runtime or default_runtime()),
        "postgres_bin_dir": str(postgres_bin()),
        "redis_server_bin": shutil.which("redis-server") or "/usr/bin/redis-server",
    }


def postgres_max_connections(plan: Plan) -> int:
    """PostgreSQL's connection slots, sized for the fleet: every engine's pool at its largest (4,
    sandbox/titan/ledger.py) and room for the operators' and the checks' clients (a check holds
    one at a time). The default, 100, ran out at 50 hosts: engines could not book and resume's
    database pre-check failed."""
    return max(100, 4 * len(plan.by_role("exec")) + 40)


def host_vars(plan: Plan, host: Host) -> dict:
    """One host's variables in the inventory, with the configs ripcord owns on it (ripcord_configs)."""
    configs = [("titan.env.j2", host.titan_home / ".env"),
               ("supervisord.conf.j2", host.supervisor_conf)]
    if host.role == "db":
        configs += [("nats.conf.j2", host.etc / "nats.conf"), ("redis.conf.j2", host.etc / "redis.conf")]
    return {
        "ansible_port": host.ssh_port,
        "titan_home": str(host.titan_home),
        "supervisor_config": str(host.supervisor_conf),
        "services": [s.name for s in host.services],
        "health_urls": {s.name: s.health_url for s in host.services if s.health_url},
        "titan_role": host.role,
        "host_root": str(host.root),
        "service_ports": {s.name: s.port for s in host.services if s.port},
        "titan_programs": {s.name: " ".join((s.script, *s.args)) for s in host.services if s.script},
        "ripcord_configs": [{"template": t, "dest": str(d)} for t, d in configs],
    }


def template_vars(plan: Plan, host: Host, runtime: Path | None = None) -> dict:
    """What the inventory gives host, as the templates see it."""
    return {**shared_vars(plan, runtime), **host_vars(plan, host), "inventory_hostname": host.name}


def exchange_env(plan: Plan) -> str:
    return (f"EXCHANGE_PORT={plan.exchange_port}\nEXCHANGE_RATE_LIMIT=20\n"
            "EXCHANGE_FILL_DELAY_MS=2000\n")


def supervisorctl_wrapper(host: Host, runtime: Path) -> str:
    """`supervisorctl` on the host's PATH, bound to the host's own supervisord unless the caller
    names a config itself (as ripcord's adapter does with the inventory's supervisor_config)."""
    return (f'#!/bin/sh\ncase "$1" in -c|--configuration|--configuration=*) '
            f'exec {runtime}/bin/supervisorctl "$@";; esac\n'
            f'exec {runtime}/bin/supervisorctl -c {host.supervisor_conf} "$@"\n')


def inventory(plan: Plan, user: str, runtime: Path | None = None) -> str:
    """inventory/sandbox.yml in Ansible's YAML format; no secret in it."""
    groups: dict[str, dict] = {}
    for host in plan.hosts:
        groups.setdefault(host.role, {"hosts": {}})["hosts"][host.name] = host_vars(plan, host)
    sandbox_vars = {
        "ansible_host": "127.0.0.1",
        "ansible_user": user,
        "ansible_ssh_private_key_file": str(plan.client_key),
        "ripcord_known_hosts": str(plan.known_hosts),
        "service_manager": "supervisor",
        **shared_vars(plan, runtime),
        "env_file": "{{ titan_home }}/.env",
        # The sandbox's hosts share this machine's cores and disk, so load and disk use are the
        # whole machine's (a 50-host test fleet loads it far past 4 per core): relaxed here only.
        "check_load_max_per_core": 64.0,
        "check_disk_max_percent": 95.0,
        # A stand-in service holds ~35 MB; the engine's leak (sandbox fault leak-memory) passes this.
        "check_service_memory_max_mb": 200,
        # What the checks (checks/) compare the hosts against.
        "nats_monitor_url": f"http://127.0.0.1:{plan.nats_monitor_port}",
        "titan_version": (data_dir("sandbox/titan") / "VERSION").read_text().strip(),
        "backup_dir": "{{ titan_home }}/backups",
        # Which services read which secret from the .env at start: what `invoke rotate` restarts.
        "secret_readers": {k: ["titan-execution"] for k in
                           ("TITAN_HMAC_SECRET", "TITAN_DB_PASSWORD", "EXCHANGE_API_KEY")},
        "tls_certificates": [],
        # `become` on the sandbox: the login user may sudo -n to this second user, not to root.
        "ansible_become_user": BECOME_USER,
    }
    doc = {"all": {"children": {"sandbox": {"vars": sandbox_vars, "children": groups}}}}
    header = ("# Generated by `invoke sandbox.up`: the local sandbox fleet. Do not edit.\n"
              "# Secrets are not here: each host keeps them in {{ titan_home }}/.env.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


BECOME_USER = "ripcord-become"  # the sandbox's second user: the login user may sudo -n to it


def sshd_bin() -> str:
    return shutil.which("sshd") or "/usr/sbin/sshd"


def postgres_bin() -> Path:
    """The newest installed PostgreSQL server's bin directory (Debian keeps them versioned)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if candidates:
        return candidates[-1].parent
    found = shutil.which("postgres")
    return Path(found).parent if found else Path("/usr/lib/postgresql/15/bin")
