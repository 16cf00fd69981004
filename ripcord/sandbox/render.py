"""Config files of the sandbox fleet, rendered from the plan. Pure functions: text in, text out."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from ripcord import dotenv
from ripcord.sandbox.plan import Host, Plan

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
    """The host's own supervisord: the services a real host's init system would run."""
    home = host.titan_home
    logs = home / "logs"
    out = [_supervisord_header(host.supervisor_socket, host.run / "supervisord.pid",
                               logs / "supervisord.log", host.name, nodaemon=True)]
    env = {"TITAN_HOME": str(home)}
    for service in host.services:
        log = logs / f"{service.name}.log"
        if service.script:
            args = " ".join(service.args)
            command = f"{runtime}/bin/python -u {home}/current/{service.script} {args}".strip()
            out.append(_program(service.name, command, directory=home, log=log, environment=env))
        elif service.name == "postgresql":
            command = (f"{postgres_bin()}/postgres -D {host.var}/pg -p {plan.postgres_port}"
                       f" -c listen_addresses=127.0.0.1 -c unix_socket_directories={host.run}"
                       " -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            out.append(_program(service.name, command, directory=host.var, log=log,
                                stopsignal="INT", stopwaitsecs=30))
        elif service.name == "redis":
            command = f"{shutil.which('redis-server') or '/usr/bin/redis-server'} {host.etc}/redis.conf"
            out.append(_program(service.name, command, directory=host.var, log=log))
        elif service.name == "nats":
            command = f"{runtime}/bin/nats-server -c {host.etc}/nats.conf"
            out.append(_program(service.name, command, directory=host.var, log=log))
    return "\n".join(out)


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
    return f"""server_name: {host.name}
listen: 127.0.0.1:{plan.nats_port}
http: 127.0.0.1:{plan.nats_monitor_port}
jetstream {{
  store_dir: "{host.var}/nats"
  max_memory_store: 64MB
  max_file_store: 1GB
}}
"""


def redis_conf(plan: Plan, host: Host) -> str:
    return f"""bind 127.0.0.1
port {plan.redis_port}
protected-mode yes
daemonize no
dir {host.var}/redis
save ""
appendonly no
logfile ""
"""


def host_env(plan: Plan, host: Host, secrets: dict[str, str]) -> str:
    """titan_home/.env: the only place secrets live (mode 600, owned by the login user)."""
    core = plan.by_role("core")[0]
    values = {
        "TITAN_HOST": host.name,
        "TITAN_ROLE": host.role,
        "NATS_URL": plan.nats_url,
        "REDIS_URL": plan.redis_url,
        "TITAN_DB_HOST": "127.0.0.1",
        "TITAN_DB_PORT": str(plan.postgres_port),
        "TITAN_DB_NAME": "titan",
        "TITAN_DB_USER": "titan",
        "TITAN_DB_PASSWORD": secrets["db_password"],
        "EXCHANGE_URL": plan.exchange_url,
        "EXCHANGE_API_KEY": secrets[f"exchange_key:{host.name}"],
        "TITAN_HMAC_SECRET": secrets["hmac_secret"],
        "TITAN_HMAC_SECRET_PREVIOUS": "",
        "TITAN_HALT_FILE": str(host.halt_file),
        "BRAIN_URL": f"http://127.0.0.1:{core.service('titan-brain').port}",
        "TITAN_SYMBOLS": SYMBOLS,
        "TITAN_SIGNAL_INTERVAL_S": "3",
    }
    if host.role == "core":
        values["EXCHANGE_OPS_API_KEY"] = secrets["exchange_key:ops"]
    for service in host.services:
        if service.port:
            values[service.env_port_key] = str(service.port)
    return "".join(f"{k}={dotenv.quote(v)}\n" for k, v in values.items())  # as the env module writes


def exchange_env(plan: Plan) -> str:
    return (f"EXCHANGE_PORT={plan.exchange_port}\nEXCHANGE_RATE_LIMIT=20\n"
            "EXCHANGE_FILL_DELAY_MS=2000\n")


def supervisorctl_wrapper(host: Host, runtime: Path) -> str:
    """`supervisorctl` on the host's PATH, bound to the host's own supervisord unless the caller
    names a config itself (as ripcord's adapter does with the inventory's supervisor_config)."""
    return (f'#!/bin/sh\ncase "$1" in -c|--configuration|--configuration=*) '
            f'exec {runtime}/bin/supervisorctl "$@";; esac\n'
            f'exec {runtime}/bin/supervisorctl -c {host.supervisor_conf} "$@"\n')


def inventory(plan: Plan, user: str) -> str:
    """inventory/sandbox.yml in Ansible's YAML format; no secret in it."""
    groups: dict[str, dict] = {}
    for host in plan.hosts:
        hostvars = {
            "ansible_port": host.ssh_port,
            "titan_home": str(host.titan_home),
            "supervisor_config": str(host.supervisor_conf),
            "services": [s.name for s in host.services],
            "health_urls": {s.name: s.health_url for s in host.services if s.health_url},
        }
        groups.setdefault(host.role, {"hosts": {}})["hosts"][host.name] = hostvars
    sandbox_vars = {
        "ansible_host": "127.0.0.1",
        "ansible_user": user,
        "ansible_ssh_private_key_file": str(plan.client_key),
        "ripcord_known_hosts": str(plan.known_hosts),
        "service_manager": "supervisor",
        "nats_url": plan.nats_url,
        "exchange_url": plan.exchange_url,
        "brain_url": f"http://127.0.0.1:{plan.by_role('core')[0].service('titan-brain').port}",
        "redis_url": plan.redis_url,
        "postgres_host": "127.0.0.1",
        "postgres_port": plan.postgres_port,
        "postgres_db": "titan",
        "postgres_user": "titan",
        "env_file": "{{ titan_home }}/.env",
        # The sandbox's hosts share this machine's cores and disk, so load and disk use are the
        # whole machine's (a 50-host test fleet loads it far past 4 per core): relaxed here only.
        "check_load_max_per_core": 64.0,
        "check_disk_max_percent": 95.0,
        # What the checks (checks/) compare the hosts against.
        "nats_monitor_url": f"http://127.0.0.1:{plan.nats_monitor_port}",
        "titan_version": (Path(__file__).resolve().parents[2] / "sandbox" / "titan" / "VERSION")
        .read_text().strip(),
        "backup_dir": "{{ titan_home }}/backups",
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
