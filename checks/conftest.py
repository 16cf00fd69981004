"""What every check gets: `host` (testinfra), `hostvars`, `setting` (thresholds) and `health`.

Under ripcord (`invoke verify`, or a play's `verify:`) the hosts and their variables come from
ripcord's run, over its own connections. Under plain testinfra (`pytest checks/
--hosts=ssh://ripcord@127.0.0.1:24030 --ssh-config=...`), `host` is testinfra's and the
variables are looked up in ripcord's inventory by the host's address and port.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

# Markers: what a check is about (concern), which runbook procedures and scenarios it validates.
CONCERNS = ("halt", "health", "supervisor", "ports", "resources", "logs", "database", "bus",
            "exchange", "drift", "certificates", "clock", "backups", "security")
PROCEDURES = ("resume", "restart", "flatten", "restore", "rotate", "rollback", "audit", "deploy")
SCENARIOS = tuple(f"scenario{n:02d}" for n in range(1, 21))


def pytest_configure(config: pytest.Config) -> None:
    for name in (*CONCERNS, *PROCEDURES, *SCENARIOS):
        config.addinivalue_line("markers", f"{name}: checks for {name}")
    config.addinivalue_line("markers", "situational: asserts a state a procedure brings about "
                            "(the fleet halted, say); left out unless selected")


@pytest.fixture(scope="module")
def hostvars(host) -> dict[str, Any]:
    """The inventory variables of the host under check (rendered)."""
    if getattr(host.backend, "NAME", "") == "ripcord":
        return host.backend.hostvars
    return _vars_by_address(host)


def _vars_by_address(host) -> dict[str, Any]:
    """Plain testinfra: find the inventory host with the same address and port."""
    from ripcord.inventory import load_operator_inventory
    from ripcord.templating import Templar

    spec = getattr(host.backend, "host", None)
    address, port = getattr(spec, "name", None), int(getattr(spec, "port", None) or 22)
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


@pytest.fixture(scope="module")
def health(host, hostvars) -> Callable[[str], dict | None]:
    """health(service): its health endpoint's JSON, fetched on the host; None when it does not
    answer 200 with JSON."""
    def fetch(service: str) -> dict | None:
        url = (hostvars.get("health_urls") or {}).get(service)
        if not url:
            pytest.skip(f"{service} has no health URL on this host")
        out = host.run("curl -fsS --max-time 3 %s", url)
        if out.rc != 0:
            return None
        try:
            return json.loads(out.stdout)
        except ValueError:
            return None
    return fetch


@pytest.fixture(scope="module")
def services(hostvars) -> list[str]:
    """The services this host runs (inventory var `services`)."""
    return list(hostvars.get("services") or [])
