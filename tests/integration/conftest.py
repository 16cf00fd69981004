"""One sandbox fleet per test session, on its own ports and directory, torn down at the end.

Tests reach the fleet through independent paths: the system ssh client with the pinned
known_hosts, curl, psql, redis-cli and a plain NATS client, never through ripcord's own report.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import TEST_BASE_PORT, TEST_FLEET, publish

from ripcord import bus
from ripcord.sandbox.fleet import Fleet
from ripcord.sandbox.plan import state_base

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Access:
    """How a test reaches the fleet by hand, like an operator with a terminal."""

    fleet: Fleet

    @property
    def plan(self):
        return self.fleet.plan

    def ssh_argv(self, host: str, known_hosts: Path | None = None) -> list[str]:
        return ["ssh", "-i", str(self.plan.client_key), "-p", str(self.plan.host(host).ssh_port),
                "-o", f"UserKnownHostsFile={known_hosts or self.plan.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
                f"{self.fleet.user}@127.0.0.1"]

    def ssh(self, host: str, command: str, check: bool = True,
            known_hosts: Path | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.ssh_argv(host, known_hosts), command], capture_output=True,
                                text=True, timeout=30)
        if check and result.returncode != 0:
            raise AssertionError(f"ssh {host} {command!r} failed: {result.stderr.strip()}")
        return result

    def env(self, host: str) -> dict[str, str]:
        """The host's .env, read over ssh."""
        text = self.ssh(host, 'cat "$TITAN_HOME/.env"').stdout
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def curl_json(self, url: str) -> dict:
        result = subprocess.run(["curl", "-sS", "--fail", "--max-time", "3", url],
                                capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, f"curl {url}: {result.stderr.strip()}"
        return json.loads(result.stdout)

    def health(self, host: str, service: str) -> dict:
        return self.curl_json(self.plan.host(host).service(service).health_url)

    def wait_for(self, predicate, timeout: float = 10.0, interval: float = 0.05, what: str = ""):
        """Poll predicate until truthy; a probe that raises (service restarting) counts as no."""
        deadline = time.monotonic() + timeout
        last_error = None
        while True:
            try:
                value = predicate()
                if value:
                    return value
            except (AssertionError, OSError, KeyError, ValueError) as error:
                last_error = error
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}"
                                     + (f"; last error: {last_error}" if last_error else ""))
            time.sleep(interval)

    def log_has(self, host: str, service: str, text: str) -> bool:
        log = f'"$TITAN_HOME/logs/{service}.log"'
        found = self.ssh(host, f"grep -c -F -- {shlex.quote(text)} {log}", check=False)
        return found.stdout.strip() not in ("", "0")

    def nats(self, coroutine_factory):
        """Run an async function that receives a connected plain NATS client."""
        import nats

        async def main():
            nc = await nats.connect(self.plan.nats_url, connect_timeout=2,
                                    max_reconnect_attempts=0, allow_reconnect=False)
            try:
                return await coroutine_factory(nc)
            finally:
                await nc.close()

        return asyncio.run(main())


def pytest_collection_modifyitems(config, items):
    """The 50-host test (marked scale, ~3 min) first: make test gives each worker whole files
    in collection order (--dist loadfile), so its file starts at once on one worker and the other
    files balance around it, instead of it starting last and running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("scale") is None)


@pytest.fixture(scope="session")
def fleet():
    root = state_base() / TEST_FLEET
    fleet = Fleet(root, base_port=TEST_BASE_PORT, hosts=4, inventory=root / "inventory.yml")
    try:
        fleet.up()
        reset_fleet(Access(fleet))
        yield fleet
    finally:
        fleet.down(purge=True)


def reset_fleet(access: Access) -> None:
    """A fleet reused from an earlier run that crashed (so its teardown never ran) may be left
    halted, with faults injected, services stopped, shims in a host's PATH, the master arm off or
    the breaker open: put it back as a fresh fleet is, and read that back, before any test."""

    plan, engines = access.plan, [h.name for h in access.plan.by_role("exec")]
    for host in plan.hosts:
        for shim in host.bin.iterdir():  # provisioning puts only supervisorctl there
            if shim.name != "supervisorctl":
                shim.unlink()
        access.ssh(host.name, 'rm -f "$TITAN_HOME/system.halt" "$TITAN_HOME"/state/faults/*; '
                              "supervisorctl start all", check=False)
    brain = plan.host("core-1").service("titan-brain").health_url.rsplit("/", 1)[0]
    for path, body in (("/api/execution/master-arm", {"enabled": True, "operator_id": "pytest"}),
                       ("/api/breaker/reset", {"operatorId": "pytest"})):
        access.wait_for(lambda p=path, b=body: subprocess.run(
            ["curl", "-sS", "--fail", "--max-time", "3", "-X", "POST", "-d", json.dumps(b),
             brain + p], capture_output=True).returncode == 0, timeout=30, what=f"POST {path}")
    for host in engines:
        access.wait_for(lambda h=host: access.health(h, "titan-execution")["nats_connected"],
                        timeout=30, interval=0.2, what=f"{host} connected to NATS")
    secret = access.env(engines[0])["TITAN_HMAC_SECRET"]
    publish(access, bus.HALT_SUBJECT, {"state": "NORMAL", "reason": "test session start",
                                       "operator": "pytest", "source": "test"}, secret)
    for host in engines:
        access.wait_for(lambda h=host: not access.health(h, "titan-execution")["halted"],
                        timeout=10, what=f"{host} trading at session start")
    assert access.curl_json(f"{brain}/api/execution/master-arm") == {"enabled": True}
    assert access.curl_json(f"{brain}/api/breaker")["state"] == "CLOSED"
    access.wait_for(lambda: not access.fleet.unhealthy(), timeout=60, interval=0.5,
                    what="every service healthy at session start")


@pytest.fixture(scope="session")
def access(fleet) -> Access:
    return Access(fleet)


@pytest.fixture(scope="module")
def psql(access):
    """psql(sql) -> rows (lines), as titan over TCP (an independent path to the ledger),
    the password from db-1's .env as the module starts."""
    password = access.env("db-1")["TITAN_DB_PASSWORD"]

    def run(sql: str) -> list[str]:
        result = subprocess.run(
            ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(access.plan.postgres_port), "-U", "titan", "-d", "titan", "-c", sql],
            capture_output=True, text=True, timeout=30, env={**os.environ, "PGPASSWORD": password})
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()
    return run


@pytest.fixture
def secret(access) -> str:
    """The fleet's HMAC secret, read from exec-1's .env (to sign commands as ripcord does)."""
    return access.env("exec-1")["TITAN_HMAC_SECRET"]


@pytest.fixture(scope="session")
def inventory(fleet):
    from ripcord.inventory import Inventory

    return Inventory.load([fleet.inventory])


@pytest.fixture(scope="session")
def connect(inventory):
    """connect(host) -> an open ripcord Connection to that sandbox host (one per host, reused)."""
    from ripcord.connection import Connection

    opened: dict[str, Connection] = {}

    def alive(conn: Connection) -> bool:
        """A test may have closed it (ripcord closes one whose host stops answering); a connection
        cut on loopback is seen at once (the two bus tests that failed on db-1 `connection lost`
        had a forward's local reset reported as the connection's: test_connection_kept.py)."""
        transport = conn.fabric.client.get_transport()
        return transport is not None and transport.is_active()

    def factory(host: str) -> Connection:
        if host not in opened or not alive(opened[host]):
            if host in opened:
                opened[host].close()
            conn = Connection(host, inventory.connection_for(host))
            conn.open()
            opened[host] = conn
        return opened[host]

    yield factory
    for conn in opened.values():
        conn.close()


@pytest.fixture
def run_module(inventory, connect):
    """run_module(name, args, host, check=False, diff=False) -> Result, as the runner calls it."""
    from ripcord.modules import REGISTRY, TaskContext
    from ripcord.templating import Secrets, Templar, resolve_vars

    def run(name: str, args: dict, host: str = "exec-1", check: bool = False, diff: bool = False,
            answer: bool = True):
        module = REGISTRY[name]
        problems = module.check_args(args)
        assert not problems, problems
        secrets = Secrets()
        ctx = TaskContext(host=host, vars=resolve_vars(Templar(), dict(inventory.host_vars(host))),
                          conn=None if module.on_controller else connect(host), check=check,
                          diff=diff, timeout=30, templar=Templar(secrets), secrets=secrets,
                          confirm=lambda prompt, typed=None: answer)
        return module().run(ctx, module.with_defaults(args))

    return run


@pytest.fixture
def ripcord(fleet, tmp_path):
    """ripcord(task, *args, operator=..., inventories=..., extra_env=...) -> CompletedProcess of
    `invoke TASK` on the test fleet, as an operator runs it: its own journal and approvals store,
    no terminal. The fleet's inventory comes first (own_inventory=False leaves it out); `approve`
    takes none."""
    def run(task: str, *args: str, operator: str = "alice", extra_env: dict | None = None,
            inventories: tuple = (), own_inventory: bool = True) -> subprocess.CompletedProcess:
        sources = () if task == "approve" else (*((fleet.inventory,) if own_inventory else ()),
                                                 *inventories)
        argv = [sys.executable, "-m", "invoke", "--search-root", str(REPO), task,
                *[a for path in sources for a in ("--inventory", str(path))], *args]
        env = {**os.environ, "RIPCORD_JOURNAL": str(tmp_path / "journal.jsonl"),
               "RIPCORD_APPROVALS": str(tmp_path / "approvals"), "RIPCORD_OPERATOR": operator,
               **(extra_env or {})}
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env,
                              stdin=subprocess.DEVNULL)
    return run
