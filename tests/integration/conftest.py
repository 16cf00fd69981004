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
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ripcord.sandbox.fleet import Fleet
from ripcord.sandbox.plan import state_base

# Parallel workers (or developers) can each have a fleet: RIPCORD_TEST_FLEET / _BASE_PORT.
TEST_FLEET = os.environ.get("RIPCORD_TEST_FLEET", "test-fleet")
TEST_BASE_PORT = int(os.environ.get("RIPCORD_TEST_BASE_PORT", "25000"))


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


@pytest.fixture(scope="session")
def fleet():
    root = state_base() / TEST_FLEET
    fleet = Fleet(root, base_port=TEST_BASE_PORT, hosts=4, inventory=root / "inventory.yml")
    fleet.up()
    yield fleet
    fleet.down(purge=True)


@pytest.fixture(scope="session")
def access(fleet) -> Access:
    return Access(fleet)


@pytest.fixture(scope="session")
def inventory(fleet):
    from ripcord.inventory import Inventory

    return Inventory.load([fleet.inventory])


@pytest.fixture(scope="session")
def connect(inventory):
    """connect(host) -> an open ripcord Connection to that sandbox host (one per host, reused)."""
    from ripcord.connection import Connection

    opened: dict[str, Connection] = {}

    def factory(host: str) -> Connection:
        if host not in opened:
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
