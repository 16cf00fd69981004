"""What every check gets: `host` (testinfra), `hostvars`, `setting` (thresholds) and `health`.

Under ripcord (`invoke verify`, or a play's `verify:`) the hosts and their variables come from
ripcord's run, over its own connections. Under plain testinfra (`pytest checks/
--hosts=ssh://ripcord@127.0.0.1:24030 --ssh-config=...`), `host` is testinfra's and the
variables are looked up in ripcord's inventory by the host's address and port.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import threading
import xmlrpc.client
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from xml.parsers.expat import ExpatError

import pytest
import testinfra.host

# Markers: what a check is about (concern), which runbook procedures and scenarios it validates.
CONCERNS = ("halt", "health", "supervisor", "ports", "resources", "logs", "database", "bus",
            "exchange", "drift", "certificates", "clock", "backups", "security", "release")
PROCEDURES = ("resume", "restart", "flatten", "isolate", "restore", "rotate", "rollback", "audit",
              "deploy", "reconcile")
SCENARIOS = tuple(f"scenario{n:02d}" for n in range(1, 21))


def pytest_configure(config: pytest.Config) -> None:
    for name in (*CONCERNS, *PROCEDURES, *SCENARIOS):
        config.addinivalue_line("markers", f"{name}: checks for {name}")
    config.addinivalue_line("markers", "situational: asserts a state a procedure brings about "
                            "(the fleet halted, say); left out unless selected")


@pytest.fixture(scope="module")
def hostvars(host) -> dict[str, Any]:
    """The inventory variables of the host under check (rendered)."""
    return _vars_of(host)


def _vars_of(host) -> dict[str, Any]:
    if getattr(host.backend, "NAME", "") == "ripcord":
        return host.backend.hostvars
    spec = getattr(host.backend, "host", None)  # plain testinfra: found by address and port
    return _vars_at(getattr(spec, "name", None), int(getattr(spec, "port", None) or 22))


@functools.cache
def _vars_at(address: str | None, port: int) -> dict[str, Any]:
    """Plain testinfra: the variables of the inventory host with this address and port."""
    from ripcord.inventory import load_operator_inventory
    from ripcord.templating import Templar

    sources = [p for p in os.environ.get("RIPCORD_INVENTORY", "").split(",") if p]
    inventory = load_operator_inventory(sources or None)
    for name in inventory.hosts:
        connection = inventory.connection_for(name)
        if connection.host == address and connection.port == port:
            values = inventory.host_vars(name)
            return {k: Templar().render(v, values) for k, v in values.items()}
    pytest.fail(f"no inventory host at {address}:{port} (set RIPCORD_INVENTORY)", pytrace=False)


@pytest.fixture(scope="module")
def setting(hostvars) -> Callable[[str, Any], Any]:
    """setting(name, default): a check's threshold, from inventory var `check_<name>`."""
    def value(name: str, default: Any) -> Any:
        raw = hostvars.get(f"check_{name}", default)
        return type(default)(raw) if default is not None else raw
    return value


@pytest.fixture(scope="session")
def read_all(request) -> Callable[[Callable[[Any, dict], Any]], PerHost]:
    """read_all(fetch) -> PerHost: fetch(host, hostvars) on every host of the run, all at once,
    the first time a check asks for one host's answer (`.of(host)`); shared by the run's checks.

    One host after another, such reads were most of a halt's verification time. Define it in a
    session fixture, so a retry (`retry:`, or a new `invoke verify`) reads afresh."""
    hosts = _hosts_of_run(request.session)
    return lambda fetch: PerHost(fetch, hosts)


class PerHost:
    """One fact of every host of the run, read in parallel on first use."""

    def __init__(self, fetch: Callable[[Any, dict], Any], hosts: list) -> None:
        self.fetch = fetch
        self.hosts = hosts
        self.lock = threading.Lock()
        self.answers: dict[int, Future] | None = None

    def of(self, host) -> Any:
        with self.lock:
            if self.answers is None:
                with ThreadPoolExecutor(max_workers=min(16, len(self.hosts) or 1)) as pool:
                    self.answers = {id(h): pool.submit(self._read, h) for h in self.hosts}
        answer = self.answers.get(id(host))  # each host's own answer, or its own error
        return answer.result() if answer else self._read(host)

    def _read(self, host) -> Any:
        return self.fetch(host, _vars_of(host))  # a host not in the inventory fails alone


def _hosts_of_run(session: pytest.Session) -> list:
    """The hosts (testinfra's parameters, or ripcord's) of the checks collected in this run."""
    hosts = {}
    for item in session.items:
        params = item.callspec.params if hasattr(item, "callspec") else {}
        for value in params.values():
            if isinstance(value, testinfra.host.Host):
                hosts[id(value)] = value
    return list(hosts.values())


@pytest.fixture(scope="session")
def health_answers(read_all) -> PerHost:
    """Every health URL of every host, one curl a host (one process on the host rather than one
    a service a check)."""
    return read_all(_fetch_health)


@pytest.fixture(scope="module")
def health(host, hostvars, health_answers) -> Callable[[str], dict | None]:
    """health(service): its health endpoint's JSON, fetched on the host; None when it does not
    answer 200 with JSON."""
    urls = hostvars.get("health_urls") or {}

    def fetch(service: str) -> dict | None:
        if service not in urls:
            pytest.skip(f"{service} has no health URL on this host")
        return health_answers.of(host)[service]
    return fetch


def _fetch_health(host, hostvars: dict) -> dict[str, dict | None]:
    """Every URL in one curl, which follows each answer with a line holding its HTTP status."""
    urls = hostvars.get("health_urls") or {}
    if not urls:
        return {}
    out = host.run("curl -sS --max-time 3 -w '\\n@@ %%{http_code}\\n'" + " %s" * len(urls),
                   *urls.values())
    parts = re.split(r"\n@@ (\d{3})\n", out.stdout)  # body, status, body, status, ..., ""
    answers = dict.fromkeys(urls)
    for service, body, status in zip(urls, parts[0::2], parts[1::2], strict=False):
        if status == "200":
            with contextlib.suppress(ValueError):
                answers[service] = json.loads(body)
    return answers


@pytest.fixture(scope="module")
def services(hostvars) -> list[str]:
    """The services this host runs (inventory var `services`)."""
    return list(hostvars.get("services") or [])


# Where supervisorctl finds its config when the inventory names none (supervisor_config).
SUPERVISOR_CONFIGS = ("/etc/supervisord.conf", "/etc/supervisor/supervisord.conf")
GET_ALL_PROCESS_INFO = xmlrpc.client.dumps((), "supervisor.getAllProcessInfo")


@pytest.fixture(scope="session")
def supervised(read_all) -> PerHost:
    """Every host's supervised programs, name -> (state, main pid), as supervisorctl names them
    (RUNNING, STOPPED, ...); or why supervisord did not answer. One read a host for the run,
    shared by the supervisor and service-memory checks."""
    return read_all(_read_supervised)


def _read_supervised(host, hostvars: dict) -> dict[str, tuple[str, int]] | str:
    """supervisord's own XML-RPC interface, on the unix socket its config gives supervisorctl
    (`[supervisorctl] serverurl=unix://...`): one curl on the host, where `supervisorctl status`
    would cost a Python start-up there (~110 ms of CPU a host)."""
    conf = hostvars.get("supervisor_config")
    configs = [conf] if conf else list(SUPERVISOR_CONFIGS)
    script = ("sock=$(sed -n 's|^serverurl *= *unix://||p'" + " %s" * len(configs)
              + ' 2>/dev/null | head -n 1); echo "$sock"; [ -S "$sock" ] && '
              'curl -sS --max-time 3 --unix-socket "$sock" -d %s http://localhost/RPC2')
    out = host.run(script, *configs, GET_ALL_PROCESS_INFO)
    socket, _, answer = out.stdout.partition("\n")
    if not socket:
        return f"no serverurl=unix://... in {' or '.join(configs)}"
    if out.rc != 0:
        return f"{out.stderr.strip()[:80] or 'no socket'} at {socket}"
    try:
        (processes,), _ = xmlrpc.client.loads(answer)
    except (xmlrpc.client.Fault, ExpatError, ValueError) as error:
        return f"{str(error)[:80]} at {socket}"
    return {(p["name"] if p["group"] == p["name"] else f"{p['group']}:{p['name']}"):
            (p["statename"], p["pid"]) for p in processes}
