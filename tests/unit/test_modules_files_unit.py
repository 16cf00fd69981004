"""The file and wait modules without a fleet: argument validation, the .env edit script (run by
the local /bin/sh, as a host would), the redacted diff, and HTTP over a stand-in SSH channel."""

from __future__ import annotations

import json
import logging
import os
import pwd
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import paramiko
import pytest

from ripcord import dotenv
from ripcord.connection import CommandResult
from ripcord.modules import REGISTRY, TaskContext
from ripcord.modules.envfile import redacted_diff
from ripcord.modules.filesupport import parse_mode
from ripcord.modules.httpchannel import MISSING, ChannelError, ForwardingDenied, dig, request, same_value
from ripcord.sandbox.plan import login_user
from ripcord.templating import Secrets


def problems(module: str, args: dict) -> list[str]:
    return REGISTRY[module].check_args(args)


# --- argument validation ------------------------------------------------------------------------

@pytest.mark.parametrize("module, args, expected", [
    ("file", {}, "missing required argument 'path'"),
    ("file", {"path": "/x", "state": "link"}, "expected one of file, touch, absent, directory"),
    ("file", {"path": "/x", "mode": "rw-r--r--"}, "expected an octal string like '0640'"),
    ("file", {"path": "/x", "mode": 644}, "644 reads as a decimal number"),
    ("file", {"path": "/x", "mode": "0999"}, "expected an octal string"),
    ("file", {"path": "/x", "mode": True}, "got a boolean"),
    ("file", {"path": "/x", "state": "absent", "mode": "0600"}, "'mode' makes no sense"),
    ("file", {"path": "/x", "owner": "root"}, "unknown argument 'owner'"),
    ("copy", {"dest": "/x"}, "exactly one of 'content' or 'src' is required"),
    ("copy", {"dest": "/x", "content": "a", "src": "b"}, "exactly one of 'content' or 'src'"),
    ("copy", {"content": "a"}, "missing required argument 'dest'"),
    ("copy", {"dest": "/x", "content": "a", "backup": "yes"}, "argument 'backup': expected a boolean"),
    ("template", {"dest": "/x"}, "missing required argument 'src'"),
    ("env", {"path": "/x/.env", "key": "A"}, "argument 'value' is required with state=present"),
    ("env", {"path": "/x/.env", "key": "A", "value": "b", "state": "absent"}, "makes no sense"),
    ("env", {"path": "/x/.env", "key": "BAD-KEY", "value": "b"}, "'BAD-KEY' is not a variable name"),
    ("env", {"path": "/x/.env", "key": "A", "value": ["b"]}, "argument 'value': expected"),
    ("stat", {"path": "/x", "get_checksum": "no"}, "expected a boolean"),
    ("fetch", {"src": "/x"}, "missing required argument 'dest'"),
    ("wait_for", {}, "exactly one of 'port', 'path' or 'url' is required (got none)"),
    ("wait_for", {"port": 1, "path": "/x"}, "(got port, path)"),
    ("wait_for", {"path": "/x", "host": "db"}, "argument 'host' only applies with 'port'"),
    ("wait_for", {"url": "http://h/", "search_regex": "x"}, "'search_regex' only applies with 'path'"),
    ("wait_for", {"path": "/x", "offset": 10}, "'offset' only applies with 'search_regex'"),
    ("wait_for", {"url": "http://h/", "json_field": "a"}, "'json_field' and 'json_value' go together"),
    ("wait_for", {"port": 1, "status": 200}, "'status' only applies with 'url'"),
    ("wait_for", {"url": "http://h/", "state": "stopped"}, "'state' does not apply to 'url'"),
    ("wait_for", {"path": "/x", "search_regex": "a", "state": "absent"}, "state must be present"),
    ("wait_for", {"path": "/x", "search_regex": "(unclosed"}, "not a valid regex"),
    ("wait_for", {"port": 1, "timeout": -1}, "'timeout' must not be negative"),
    ("wait_for", {"port": "80"}, "argument 'port': expected an integer"),
    ("wait_for", {"url": "https://h/"}, "only http:// URLs are supported"),
    ("uri", {}, "missing required argument 'url'"),
    ("uri", {"url": "http://h/", "method": "FETCH"}, "expected one of GET"),
    ("uri", {"url": "http://h/", "status": [200, "ok"]}, "expected an integer or a list of integers"),
    ("uri", {"url": "http://h/", "headers": "X-A: b"}, "argument 'headers': expected a mapping"),
    ("uri", {"url": "ftp://h/"}, "only http:// URLs"),
    ("uri", {"url": "http://h/", "body": {"a": 1}, "body_format": "raw"}, "raw needs a string"),
])
def test_bad_arguments_are_rejected_before_any_host(module, args, expected):
    found = problems(module, args)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize("module, args", [
    ("file", {"path": "/x", "state": "directory", "mode": "0750"}),
    ("file", {"path": "/x", "mode": 0o640}),
    ("file", {"path": "{{ p }}", "mode": "{{ m }}"}),
    ("copy", {"dest": "/x", "content": "a", "mode": "640", "backup": True}),
    ("template", {"src": "a.j2", "dest": "/x"}),
    ("env", {"path": "/x/.env", "key": "A_1", "value": 5432}),
    ("env", {"path": "/x/.env", "key": "{{ k }}", "state": "absent"}),
    ("stat", {"path": "/x"}),
    ("fetch", {"src": "/x", "dest": "out", "flat": True}),
    ("wait_for", {"port": 80, "host": "10.0.0.1", "state": "stopped", "timeout": 1.5}),
    ("wait_for", {"path": "/x", "search_regex": "ready", "offset": "{{ mark.size }}"}),
    ("wait_for", {"url": "http://127.0.0.1:1/health", "json_field": "a.b", "json_value": False}),
    ("wait_for", {"url": "{{ url }}"}),
    ("uri", {"url": "http://h/x", "method": "POST", "body": {"a": 1}, "status": [200, 201],
             "headers": {"X-API-KEY": "k"}, "json": {"a.b": 1}}),
])
def test_good_arguments_pass(module, args):
    assert problems(module, args) == []


def test_env_value_is_a_secret_argument():
    assert REGISTRY["env"].args["value"].secret and REGISTRY["uri"].args["headers"].secret


@pytest.mark.parametrize("written, mode", [("0640", 0o640), ("640", 0o640), ("4755", 0o4755),
                                           (0o600, 0o600), (416, 0o640), (None, None)])
def test_modes(written, mode):
    assert parse_mode(written) == mode


# --- the .env edit, run by the local /bin/sh ----------------------------------------------------

class LocalShell:
    """Stands in for a Connection: runs the command line with /bin/sh here, stdin attached."""

    def __init__(self, user: str | None = None):
        self.commands: list[str] = []
        self.user = user  # run as this user (we are root), as the host's login user would

    def run(self, command: str, *, timeout=None, stdin=None) -> CommandResult:
        self.commands.append(command)
        as_user = ["runuser", "-u", self.user, "--"] if self.user else []
        done = subprocess.run([*as_user, "/bin/sh", "-c", command], input=stdin, capture_output=True,
                              text=True, timeout=10)
        return CommandResult(done.returncode, done.stdout, done.stderr)


def env(path: Path, key: str, value=None, *, check=False, diff=False, state="present",
        shell: LocalShell | None = None):
    shell = shell or LocalShell()
    args = {"path": str(path), "key": key, "state": state}
    if value is not None:
        args["value"] = value
    assert problems("env", args) == []
    ctx = TaskContext(host="local", vars={}, conn=shell, check=check, diff=diff, secrets=Secrets())
    module = REGISTRY["env"]
    return module().run(ctx, module.with_defaults(args)), shell, ctx


def backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".*.bak"))


TRICKY = "p@ss $(reboot) `id` \"q\" 'q' \\n \\\\ * ; | & #x  trailing  "


def test_env_edits_in_place_and_keeps_the_value_off_the_command_line(tmp_path):
    path = tmp_path / ".env"
    path.write_text("# comment\nA=1\nSECRET=old-secret-value\n\nB=2")  # no final newline
    path.chmod(0o644)
    result, shell, ctx = env(path, "SECRET", TRICKY, diff=True)
    assert result.changed and not result.failed, result.msg
    assert path.read_text() == f"# comment\nA=1\nSECRET={dotenv.quote(TRICKY)}\n\nB=2\n"
    assert dotenv.parse(path.read_text())["SECRET"] == TRICKY  # single-quoted: sourcing runs nothing
    assert path.stat().st_mode & 0o777 == 0o600
    assert all(TRICKY not in command for command in shell.commands)
    shown = repr((result.msg, result.diff, result.data))
    assert TRICKY not in shown and "old-secret-value" not in shown
    assert result.diff.endswith("@@ -3,1 +3,1 @@\n-SECRET=********\n+SECRET=********\n")
    assert TRICKY in ctx.secrets.values
    [backup] = backups(path)
    assert backup.read_text().endswith("B=2") and backup.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir() if "ripcord" in p.name] == [], "temp file left"

    again, _, _ = env(path, "SECRET", TRICKY)
    assert not again.changed and len(backups(path)) == 1


def test_env_check_mode_changes_nothing(tmp_path):
    path = tmp_path / ".env"
    path.write_text("A=1\n")
    path.chmod(0o640)
    before = path.stat()
    result, _, _ = env(path, "A", "2", check=True)
    assert result.changed and "would be updated" in result.msg and "mode would" in result.msg
    after = path.stat()
    assert (after.st_mtime_ns, after.st_mode) == (before.st_mtime_ns, before.st_mode)
    assert path.read_text() == "A=1\n" and backups(path) == [] and len(list(tmp_path.iterdir())) == 1
    missing = tmp_path / "new.env"
    assert env(missing, "A", "1", check=True)[0].changed and not missing.exists()


def test_env_duplicates_absent_new_file_and_symlink(tmp_path):
    path = tmp_path / ".env"
    path.write_text("K=a\nX=1\nK=b\nKEY2=z\n")
    result, _, _ = env(path, "K", "a", diff=True)
    assert result.changed and path.read_text() == "K=a\nX=1\nKEY2=z\n", "duplicates dropped"
    assert "-K=" in result.diff and "+K=" not in result.diff

    result, _, _ = env(path, "K", state="absent", diff=True)
    assert result.changed and path.read_text() == "X=1\nKEY2=z\n"
    assert not env(path, "K", state="absent")[0].changed

    fresh = tmp_path / "sub.env"
    result, _, _ = env(fresh, "PORT", 5432, diff=True)
    assert result.changed and fresh.read_text() == "PORT=5432\n"
    assert fresh.stat().st_mode & 0o777 == 0o600 and backups(fresh) == []
    assert result.diff.startswith("--- /dev/null")
    assert not env(tmp_path / "gone.env", "A", state="absent")[0].changed
    assert not (tmp_path / "gone.env").exists()

    link = tmp_path / "link.env"
    link.symlink_to(path)
    assert env(link, "X", "2")[0].changed
    assert link.is_symlink() and path.read_text() == "X=2\nKEY2=z\n"


def test_env_refuses_multiline_values_and_reports_shell_failures(tmp_path):
    result, shell, _ = env(tmp_path / ".env", "A", "one\ntwo")
    assert result.failed and "single line" in result.msg and shell.commands == []
    result, _, _ = env(tmp_path / "missing-dir" / ".env", "A", "1")
    assert result.failed and "missing-dir does not exist" in result.msg


def unprivileged_user() -> str:
    """The sandbox's login user when this machine has one (a fleet was brought up), else nobody."""
    user = login_user()
    try:
        pwd.getpwnam(user)
    except KeyError:
        user = "nobody"
    assert pwd.getpwnam(user).pw_uid != 0
    return user


def test_env_in_a_directory_it_may_not_write_fails_with_permission_denied():
    """The non-root path, as an unprivileged user: run as the sandbox's login user when we are
    root (as CI is), as ourselves otherwise."""
    root = os.geteuid() == 0
    user = unprivileged_user() if root else None
    with tempfile.TemporaryDirectory(dir="/tmp") as top:
        os.chmod(top, 0o755)
        readonly = Path(top) / "ro"
        readonly.mkdir(mode=0o500)
        if user:
            entry = pwd.getpwnam(user)
            os.chown(readonly, entry.pw_uid, entry.pw_gid)
        result, shell, _ = env(readonly / ".env", "A", "1", shell=LocalShell(user))
        assert shell.commands, "the module ran nothing"
        assert result.failed and "Permission denied" in result.msg, result.msg
        assert list(readonly.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the root path: needs root")
def test_env_as_root_writes_even_where_the_mode_says_read_only(tmp_path):
    """The root path: permission bits do not stop root, so the same write succeeds."""
    readonly = tmp_path / "ro"
    readonly.mkdir(mode=0o500)
    result, _, _ = env(readonly / ".env", "A", "1")
    assert not result.failed and result.changed, result.msg
    assert (readonly / ".env").read_text() == "A=1\n"


def test_redacted_diff_line_numbers():
    report = {"exists": True, "found": "2 5", "same": False, "lines": "6"}
    diff = redacted_diff("/e", "K", report, "present")
    assert diff == ("--- /e (before)\n+++ /e (after)\n@@ -2,1 +2,1 @@\n-K=********\n+K=********\n"
                    "@@ -5,1 +4,0 @@\n-K=********\n")
    appended = redacted_diff("/e", "K", {**report, "found": ""}, "present")
    assert appended.endswith("@@ -6,0 +7,1 @@\n+K=********\n")


# --- HTTP over a channel (a plain socket standing in for the SSH channel) -----------------------

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = json.dumps({"status": "ok", "items": [{"id": 7}], "halted": False}).encode()
        code = 200 if self.path.split("?")[0] == "/health" else 404
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802
        data = self.rfile.read(int(self.headers["Content-Length"]))
        echo = json.dumps({"got": json.loads(data), "type": self.headers["Content-Type"],
                           "key_sent": bool(self.headers.get("X-API-KEY"))}).encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(echo)))
        self.end_headers()
        self.wfile.write(echo)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class FakeTransport:
    """open_channel("direct-tcpip") as sshd would do it, with a local socket."""

    logger = logging.getLogger("paramiko.transport")

    def __init__(self, prohibited: bool = False):
        self.prohibited = prohibited
        self.opened: list[tuple] = []

    def is_active(self) -> bool:
        return True

    def open_channel(self, kind, dest, src, timeout=None):
        assert kind == "direct-tcpip"
        self.opened.append(dest)
        if self.prohibited:
            raise paramiko.ChannelException(1, "Administratively prohibited")
        try:
            import socket
            return socket.create_connection(dest, timeout=timeout)
        except ConnectionRefusedError:
            raise paramiko.ChannelException(2, "Connect failed") from None


def fake_ctx(transport: FakeTransport, check: bool = False) -> TaskContext:
    conn = SimpleNamespace(fabric=SimpleNamespace(client=SimpleNamespace(get_transport=lambda: transport)))
    return TaskContext(host="h1", vars={}, conn=conn, check=check, secrets=Secrets())


def run(module: str, args: dict, ctx: TaskContext):
    assert problems(module, args) == []
    return REGISTRY[module]().run(ctx, REGISTRY[module].with_defaults(args))


def test_request_goes_through_the_channel(server):
    transport = FakeTransport()
    answer = request(fake_ctx(transport), f"{server}/health?x=1")
    assert answer.status == 200 and answer.json["status"] == "ok"
    assert transport.opened == [("127.0.0.1", int(server.rsplit(":", 1)[1]))]
    with pytest.raises(ForwardingDenied, match="AllowTcpForwarding"):
        request(fake_ctx(FakeTransport(prohibited=True)), f"{server}/health")
    with pytest.raises(ChannelError, match="connect failed"):
        request(fake_ctx(transport), "http://127.0.0.1:1/health")


def test_uri_and_wait_for_over_the_channel(server):
    ctx = fake_ctx(FakeTransport())
    result = run("uri", {"url": f"{server}/health", "json": {"items.0.id": 7, "halted": "false"}}, ctx)
    assert not result.failed and not result.changed and result.data["json"]["status"] == "ok"
    result = run("uri", {"url": f"{server}/health", "json": {"items.0.id": 8}}, ctx)
    assert result.failed and result.msg.endswith("json items.0.id: expected 8, got 7")

    post = {"url": f"{server}/x", "method": "POST", "body": {"a": 1}, "status": 201,
            "headers": {"X-API-KEY": "k-123456"}}
    result = run("uri", post, ctx)
    assert result.changed and result.data["json"] == {"got": {"a": 1}, "type": "application/json",
                                                      "key_sent": True}
    assert "k-123456" in ctx.secrets.values
    skipped = run("uri", post, fake_ctx(FakeTransport(), check=True))
    assert skipped.skipped and skipped.msg == "skipped in check mode"

    result = run("wait_for", {"url": f"{server}/health", "json_field": "halted", "json_value": False,
                              "sleep": 30}, ctx)
    assert not result.failed and result.data["elapsed"] < 30  # true at once: it never slept
    result = run("wait_for", {"url": f"{server}/nope", "timeout": 0.3, "sleep": 0.1}, ctx)
    assert result.failed and result.msg.endswith("last seen: HTTP 404")
    result = run("wait_for", {"port": 9, "timeout": 1}, fake_ctx(FakeTransport(prohibited=True)))
    assert result.failed and "AllowTcpForwarding" in result.msg and "timed out" not in result.msg


def test_dig_and_same_value():
    doc = {"a": {"b": [10, {"c": None}]}, "flag": True, "n": 5}
    assert dig(doc, "a.b.0") == 10 and dig(doc, "a.b.1.c") is None and dig(doc, "a.b.-1.c") is None
    assert dig(doc, "a.x") is MISSING and dig(doc, "a.b.5") is MISSING
    assert same_value(True, True) and not same_value(True, 1) and same_value(True, "true")
    assert same_value(5, "5") and same_value(5, 5.0) and not same_value("5", 5)

