"""One SSH connection per host per run, with host key checking on.

Fabric's Connection accepts any host key by default (paramiko's AutoAddPolicy, known_hosts never
loaded). ripcord loads the inventory's known_hosts and rejects unknown and changed keys, because
the worst five minutes are exactly when someone may be impersonating a host. The same holds for
every hop on the way: a jump host from the inventory (ansible_ssh_common_args' ProxyJump) or from
~/.ssh/config (ProxyJump, which Fabric follows with connections of its own) is checked against
the same known_hosts with the same policy, and an unknown jump host is named as such.
A ProxyCommand from ~/.ssh/config is a program of the operator's: its own checks apply to it.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import re
import secrets
import select
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import fabric
import paramiko
from invoke.exceptions import ThreadException

from ripcord.errors import RipcordError, UnreachableError
from ripcord.inventory import ConnectionSpec

BANNER_TIMEOUT_S = 10
AUTH_TIMEOUT_S = 10
DEFAULT_COMMAND_TIMEOUT_S = 60
KILL_GRACE_S = 2  # a timed-out command's processes get this long after TERM, then KILL
STOP_ANSWER_S = KILL_GRACE_S + 1  # a host that has not begun stopping them by then does not answer
STOP_LIMIT_S = 15  # one that has begun is slow (loaded), not gone: it may take this long in all


class HostKeyError(UnreachableError):
    """The host's key is unknown or does not match known_hosts: it is not safely reachable."""


class CommandTimeout(RipcordError):
    """A remote command ran past its timeout (and was stopped)."""


@dataclass(frozen=True)
class CommandResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


def _host_bytes(host: str) -> bytes | str:
    """getaddrinfo() runs a str host through the idna codec, whose import costs ~30 ms of every
    run; an ASCII name or address as bytes skips it (a non-ASCII name still goes as str)."""
    return host.encode("ascii") if host.isascii() else host


_KNOWN_HOSTS: dict[tuple[str, int, int], paramiko.HostKeys] = {}
_KNOWN_HOSTS_LOCK = threading.Lock()


def _host_keys(path: str) -> paramiko.HostKeys:
    """known_hosts, parsed once for every connection of the run that uses it (again if the file
    changes). paramiko's load checks each line against all those before it: fifty connections each
    loading a fifty-line file cost more than their handshakes. Shared read-only: with
    RejectPolicy nothing is ever added to it."""
    try:
        st = os.stat(path)
    except OSError:
        return paramiko.HostKeys()  # no file: no key known, every host refused
    key = (path, st.st_mtime_ns, st.st_size)
    with _KNOWN_HOSTS_LOCK:
        if key not in _KNOWN_HOSTS:
            _KNOWN_HOSTS[key] = paramiko.HostKeys(path)
        return _KNOWN_HOSTS[key]


def _known_host_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


def _accept_hint(host: str, port: int, known_hosts: str) -> str:
    name = _known_host_name(host, port)
    return (f"if the key is expected to be new or changed, verify its fingerprint out of band, then: "
            f"ssh-keygen -R '{name}' -f {known_hosts}; "
            f"ssh-keyscan -p {port} {host} >> {known_hosts}")


class Connection:
    """An open SSH session to one inventory host: run commands, move files, forward ports."""

    def __init__(self, name: str, spec: ConnectionSpec,
                 command_timeout: float = DEFAULT_COMMAND_TIMEOUT_S):
        self.name = name
        self.spec = spec
        self.command_timeout = command_timeout
        self.known_hosts = str(Path(spec.known_hosts).expanduser())
        self.running: set[bytes] = set()  # session ids of commands under way (stop_running)
        self.dropped = ""  # why ripcord closed this connection itself, if it did
        gateway = self._fabric(self._jump_spec()) if spec.jump else None
        self.fabric = self._fabric(spec, gateway)

    def _jump_spec(self) -> ConnectionSpec:
        """ProxyJump's `[user@]host[:port]` as a spec sharing our key and known_hosts."""
        target = self.spec.jump or ""
        user, _, hostport = target.rpartition("@")
        host, _, port = hostport.partition(":")
        return ConnectionSpec(host=host, port=int(port or 22), user=user or self.spec.user,
                              key_file=self.spec.key_file, jump=None,
                              connect_timeout=self.spec.connect_timeout,
                              known_hosts=self.spec.known_hosts)

    def _fabric(self, spec: ConnectionSpec, gateway: fabric.Connection | None = None):
        # A host that accepts but never speaks must cost at most its own connect timeout.
        limit = max(1.0, spec.connect_timeout)
        kwargs = {"banner_timeout": min(limit, BANNER_TIMEOUT_S),
                  "auth_timeout": min(limit, AUTH_TIMEOUT_S), "look_for_keys": spec.key_file is None}
        if spec.key_file:
            kwargs["key_filename"] = str(Path(spec.key_file).expanduser())
        conn = fabric.Connection(host=spec.host, port=spec.port, user=spec.user,
                                 connect_timeout=int(max(1, spec.connect_timeout)),
                                 connect_kwargs=kwargs, gateway=gateway)
        hop = conn
        while isinstance(hop, fabric.Connection):  # the target, then each jump host before it
            hop.client.set_missing_host_key_policy(paramiko.RejectPolicy())
            hop.client._host_keys = _host_keys(self.known_hosts)  # SSHClient has no setter
            if hop is not conn and hop is not gateway:  # a hop Fabric made from ~/.ssh/config
                for key, value in kwargs.items():
                    hop.connect_kwargs.setdefault(key, value)
            hop = hop.gateway
        return conn

    def open(self) -> None:
        """Connect and authenticate; every failure becomes UnreachableError or HostKeyError."""
        spec = self.spec
        where = f"{self.name} ({spec.user}@{spec.host}:{spec.port})"
        try:
            if self.fabric.gateway is None:
                # Our own socket, so TCP_NODELAY is on from the first packet: SSH's handshake and
                # commands are small request/response exchanges, and delayed ACKs would stall
                # each one ~40 ms (half of a handshake's time, most of a command's).
                sock = socket.create_connection((_host_bytes(spec.host), spec.port),
                                                timeout=max(1.0, spec.connect_timeout))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.fabric.connect_kwargs["sock"] = sock
            self.fabric.open()
        except paramiko.BadHostKeyException as exc:
            hop, hint = self._hop(exc.hostname, exc.expected_key)
            raise HostKeyError(
                f"{where}: {hop}host key CHANGED: {exc.key.get_name()} "
                f"{exc.key.fingerprint} does not match {self.known_hosts}", hint=hint) from None
        except paramiko.SSHException as exc:
            unknown = re.match(r"Server '(.*)' not found in known_hosts", str(exc))
            if unknown:
                hop, hint = self._hop(unknown.group(1))
                raise HostKeyError(f"{where}: {hop}host key unknown: not in {self.known_hosts}",
                                   hint=hint) from None
            raise UnreachableError(f"{where}: ssh failed: {exc}") from None
        except (TimeoutError, OSError, EOFError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
            raise UnreachableError(f"{where}: cannot connect: {reason}") from None

    def _hop(self, server: str, expected: paramiko.PKey | None = None) -> tuple[str, str]:
        """Which hop a host key problem is about: "jump host [host]:port: " or "" (the target),
        and the hint. paramiko names the server "[host]:port" for an unknown key, only "host"
        for a changed one: then the hop is the one whose known_hosts entry holds expected."""
        hops = [(self.spec.host, self.spec.port, "")]
        gateway = self.fabric.gateway
        while isinstance(gateway, fabric.Connection):
            hops.append((gateway.host, int(gateway.port), "jump host "))
            gateway = gateway.gateway
        known = self.fabric.client.get_host_keys()
        for host, port, label in hops:
            name = _known_host_name(host, port)
            entry = known.lookup(name) or {}
            if server in (name, host) and (expected is None or expected in entry.values()):
                return label and f"{label}{name}: ", _accept_hint(host, port, self.known_hosts)
        return "", _accept_hint(self.spec.host, self.spec.port, self.known_hosts)

    def run(self, command: str, *, timeout: float | None = None,
            stdin: str | None = None, env: dict[str, str] | None = None,
            become: str | None = None) -> CommandResult:
        """Run a shell command line on the host (the caller quotes every interpolated value).

        sshd starts each command in a session of its own, led by the login shell; the line first
        prints that shell's pid (the session id), so a command that outlives its timeout is
        stopped with everything it started (_stop_session), not left running on the host.
        `env` (a task's `environment`) is exported from the first bytes of stdin, never written
        into the command line. `become`: the command runs as that user through `sudo -n`, which
        fails at once, never prompting, where a password would be needed.
        """
        limit = timeout or self.command_timeout
        if env:  # exported from the first bytes of stdin: in no command line, in no `ps`
            script = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())
            command = f'eval "$(dd bs=1 count={len(script.encode())} 2>/dev/null)"; {command}'
            stdin = script + (stdin or "")
        if become:  # after the environment: sudo resets it, so it is read inside
            command = f"sudo -n -u {shlex.quote(become)} -- sh -c {shlex.quote(command)}"
        rc, out, err = self._exec(f"echo $$; {command}", limit, stdin, track=True)
        session, _, out = out.partition(b"\n")
        if become and rc == 1 and err.startswith(b"sudo: "):
            raise RipcordError(f"{self.name}: become {become}: {err.decode(errors='replace').strip()}",
                               hint=f"allow the login user to run commands as {become} without a "
                                    "password (sudo -n never prompts), or drop become")
        if rc is None:
            stopped = self._stop_session(session)
            why = f": {self.dropped}, so ripcord closed the connection" if self.dropped else ""
            raise CommandTimeout(f"{self.name}: command timed out after {limit:g}s"
                                 + ("" if stopped else f" (its processes could not be stopped{why})"))
        return CommandResult(rc, out.decode(errors="replace"), err.decode(errors="replace"))

    def _stop_session(self, session: bytes) -> bool:
        """TERM, then KILL after a grace period, every process of a timed-out command's session
        (and its process group, where pkill is missing), over a fresh channel.

        A host that has not begun within STOP_ANSWER_S does not answer: the connection is closed,
        so nothing else of the run waits on it (lock release...), and `dropped` says why to
        whatever uses it next. One that has begun (its first line came) is only slow, as a loaded
        host is: it gets STOP_LIMIT_S, and the connection stays (closing it made the run's next
        command on that host fail as `connection lost`, exit 3)."""
        if not session.isdigit():
            return False  # the command never started: nothing of it runs
        sid = int(session)
        alive = f"{{ kill -0 -- -{sid} 2>/dev/null || pgrep -s {sid} >/dev/null 2>&1; }}"

        def wait(tenths: int) -> str:
            return f"i=0; while [ $i -lt {tenths} ] && {alive}; do sleep 0.1; i=$((i+1)); done; "
        script = (f"echo; kill -TERM -- -{sid} 2>/dev/null; pkill -TERM -s {sid} 2>/dev/null; "
                  + wait(int(KILL_GRACE_S * 10))
                  + f"kill -KILL -- -{sid} 2>/dev/null; pkill -KILL -s {sid} 2>/dev/null; "
                  + wait(10) + f"! {alive}")  # killed, until reaped (a zombie counts)
        try:
            rc, began, _ = self._exec(script, STOP_LIMIT_S, None, answer_limit=STOP_ANSWER_S)
        except UnreachableError:
            rc, began = None, b""
        transport = self.fabric.client.get_transport()
        if rc is None and transport is not None and transport.is_active():
            self.dropped = (f"the host had not stopped a timed-out command after {STOP_LIMIT_S:g}s"
                            if began else f"the host did not answer within {STOP_ANSWER_S:g}s "
                                          "when asked to stop a timed-out command")
            transport.close()
        return rc == 0

    def stop_running(self) -> None:
        """Stop every command under way on this connection, with everything it started (Ctrl-C:
        nothing of an interrupted run is left running on the host)."""
        for session in list(self.running):
            self._stop_session(session)

    def lost(self, detail: str = "") -> UnreachableError:
        """The error for this connection gone: closed by ripcord itself (saying why), or lost."""
        if self.dropped:
            return UnreachableError(f"{self.name}: connection closed by ripcord: {self.dropped}")
        return UnreachableError(f"{self.name}: connection lost{detail}")

    def open_session(self, line: str, timeout: float = BANNER_TIMEOUT_S) -> paramiko.Channel:
        """A channel running `line`, for a command that stays and talks (the host lock's holder,
        the checks' shell): the caller writes its stdin, reads its answers and closes it."""
        transport = self.fabric.client.get_transport()
        if transport is None or not transport.is_active():
            raise self.lost()
        try:
            channel = transport.open_session(timeout=timeout)
            channel.exec_command(line)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self.lost(f": {exc}") from None
        return channel

    def _exec(self, line: str, limit: float, stdin: str | None, track: bool = False,
              answer_limit: float | None = None) -> tuple[int | None, bytes, bytes]:
        """(exit status, stdout, stderr) of one exec channel, read with select: no threads, no
        polling sleeps, so a command costs about one round trip. Status None: it ran past limit,
        or printed nothing within answer_limit (when given)."""
        started = time.monotonic()
        deadline = started + (answer_limit or limit)
        transport = self.fabric.client.get_transport()
        if transport is None or not transport.is_active():
            raise self.lost()
        try:
            channel = transport.open_session(timeout=min(answer_limit or limit, BANNER_TIMEOUT_S))
            channel.exec_command(line)
            if stdin is not None:
                channel.sendall(stdin.encode())
            channel.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self.lost(f": {exc}") from None
        out, err = bytearray(), bytearray()
        session = b""
        try:
            while True:
                if channel.recv_ready():
                    out += channel.recv(65536)
                    deadline = started + limit  # it answers
                    if track and not session and b"\n" in out:  # `echo $$` came: it runs
                        session = bytes(out.partition(b"\n")[0])
                        self.running.add(session)
                elif channel.recv_stderr_ready():
                    err += channel.recv_stderr(65536)
                elif channel.eof_received or channel.closed:
                    break  # not exit-status: it is not flow-controlled and can overtake data
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None, bytes(out), bytes(err)
                    select.select([channel], [], [], min(remaining, 1.0))
            rc = channel.recv_exit_status()
        finally:
            self.running.discard(session)
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                channel.close()  # sends a message: fails when the connection just died
        if rc == -1 and not transport.is_active():  # paramiko's "no exit status": it died first
            raise self.lost(" while running a command")
        return rc, bytes(out), bytes(err)

    def read(self, path: str) -> bytes:
        """A remote file's bytes (over SFTP)."""
        buffer = io.BytesIO()
        self.fabric.sftp().getfo(path, buffer)
        return buffer.getvalue()

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Replace a remote file atomically: a temporary file beside it, made 0600 before any
        byte is written (content never sits readable by others), then chmod and rename."""
        sftp = self.fabric.sftp()
        tmp = posixpath.join(posixpath.dirname(path) or ".",
                             f".{posixpath.basename(path)}.ripcord-{secrets.token_hex(4)}")
        try:
            with sftp.open(tmp, "wbx") as handle:
                handle.chmod(0o600)
                handle.set_pipelined(True)
                handle.write(data)
                handle.flush()
                # paramiko drops a failed pipelined write's answer (a full disk left an empty
                # file, reported written): the size the host holds says whether all of it landed
                written = handle.stat().st_size
                if written != len(data):
                    raise OSError(f"only {written} of {len(data)} bytes written (is the disk full?)")
            sftp.chmod(tmp, mode)
            sftp.posix_rename(tmp, path)
        except BaseException:
            try:
                sftp.remove(tmp)
            except (OSError, paramiko.SSHException, EOFError):
                pass
            raise

    def forward(self, remote_port: int, remote_host: str = "127.0.0.1"):
        """A context manager: a local port that tunnels to remote_host:remote_port via the host."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            local_port = probe.getsockname()[1]
        return _Forward(self.fabric, local_port, remote_port, remote_host)

    def close(self) -> None:
        self.fabric.close()


class _Forward:
    def __init__(self, conn: fabric.Connection, local_port: int, remote_port: int, remote_host: str):
        self.manager = conn.forward_local(local_port, remote_port=remote_port,
                                          remote_host=remote_host, local_host="127.0.0.1")
        self.local_port = local_port

    def __enter__(self) -> int:
        self.manager.__enter__()
        return self.local_port

    def __exit__(self, *exc) -> None:
        try:
            self.manager.__exit__(*exc)
        except ThreadException as error:
            # A local client (ours, done with the forward) that hangs up while the host still
            # sends resets its socket: the tunnel's thread sees ConnectionError (reset, broken
            # pipe), which no SSH channel raises. Not a failure of the forward or the connection
            # (it was reported as the host's connection lost); anything else still is.
            failures = [each for each in error.exceptions if not isinstance(each.value, ConnectionError)]
            if failures:
                raise ThreadException(failures) from None


class LocalConnection:
    """The controller itself, for `delegate_to: localhost` (local_action, connection: local):
    the same run/read/write as a host's Connection, by local processes and files. Commands run
    as the operator, each in a session of its own, stopped whole on timeout or Ctrl-C."""

    name = "localhost"

    def __init__(self, command_timeout: float = DEFAULT_COMMAND_TIMEOUT_S):
        self.command_timeout = command_timeout
        self.running: set[int] = set()

    def run(self, command: str, *, timeout: float | None = None, stdin: str | None = None,
            env: dict[str, str] | None = None, become: str | None = None) -> CommandResult:
        if become:
            command = f"sudo -n -u {shlex.quote(become)} --preserve-env -- sh -c {shlex.quote(command)}"
        limit = timeout or self.command_timeout
        process = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True, env={**os.environ, **(env or {})})
        self.running.add(process.pid)
        try:
            out, err = process.communicate((stdin or "").encode(), timeout=limit)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise CommandTimeout(f"localhost: command timed out after {limit:g}s") from None
        finally:
            self.running.discard(process.pid)
        return CommandResult(process.returncode, out.decode(errors="replace"),
                             err.decode(errors="replace"))

    def stop_running(self) -> None:
        for pid in list(self.running):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)

    def read(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """As Connection.write: a 0600 temporary file beside it, then chmod and rename."""
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".",
                                   prefix=f".{os.path.basename(path)}.ripcord-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def close(self) -> None:
        self.stop_running()
