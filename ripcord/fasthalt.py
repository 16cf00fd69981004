"""The kill switch's first move: the signed halt on the bus before anything else is loaded.

`invoke halt` spends most of a second on imports (rich, jinja2, the playbook reader), SSH
handshakes and a secret read over SSH before it can publish; trading goes on meanwhile. When the
controller holds the signing secret (inventory `titan_hmac_secret_env`: an environment variable
of the controller; `titan_hmac_secret_keyring`: a key in the kernel keyring; or
`titan_hmac_secret_file`: a file only its owner can read), nothing of that
is needed: this module, loaded first by ripcord.tasks, reads the inventory, signs the same
HARD_HALT the halt module would and publishes it with a reply inbox over a plain socket (the NATS
text protocol: no asyncio, no nats-py), then collects the engines' signed answers in a
background thread while the rest loads. The halt module takes those answers as its rung 1
(`taken`); the other rungs run as before. Where NATS is reached through an SSH tunnel
(nats_tunnel), the one SSH connection it needs, to the batch's first host, is opened first and
carries the publish; if it cannot be opened, the halt module's own tunnel (via any host that
answers) is used. Whatever this path cannot do exactly as the halt module would (a templated
value, NATS over TLS, a secret only on the hosts, a command line it does not fully understand)
leaves everything to the halt module, as before.

A secret file that others than its owner can read, or a keyring key that cannot be read, is
refused: invalid input, before any host is touched.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from ripcord import bus
from ripcord.errors import InputError
from ripcord.keyring import KeyringError, keyring_secret

PLAY_HOSTS = "exec"  # playbooks/halt.yml's play
ACK_TIMEOUT_S = 1.0  # the halt module's defaults: answers, connect
CONNECT_TIMEOUT_S = 1.0
SSH_WAIT_S = 0.5  # the first SSH connection (nats_tunnel) is given this much longer before the rest loads
_OPTIONS = {"--host": "host", "-l": "host", "--limit": "host", "--reason": "reason",
            "--inventory": "inventory", "-i": "inventory", "--deadline": None}
_FLAGS = {"--json", "--debug", "-v", "-vv", "-vvv", "--verbose"}
_CORE = {"--search-root": True, "-r": True}  # invoke's own options before the task name


@dataclass
class Publish:
    """One fast publish: its targets, when it went out, and the answers gathered."""

    targets: list[str]
    published_at: float | None = None  # time.time() of the publish, None until it is out
    error: str | None = None  # why NATS could not be used
    answers: bus.Answers = field(default_factory=bus.Answers)
    done: threading.Event = field(default_factory=threading.Event)
    out: threading.Event = field(default_factory=threading.Event)  # published, or failed
    used: bool = False
    via: tuple | None = None  # (host, ConnectionSpec): NATS through an SSH forward via that host


PENDING: Publish | None = None
REFUSED: str | None = None  # the secret file is not safe: the halt is invalid input


class SecretFileRefused(InputError):
    """The controller's secret file can be read by others than its owner."""


def from_argv(argv: list[str] | None = None) -> None:
    """At load time (the end of this module): when the command line is a plain `halt` (not
    --check, not --help), begin."""
    parsed = parse_argv(list(sys.argv if argv is None else argv))
    if parsed is not None:
        begin(**parsed)


def parse_argv(argv: list[str]) -> dict | None:
    """{host, reason, inventory} of `invoke|ripcord [-r DIR] halt OPTIONS`, or None for anything else."""
    if not argv or os.path.basename(argv[0]) not in ("invoke", "inv", "ripcord", "__main__.py"):
        return None
    words, found = argv[1:], {"host": None, "reason": "", "inventory": []}
    while words and words[0] in _CORE:
        words = words[2:]
    if not words or words[0] != "halt":
        return None
    words = words[1:]
    while words:
        word = words.pop(0)
        name, eq, value = word.partition("=")
        if word in _FLAGS:
            continue
        if name not in _OPTIONS or (not eq and not words):
            return None  # --check, --help, another task, an option we do not know
        value = value if eq else words.pop(0)
        key = _OPTIONS[name]
        if key == "inventory":
            found["inventory"].append(value)
        elif key:
            found[key] = value
    return found if found["host"] else None


def begin(host: str, reason: str = "", inventory: list[str] | None = None) -> None:
    """Publish the signed halt for `host` if the controller holds the secret (once per process);
    a secret file others can read, or a keyring key that cannot be read, sets REFUSED. Any other
    problem: today's path, silently."""
    global PENDING, REFUSED
    if PENDING is not None or REFUSED is not None:
        return
    try:
        plan = _plan(host, reason, inventory)
    except (SecretFileRefused, KeyringError) as exc:
        REFUSED = exc.message
        return
    except Exception:  # noqa: BLE001 - a bad pattern or inventory too: the task says so as ever
        return
    if plan is None:
        return
    url, secret, body, targets, via = plan
    PENDING = Publish(targets, via=via)
    threading.Thread(target=_session, args=(PENDING, url, secret, body), daemon=True).start()
    # nothing else competes for the CPU until it is out (through the tunnel: SSH's handshake too)
    PENDING.out.wait(CONNECT_TIMEOUT_S + 0.5 + (SSH_WAIT_S if via else 0))


def refusal() -> str | None:
    return REFUSED


def taken(targets: list[str]) -> Publish | None:
    """The fast publish, once, when it addressed exactly `targets` (the halt module's batch)."""
    if PENDING is None or PENDING.used or PENDING.targets != sorted(targets):
        return None
    PENDING.used = True
    if PENDING.via is not None:
        PENDING.out.wait(PENDING.via[1].connect_timeout + CONNECT_TIMEOUT_S + 1.0)
        if PENDING.published_at is None:  # no tunnel: the halt module's own, via any host that answers
            return None
    PENDING.done.wait(ACK_TIMEOUT_S + CONNECT_TIMEOUT_S + 1.0)
    return PENDING


def _plan(host: str, reason: str, inventory: list[str] | None):
    """(nats url, secret, signed body, targets, via), or None when this path does not apply; via
    is (host, ConnectionSpec) of the batch's first host when NATS is reached through it
    (nats_tunnel), as the halt module would reach it."""
    from ripcord.inventory import Inventory, hand_over

    if not inventory:
        from ripcord.config import default_inventory

        inventory = default_inventory()
    loaded = Inventory.load(inventory)
    hand_over(inventory, loaded)  # the halt task's own read takes this one
    engines = set(loaded.group_hosts(PLAY_HOSTS))
    targets = sorted(h for h in loaded.select(host) if h in engines)
    if not targets:
        return None
    first = loaded.host_vars(targets[0])
    secret = controller_secret(first)
    url = first.get("nats_url")
    if secret is None or not isinstance(url, str) or "{{" in url:
        return None
    via = None
    if _truthy(first.get("nats_tunnel")):
        name = next(h for h in loaded.select(PLAY_HOSTS) if h in targets)  # the runner's order
        spec = loaded.connection_for(name)
        if any("{{" in str(value) for value in vars(spec).values()):
            return None
        via = (name, spec)
    from ripcord.journal import operator

    fields = {"state": "HARD_HALT", "reason": reason or "operator halt", "operator": operator(),
              "source": "ripcord", "targets": targets}
    return url, secret, bus.encode(fields), targets, via


def controller_secret(hostvars: dict) -> str | None:
    """The signing secret the controller holds, per the inventory (its environment, the kernel
    keyring, a file), or None (then the hosts have it). InputError for a key that cannot be read
    (ripcord/keyring.py) or a secret file that others than its owner can read."""
    name = hostvars.get("titan_hmac_secret_env")
    if isinstance(name, str) and "{{" not in name and os.environ.get(name):
        return os.environ[name].strip()
    held = keyring_secret(hostvars)  # KeyringError (invalid input) when named but unreadable
    if held is not None:
        return held
    path = hostvars.get("titan_hmac_secret_file")
    if not isinstance(path, str) or not path or "{{" in path:
        return None
    try:
        return secret_file(path) or None
    except OSError:
        return None  # missing: the halt module says so, and reads the hosts' secret


def secret_file(path: str) -> str:
    """The first line of the controller's secret file, which only its owner may read (as ssh asks
    of a key), followed through no link; "" when it is empty. OSError when it cannot be read,
    SecretFileRefused when others than its owner can. The one reader of titan_hmac_secret_file,
    for this path and the halt module's (ripcord/modules/trading.py)."""
    path = os.path.expanduser(path)
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW)) as file:
        if os.fstat(file.fileno()).st_mode & 0o077:
            raise SecretFileRefused(f"{path}: titan_hmac_secret_file is readable by others than its owner; "
                                    f"refused (chmod 600 {path})")
        return file.readline().strip()


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


# --- NATS, its text protocol over one socket -------------------------------------------------

def _session(pending: Publish, url: str, secret: str, body: bytes) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("nats", ""):
            raise ValueError(f"scheme {parts.scheme!r} is not plain NATS")
        if pending.via is None:
            until = time.monotonic() + CONNECT_TIMEOUT_S  # connect, hello and publish, all within it
            with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222),
                                          timeout=CONNECT_TIMEOUT_S) as sock:
                _publish_and_gather(pending, parts, sock, secret, body, until)
        else:
            _through_ssh(pending, parts, secret, body)
    except Exception as exc:  # noqa: BLE001 - said in the halt's result (or, before the publish
        # through a tunnel, the halt module's own path is taken)
        pending.error = f"cannot use NATS at {bus.public_url(url)}: {exc or type(exc).__name__}"
    finally:
        pending.out.set()
        pending.done.set()


def _through_ssh(pending: Publish, parts: urllib.parse.SplitResult, secret: str, body: bytes) -> None:
    """nats_tunnel: the one SSH connection NATS needs, opened first (the runner's Connection:
    the same host keys, jump hosts and timeouts), and NATS spoken over a direct-tcpip channel,
    as ripcord.modules.bus.nats_tunnel's forward would carry it."""
    from ripcord.connection import Connection

    host, spec = pending.via
    conn = Connection(host, spec)
    try:
        conn.open()
        until = time.monotonic() + CONNECT_TIMEOUT_S  # then the forward, hello and publish
        channel = conn.fabric.transport.open_channel(
            "direct-tcpip", (parts.hostname or "127.0.0.1", parts.port or 4222), ("127.0.0.1", 0),
            timeout=CONNECT_TIMEOUT_S)
        with channel:
            _publish_and_gather(pending, parts, channel, secret, body, until)
    finally:
        conn.close()


def _publish_and_gather(pending: Publish, parts: urllib.parse.SplitResult, sock, secret: str,
                        body: bytes, until: float) -> None:
    """Over `sock` (a socket, or an SSH channel): hello and publish by `until`, then answers."""
    reader = sock.makefile("rb")
    sock.settimeout(max(0.01, until - time.monotonic()))
    line = reader.readline()
    if not line.startswith(b"INFO "):
        raise ValueError("the server did not introduce itself as NATS")
    info = json.loads(line[5:])
    if info.get("tls_required") or (info.get("auth_required") and not parts.username):
        raise ValueError("TLS or credentials the fast path does not speak")
    connect = {"verbose": False, "pedantic": False, "headers": True, "no_responders": False,
               "protocol": 1, "lang": "python", "version": "ripcord-fasthalt",
               "name": "ripcord-halt"}
    if parts.username and parts.password is not None:
        connect.update(user=urllib.parse.unquote(parts.username),
                       **{"pass": urllib.parse.unquote(parts.password)})
    elif parts.username:
        connect["auth_token"] = urllib.parse.unquote(parts.username)
    inbox = f"_INBOX.ripcord{os.urandom(10).hex()}"
    headers = bus.sign(bus.HALT_SUBJECT, body, secret)
    block = ("NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
             + "\r\n").encode()
    sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\n"
                 + f"SUB {inbox} 1\r\n".encode()
                 + f"HPUB {bus.HALT_SUBJECT} {inbox} {len(block)} {len(block) + len(body)}\r\n".encode()
                 + block + body + b"\r\nPING\r\n")
    sent = time.monotonic()
    sock.settimeout(max(0.01, until - sent))
    _until_pong(reader, sock)
    pending.published_at = time.time() - (time.monotonic() - sent)
    pending.out.set()
    _gather(pending, reader, sock, inbox, secret, sent)


def _until_pong(reader, sock) -> None:
    while True:
        line = reader.readline()
        if not line:
            raise ValueError("the server closed the connection")
        if line.startswith(b"-ERR"):
            raise ValueError(line[4:].strip().decode(errors="replace").strip("'"))
        if line.startswith(b"PING"):
            sock.sendall(b"PONG\r\n")
        if line.startswith(b"PONG"):
            return


@dataclass
class _Msg:
    data: bytes
    headers: dict[str, str]


def _gather(pending: Publish, reader, sock, inbox: str, secret: str, sent: float) -> None:
    expect = set(pending.targets)
    found = pending.answers
    while expect - found.by_host.keys() and (left := sent + ACK_TIMEOUT_S - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            line = reader.readline()
        except TimeoutError:
            return
        if not line:
            return
        words = line.split()
        if words[:1] == [b"PING"]:
            sock.sendall(b"PONG\r\n")
            continue
        if words[:1] not in ([b"MSG"], [b"HMSG"]):
            continue
        at = time.monotonic()
        total = int(words[-1])
        header_len = int(words[-2]) if words[0] == b"HMSG" else 0
        payload = reader.read(total + 2)[:total]
        msg = _Msg(payload[header_len:], _headers(payload[:header_len]))
        host, why = bus.authentic(inbox, msg, secret, expect)
        if why:
            found.ignored.append((host, why))
        else:
            found.by_host.setdefault(host, (at - sent, json.loads(msg.data)))


def _headers(block: bytes) -> dict[str, str]:
    lines = block.decode(errors="replace").split("\r\n")[1:]  # past NATS/1.0
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines if ":" in line)}


from_argv()  # loaded first by ripcord.tasks: a `halt` command line publishes now
