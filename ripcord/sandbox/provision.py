"""Lay out the sandbox's files: the login user, keys, host directories, configs, releases.

Idempotent: what exists is kept (host keys, .env secrets, data), what is derived from the plan
(configs, known_hosts, inventory) is rewritten. Secrets are generated once and then read back
from the hosts' .env files, which stay their only home.

Provisioning runs as root and writes inside directories the hosts' login user owns (titan_home
and below), where that user can plant symlinks. So no path is followed through a symlink below a
directory root does not own: directories are opened one component at a time with O_NOFOLLOW (a
planted link is refused with an error naming it), files are written to an O_EXCL temporary file
renamed over the old name (a link there is replaced, its target untouched), and modes and owners
are set on open descriptors, never by name.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pwd
import secrets as random_secrets
import shutil
import stat
import subprocess
from contextlib import contextmanager
from pathlib import Path

from ripcord import dotenv
from ripcord.errors import SandboxError
from ripcord.paths import data_dir
from ripcord.sandbox import render
from ripcord.sandbox.plan import Host, Plan

STANDINS = data_dir("sandbox/titan")  # the checkout's, or the installed package's copy

# Seeded exchange positions: the same account totals as seed.sql's positions.
SEED_POSITIONS = {"titan": {"BTCUSDT": {"qty": 0.5, "avgPrice": 64000},
                            "ETHUSDT": {"qty": -2.0, "avgPrice": 3100},
                            "SOLUSDT": {"qty": 40, "avgPrice": 150}}}


class Owner:
    """Who owns host-side files: the login user when we are root, else nobody changes."""

    def __init__(self, user: str):
        self.user = user
        self.is_root = os.geteuid() == 0
        if self.is_root:
            entry = pwd.getpwnam(user)
            self.uid, self.gid = entry.pw_uid, entry.pw_gid

    def own(self, path: Path) -> None:
        if self.is_root:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def as_user(self, argv: list[str]) -> list[str]:
        """argv run as the login user (runuser when root)."""
        return ["runuser", "-u", self.user, "--", *argv] if self.is_root else argv


def ensure_login_user(user: str) -> None:
    """Create the dedicated unprivileged login user (root only); '*' keeps it unlocked for sshd."""
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(user)
    except KeyError:
        home = Path("/var/lib/ripcord/home")
        run(["useradd", "--system", "--home-dir", str(home), "--create-home",
              "--shell", "/bin/sh", "--comment", "ripcord sandbox hosts", user])
    run(["usermod", "-p", "*", user])  # no password, but not locked: sshd refuses locked users


BECOME_USER = render.BECOME_USER


@contextmanager
def machine_lock():
    """Held while what all fleets on this machine share is made (the login and become users,
    the runtime venv), so that two fleets coming up at once never race to create them."""
    base = Path("/var/lib/ripcord") if os.geteuid() == 0 else Path.home()
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".provision.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
SUDOERS = Path("/etc/sudoers.d/ripcord-sandbox")


def ensure_become_user(login: str) -> None:
    """A second unprivileged user that the login user may run commands as through `sudo -n`
    without a password: what playbooks' `become` needs on the sandbox (root only; never root
    itself). Without sudo installed, nothing: become then fails with sudo's own message."""
    if os.geteuid() != 0 or not shutil.which("sudo"):
        return
    try:
        pwd.getpwnam(BECOME_USER)
    except KeyError:
        run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", "--comment", "ripcord sandbox become", BECOME_USER])
    rule = f"{login} ALL=({BECOME_USER}) NOPASSWD: ALL\n"
    run(["visudo", "-cqf", "-"], stdin=rule)  # a broken rule would break sudo for everyone
    write(SUDOERS, rule, mode=0o440)


def open_dir(path: Path, create: bool = False) -> int:
    """A descriptor on directory path, opened one component at a time from /. As root, below a
    directory that root does not own (or that others may write), a symlink is refused
    (O_NOFOLLOW): the login user may have planted it. create: make missing components (0755)."""
    root = os.geteuid() == 0
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parts = Path(os.path.abspath(path)).parts
        for depth, part in enumerate(parts[1:], start=2):
            parent = os.fstat(fd)
            trusted = not root or (parent.st_uid == 0 and not parent.st_mode & 0o022)
            nofollow = 0 if trusted else os.O_NOFOLLOW
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | nofollow
            try:
                if create and not _lexists(part, fd):
                    os.mkdir(part, 0o755, dir_fd=fd)
                child = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    bad = Path(*parts[:depth])
                    raise SandboxError(f"refusing to provision through {bad}: it is a symlink or not "
                                       "a directory", hint=f"remove {bad} and retry") from None
                raise
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _lexists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def _read_nofollow(name: str, dir_fd: int) -> tuple[bytes, os.stat_result] | None:
    """A regular file's content and stat, None when it is missing, a symlink or not a plain file."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:  # missing, or a symlink (ELOOP)
        return None
    with open(fd, "rb") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return None
        return handle.read(), st


def write(path: Path, text: str, mode: int = 0o644, owner: Owner | None = None) -> None:
    """Write text if it differs (so unchanged configs keep their mtime), then set mode/owner.

    Never through a symlink: a new file is an O_EXCL temporary renamed over path (a link at path
    is replaced, not followed); an unchanged one gets its mode and owner through its descriptor.
    """
    data = text.encode()
    dfd = open_dir(path.parent)
    try:
        found = _read_nofollow(path.name, dfd)
        if found is not None and found[0] == data:
            fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
            try:
                _set(fd, mode, owner)
            finally:
                os.close(fd)
            return
        tmp = f".{path.name}.{random_secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dfd)
        try:
            with open(fd, "wb", closefd=False) as handle:
                handle.write(data)
            _set(fd, mode, owner)
            os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            os.unlink(tmp, dir_fd=dfd)
            raise
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


def _set(fd: int, mode: int, owner: Owner | None) -> None:
    os.fchmod(fd, mode)
    if owner and owner.is_root:
        os.fchown(fd, owner.uid, owner.gid)


def mkdirs(owner: Owner | None, mode: int, *paths: Path) -> None:
    for path in paths:
        fd = open_dir(path, create=True)
        try:
            _set(fd, mode, owner)
        finally:
            os.close(fd)


def read_env(path: Path) -> dict[str, str]:
    """A host's .env, or nothing when it does not exist yet (or is not a plain file: a symlink
    is never read as root)."""
    try:
        dfd = open_dir(path.parent)
    except OSError:
        return {}
    try:
        found = _read_nofollow(path.name, dfd)
    finally:
        os.close(dfd)
    return dotenv.parse(found[0].decode(errors="replace")) if found else {}


def gather_secrets(plan: Plan) -> dict[str, str]:
    """Secrets already on the hosts, plus new ones for what is missing."""
    envs = {h.name: read_env(h.titan_home / ".env") for h in plan.hosts}

    def existing(key: str) -> str | None:
        for env in envs.values():
            if env.get(key):
                return env[key]
        return None

    found = {"hmac_secret": existing("TITAN_HMAC_SECRET") or random_secrets.token_hex(32),
             "db_password": existing("TITAN_DB_PASSWORD") or random_secrets.token_hex(16),
             "exchange_key:ops": existing("EXCHANGE_OPS_API_KEY") or random_secrets.token_hex(20)}
    for host in plan.hosts:
        found[f"exchange_key:{host.name}"] = (envs[host.name].get("EXCHANGE_API_KEY")
                                              or random_secrets.token_hex(20))
    return found


def provision(plan: Plan, user: str, runtime: Path) -> dict[str, str]:
    """Every file the fleet needs, for every host; returns the secrets for seeding."""
    owner = Owner(user)
    secrets = gather_secrets(plan)
    mkdirs(None, 0o755, plan.root, plan.control_dir, plan.control_dir / "logs", plan.root / "hosts")
    mkdirs(None, 0o700, plan.client_key.parent)
    if not plan.client_key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ripcord-sandbox-operator",
              "-f", str(plan.client_key)])
    client_pub = plan.client_key.with_suffix(".pub").read_text()
    if owner.is_root:  # sshd's privilege separation directory (tmpfs: gone after a reboot)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    known = []
    for host in plan.hosts:
        known.append(_provision_host(plan, host, owner, runtime, client_pub, secrets))
    run([render.sshd_bin(), "-t", "-f", str(plan.hosts[0].etc / "sshd_config")])
    write(plan.known_hosts, "".join(known))
    _provision_exchange(plan, owner, secrets)
    write(plan.control_conf, render.control_supervisord_conf(plan, runtime,
                                                             user if owner.is_root else None))
    return secrets


def _provision_host(plan: Plan, host: Host, owner: Owner, runtime: Path, client_pub: str,
                    secrets: dict[str, str]) -> str:
    """One host's filesystem; returns its known_hosts line."""
    home = host.titan_home
    mkdirs(None, 0o755, host.root, host.etc, host.bin)
    mkdirs(owner, 0o750, home, home / "logs", home / "state", home / "backups",
           home / "releases", home / "state" / "faults")
    mkdirs(owner, 0o700, host.run)
    key = host.etc / "ssh_host_ed25519_key"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{host.name}-host-key",
              "-f", str(key)])
    write(host.etc / "authorized_keys", client_pub)
    write(host.etc / "sshd_config", render.sshd_config(host, owner.user))
    write(host.supervisor_conf, render.host_supervisord_conf(plan, host, runtime))
    write(host.bin / "supervisorctl", render.supervisorctl_wrapper(host, runtime), mode=0o755)
    env = home / ".env"
    if not os.path.lexists(env):  # never overwrite: the operator may have rotated secrets
        write(env, render.host_env(plan, host, secrets), mode=0o600, owner=owner)
    _install_release(home, owner)
    if host.role == "db":
        mkdirs(owner, 0o700, host.var, host.var / "redis", host.var / "nats")
        write(host.etc / "nats.conf", render.nats_conf(plan, host))
        write(host.etc / "redis.conf", render.redis_conf(plan, host))
        if not (host.var / "pg" / "PG_VERSION").exists():
            _initdb(host, owner)
    pub = key.with_suffix(".pub").read_text().split()
    return f"[127.0.0.1]:{host.ssh_port} {pub[0]} {pub[1]}\n"


def _install_release(home: Path, owner: Owner) -> None:
    """Deploy the stand-ins as titan_home/releases/<version>, with `current` pointing at it.

    An existing `current` is left alone: a rollback may have pointed it elsewhere.
    """
    version = (STANDINS / "VERSION").read_text().strip()
    release = home / "releases" / version
    mkdirs(owner, 0o755, release)
    for source in sorted(STANDINS.iterdir()):
        if source.suffix == ".py" or source.name == "VERSION":
            write(release / source.name, source.read_text(), owner=owner)
    current = home / "current"
    if not current.is_symlink():
        current.symlink_to(Path("releases") / version)
        owner.own(current)


def _initdb(host: Host, owner: Owner) -> None:
    pgdata = host.var / "pg"
    run(owner.as_user([str(render.postgres_bin() / "initdb"), "-D", str(pgdata), "-E", "UTF8",
                        "--auth-local=peer", "--auth-host=scram-sha-256", "--no-sync",
                        "--no-instructions"]))


def _provision_exchange(plan: Plan, owner: Owner, secrets: dict[str, str]) -> None:
    home = plan.exchange_home
    mkdirs(owner, 0o750, home, home / "app")
    labels = {v: k.split(":", 1)[1] for k, v in secrets.items() if k.startswith("exchange_key:")}
    keys = {key: {"account": "titan", "label": label} for key, label in sorted(labels.items())}
    write(home / "keys.json", json.dumps(keys, indent=2) + "\n", mode=0o600, owner=owner)
    write(home / ".env", render.exchange_env(plan), mode=0o600, owner=owner)
    if not (home / "positions.json").exists():
        write(home / "positions.json", json.dumps(SEED_POSITIONS, indent=2) + "\n", owner=owner)
    for source in STANDINS.glob("*.py"):
        write(home / "app" / source.name, source.read_text(), owner=owner)


def run(argv: list[str], stdin: str | None = None) -> str:
    """Run a local command; a failure is a SandboxError with the command's last lines."""
    try:
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise SandboxError(f"{argv[0]} is not installed",
                           hint="make demo installs the sandbox's Debian packages") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise SandboxError(f"{Path(argv[0]).name} failed: {' | '.join(detail)}")
    return result.stdout


def remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
