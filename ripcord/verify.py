"""Run checks/ (testinfra tests) against hosts, over the run's own SSH connections.

pytest runs in-process with a plugin that parametrizes the `host` fixture over the hosts to
verify, each a testinfra Host whose backend sends commands through ripcord's Connection: the
connection (and its host key checking) is the one the play used, so verifying ten hosts opens no
new SSH session. testinfra's own plugin is disabled for these runs, so nothing can fall back to
its paramiko backend, which only warns on unknown host keys.

A run's commands on one host go to one shell there (HostShell), each in a subshell of its own:
a command costs its own process start, or none for a shell builtin, instead of an SSH channel
and a login shell each (~3 ms against ~9 ms a command on the sandbox, ~40 commands a host).
"""

from __future__ import annotations

import contextlib
import datetime
import fnmatch
import io
import re
import secrets
import select
import shlex
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import pytest
import testinfra.host
from testinfra.backend.base import BaseBackend, CommandResult

from ripcord.connection import CommandResult as Answer
from ripcord.connection import CommandTimeout, Connection
from ripcord.errors import InputError, RipcordError
from ripcord.paths import data_dir

CHECKS = data_dir("checks")  # the shipped checks; an operator's own are in config's check_dirs
DEFAULT_SELECTION = "not situational"  # what a healthy fleet must pass: `invoke verify` default
WAIVERS = CHECKS / "waivers.yml"


class RipcordBackend(BaseBackend):
    """testinfra commands over an open ripcord Connection; carries the host's variables."""

    NAME = "ripcord"

    def __init__(self, conn: Connection, hostvars: dict[str, Any], *args: Any, **kwargs: Any):
        super().__init__(conn.name, *args, **kwargs)
        self.conn = conn
        self.hostvars = hostvars
        self.shell = HostShell(conn) if hasattr(conn, "fabric") else None  # local: conn.run

    def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
        line = self.get_command(command, *args)
        try:
            out = self.shell.run(line) if self.shell else self.conn.run(line)
        except RipcordError as exc:  # a lost host fails the check with the reason, not a crash
            return self.result(255, self.encode(line), b"", str(exc).encode())
        return self.result(out.rc, self.encode(line), out.stdout.encode(), out.stderr.encode())

    def close(self) -> None:
        if self.shell:
            self.shell.close()


class HostShell:
    """The host's login shell, reading a run's commands on its stdin, one after another.

    Each command runs in a subshell (what one check sources, sets or changes stays with it), its
    stdin /dev/null, followed by an end line on stdout (with its exit status) and on stderr, each
    holding a random mark of this shell: no host output can end a command early or forge its
    status. A command past the connection's timeout is stopped with the whole shell (its
    session), as Connection.run stops one; so is the shell on Ctrl-C (it is in conn.running).
    Anything unexpected fails that command (status 255), never passes it; the next one starts a
    new shell.
    """

    def __init__(self, conn: Connection):
        self.conn = conn
        self.mark = secrets.token_hex(16).encode()
        self.end = re.compile(rb"\n" + self.mark + rb" (\d+)\n\Z")
        self.channel: Any = None
        self.session = b""
        self.lock = threading.Lock()

    def run(self, line: str) -> Answer:
        with self.lock:
            deadline = time.monotonic() + self.conn.command_timeout
            if self.channel is None:
                self._start(deadline)
            mark = self.mark.decode()
            try:
                self.channel.sendall(f"( eval {shlex.quote(line)} ) </dev/null; printf '\\n{mark} %s\\n' "
                                     f"$?; printf '\\n{mark}\\n' >&2\n".encode())
            except (OSError, EOFError, paramiko.SSHException) as exc:
                self.close()
                raise self.conn.lost(f": {exc}") from None
            out, err = self._read(deadline, lambda o, e: self._done(o, e))
            status = self.end.search(out[-len(self.mark) - 24:])
            return Answer(int(status.group(1)), out[:len(out) - len(status.group(0))].decode(
                errors="replace"), err[:-len(self.mark) - 2].decode(errors="replace"))

    def _done(self, out: bytearray, err: bytearray) -> bool:
        return (err.endswith(b"\n" + self.mark + b"\n")
                and self.end.search(out[-len(self.mark) - 24:]) is not None)

    def start(self) -> None:
        """Start the shell now, if it can be (else its first command says why)."""
        with self.lock, contextlib.suppress(RipcordError):
            if self.channel is None:
                self._start(time.monotonic() + self.conn.command_timeout)

    def _start(self, deadline: float) -> None:
        self.channel = None
        self.channel = self.conn.open_session('echo $$; exec "${SHELL:-/bin/sh}" -s',
                                              timeout=max(0.1, deadline - time.monotonic()))
        self.session = b""  # its first line, read with the first command's answer (_read)

    def _read(self, deadline: float, done) -> tuple[bytearray, bytearray]:
        """stdout and stderr until done(out, err); the shell is stopped on a timeout and closed
        when it ends early."""
        channel, out, err = self.channel, bytearray(), bytearray()
        while not done(out, err):
            if channel.recv_ready():
                out += channel.recv(65536)
                if not self.session and b"\n" in out:  # the shell's pid, its session id
                    self.session, _, out[:] = bytes(out).partition(b"\n")
                    self.conn.running.add(self.session)  # Ctrl-C's stop_running stops it too
            elif channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
            elif channel.eof_received or channel.closed:
                self.close()
                raise RipcordError(f"{self.conn.name}: the shell running the checks' commands ended")
            elif (remaining := deadline - time.monotonic()) <= 0:
                stopped = self.session.isdigit() and self.conn._stop_session(self.session)
                self.close()
                raise CommandTimeout(f"{self.conn.name}: command timed out after "
                                     f"{self.conn.command_timeout:g}s"
                                     + ("" if stopped else " (its processes could not be stopped)"))
            else:
                select.select([channel], [], [], min(remaining, 1.0))
        return out, err

    def close(self) -> None:
        """End the shell: it reads end of file and exits."""
        channel, self.channel = self.channel, None
        self.conn.running.discard(self.session)
        if channel is not None:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                channel.close()


@dataclass
class CheckResult:
    host: str
    id: str  # the test's node id without the host parameter
    outcome: str  # passed | failed | waived | skipped
    message: str = ""
    duration: float = 0.0


@dataclass
class CheckReport:
    results: list[CheckResult] = field(default_factory=list)
    attempts: int = 1

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.outcome == "failed"]

    def summary(self) -> dict[str, Any]:
        return summarize(self.results)


def summarize(results: list[CheckResult]) -> dict[str, Any]:
    """Counts by outcome and every result: the `checks` object of --json and the journal."""
    count = {o: sum(r.outcome == o for r in results) for o in ("passed", "failed", "waived")}
    return {**count, "results": [vars(r) for r in results]}


class _Plugin:
    """Gives checks their hosts (over our connections) and their variables; records results."""

    def __init__(self, connections: dict[str, Connection], hostvars: dict[str, dict[str, Any]]):
        self.connections = connections
        self.hostvars = hostvars
        self.hosts = {name: testinfra.host.Host(RipcordBackend(conn, hostvars[name]))
                      for name, conn in connections.items()}
        self.results: list[CheckResult] = []
        self.dirs = [Path(d) for d in _check_dirs()]

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Start the shells of the hosts with checks to run, all at once (a round trip each)."""
        hosts = {id(p): p for item in session.items if hasattr(item, "callspec")
                 and isinstance(p := item.callspec.params.get("ripcord_host"), testinfra.host.Host)}
        shells = [h.backend.shell for h in hosts.values() if h.backend.shell]
        if len(shells) > 1:
            with ThreadPoolExecutor(max_workers=min(16, len(shells))) as pool:
                list(pool.map(HostShell.start, shells))

    def close(self) -> None:
        for host in self.hosts.values():
            host.backend.close()

    def check_id(self, item: pytest.Item) -> str:
        """'file.py::test', relative to the check directory the file is in (shipped or own)."""
        nodeid = item.nodeid.split("[")[0]
        for directory in self.dirs:
            if item.path.is_relative_to(directory) and "::" in nodeid:
                return f"{item.path.relative_to(directory)}::{nodeid.split('::', 1)[1]}"
        return nodeid.removeprefix("checks/")

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "ripcord_host" in metafunc.fixturenames:  # Host objects, as testinfra's own plugin
            names = sorted(self.hosts)
            metafunc.parametrize("ripcord_host", [self.hosts[n] for n in names], ids=names,
                                 scope="module", indirect=True)

    @pytest.fixture(scope="module")
    def ripcord_host(self, request: pytest.FixtureRequest) -> testinfra.host.Host:
        return request.param

    @pytest.fixture(scope="module")
    def host(self, ripcord_host: testinfra.host.Host) -> testinfra.host.Host:
        return ripcord_host

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        outcome = yield
        report = outcome.get_result()
        if report.when == "call" or (report.when == "setup" and not report.passed):
            params = item.callspec.params if hasattr(item, "callspec") else {}
            host = params["ripcord_host"].backend.hostname if "ripcord_host" in params else ""
            message = ""
            if call.excinfo is not None and not report.skipped:
                message = _first_line(call.excinfo.exconly())
            elif report.skipped:
                message = str(call.excinfo.value) if call.excinfo else ""
            self.results.append(CheckResult(host, self.check_id(item),
                                            report.outcome, message, round(report.duration, 3)))


def connect(inventory, hosts: list[str], forks: int = 20
            ) -> tuple[dict[str, Connection], dict[str, str]]:
    """Open a connection to each host in parallel: (connections, unreachable host -> why)."""
    from concurrent.futures import ThreadPoolExecutor

    from ripcord.errors import UnreachableError

    def attempt(host: str) -> Connection | str:
        conn = Connection(host, inventory.connection_for(host))
        try:
            conn.open()
            return conn
        except UnreachableError as exc:
            conn.close()
            return str(exc)

    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts) or 1))) as pool:
        outcomes = dict(zip(hosts, pool.map(attempt, hosts), strict=True))
    connections = {h: c for h, c in outcomes.items() if isinstance(c, Connection)}
    return connections, {h: c for h, c in outcomes.items() if isinstance(c, str)}


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line.removeprefix("AssertionError: ").strip()


def run_checks(select: str, connections: dict[str, Connection],
               hostvars: dict[str, dict[str, Any]], *, retry_s: float | None = None,
               junit: str | None = None, waivers: Path = WAIVERS) -> CheckReport:
    """Run the checks selected (a marker expression, or node ids separated by spaces) on hosts.

    With retry_s, failing checks are run again until they pass or the time is up (as Goss's
    --retry-timeout), so "restart, then wait until healthy" is one step.
    """
    active_waivers = load_waivers(waivers)
    deadline = time.monotonic() + (retry_s or 0)
    attempt = 0
    while True:
        attempt += 1
        plugin = _Plugin(connections, hostvars)
        args = ["-q", "--tb=no", "--import-mode=importlib", *PYTEST_OFF,
                *_selection(select)]
        args += ["--junitxml", junit] if junit else ["-p", "no:junitxml"]
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # our report is the output, not pytest's
                code = pytest.main(args, plugins=[plugin, *_shared_fixtures(plugin.dirs)])
        finally:
            plugin.close()
        if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED,
                        pytest.ExitCode.NO_TESTS_COLLECTED):
            raise InputError(f"checks could not run (pytest exit {int(code)}) for {select!r}",
                             hint="run `pytest checks/ --collect-only` to see why")
        report = CheckReport(apply_waivers(plugin.results, active_waivers), attempt)
        if not report.failed or time.monotonic() >= deadline:
            return report
        time.sleep(1.0)


# What ripcord's pytest runs do without (a halt waits for its checks, so their cost counts):
# plugin autoloading (testinfra's own plugin, see above, and any other installed one: their
# discovery alone cost ~0.13 s a run); output capture (our report is the output: its plugin,
# not only --capture=no, as it still wrapped every phase of every item); the plugins
# that turn exceptions raised in __del__ or threads into warnings nobody sees here (~0.15 s of
# forced garbage collections a run); and those with no use in-process (~15 ms).
PYTEST_OFF = ["--disable-plugin-autoload"] + [
    arg for plugin in ("capture", "cacheprovider", "unraisableexception", "threadexception", "debugging",
                       "doctest", "legacypath", "pastebin", "setuponly", "setupplan", "stepwise",
                       "faulthandler", "unittest")
    for arg in ("-p", f"no:{plugin}")]


def _selection(select: str) -> list[str]:
    """pytest arguments for node ids ("test_halt.py::test_engine_is_trading") or a marker
    expression ("halt and not resume"); nothing selected means every check. A marker expression
    leaves out situational checks (a fleet halted, flattened) unless it names them."""
    words, dirs = select.split(), _check_dirs()
    if words and all("::" in w or w.endswith(".py") for w in words):
        return [_node(w.removeprefix("checks/"), dirs) for w in words]
    if not select.strip():
        return dirs
    if not re.search(r"\bsituational\b", select):  # post-procedure states only when asked for
        select = f"({select}) and not situational"
    return [*dirs, "-m", select]


def _check_dirs() -> list[str]:
    """The shipped checks, then the operator's own (ripcord.yaml check_dirs, RIPCORD_CHECK_DIRS)."""
    from ripcord.config import value

    dirs = [str(CHECKS), *(str(d) for d in value("check_dirs"))]
    for missing in (d for d in dirs if not Path(d).is_dir()):
        raise InputError(f"no check directory {missing}", hint="see check_dirs: `ripcord config`")
    return dirs


def _shared_fixtures(dirs: list[Path]) -> list:
    """The shipped conftest (hostvars, setting, health, markers) for the operator's checks too."""
    if len(dirs) < 2:
        return []
    import importlib.util

    spec = importlib.util.spec_from_file_location("ripcord_checks_shared", CHECKS / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [module]


def _node(word: str, dirs: list[str]) -> str:
    """A node id in the first check directory that has its file."""
    file = word.split("::", 1)[0]
    return str(next((Path(d) for d in dirs if (Path(d) / file).exists()), CHECKS) / word)


@dataclass(frozen=True)
class Waiver:
    check: str  # a glob over "file.py::test_name"
    hosts: str  # a glob over host names
    reason: str
    expires: datetime.date


def load_waivers(path: Path) -> list[Waiver]:
    """checks/waivers.yml: known failures, each with a reason and an expiry date."""
    if not path.exists():
        return []
    import yaml

    try:
        entries = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {exc}", file=str(path)) from None
    waivers = []
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or not {"check", "reason", "expires"} <= set(entry):
            raise InputError(f"waiver {number} needs check, reason and expires", file=str(path))
        expires = entry["expires"]
        if not isinstance(expires, datetime.date):
            raise InputError(f"waiver {number}: expires must be a date (YYYY-MM-DD)", file=str(path))
        waivers.append(Waiver(str(entry["check"]), str(entry.get("hosts", "*")),
                              str(entry["reason"]), expires))
    return waivers


def apply_waivers(results: list[CheckResult], waivers: list[Waiver],
                  today: datetime.date | None = None) -> list[CheckResult]:
    """A waived failure is reported as waived until its waiver expires; then it fails again."""
    today = today or datetime.date.today()
    for result in results:
        if result.outcome != "failed":
            continue
        for waiver in waivers:
            if fnmatch.fnmatch(result.id, waiver.check) and fnmatch.fnmatch(result.host, waiver.hosts):
                if today <= waiver.expires:
                    result.outcome = "waived"
                    result.message += f" (waived until {waiver.expires}: {waiver.reason})"
                else:
                    result.message += f" (waiver expired {waiver.expires})"
                break
    return results
