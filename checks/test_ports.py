"""Ports: each service's health port, and the data services' own ports, are listening."""

from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.ports, pytest.mark.restart, pytest.mark.restore, pytest.mark.deploy,
              pytest.mark.scenario01, pytest.mark.scenario04]
LOOPBACK = ("127.0.0.1", "0.0.0.0", "::")  # a listener on any of these answers on 127.0.0.1


def _port(url: str | None) -> int | None:
    return urlsplit(url).port if url else None


def expected_ports(hostvars) -> dict[str, int]:
    """What should listen on this host: service -> port (data services where they run)."""
    services = set(hostvars.get("services") or [])
    ports = {name: _port(url) for name, url in (hostvars.get("health_urls") or {}).items()}
    if "postgresql" in services and hostvars.get("postgres_port"):
        ports["postgresql"] = int(hostvars["postgres_port"])
    if "redis" in services:
        ports["redis"] = _port(hostvars.get("redis_url"))
    if "nats" in services:
        ports["nats"] = _port(hostvars.get("nats_url"))
        ports["nats monitoring"] = _port(hostvars.get("nats_monitor_url"))
    return {name: port for name, port in ports.items() if port}


def listening(ss_output: str) -> set[str]:
    """tcp://address:port of each listening TCP socket in `ss --numeric --listening --tcp`'s
    output, read as testinfra's host.socket reads it ("*" is both 0.0.0.0 and ::)."""
    found = set()
    for line in ss_output.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[0] != "LISTEN":
            continue
        address, _, port = fields[3].rpartition(":")
        address = address[1:-1] if address.startswith("[") and address.endswith("]") else address
        for each in ("0.0.0.0", "::") if address == "*" else (address,):
            found.add(f"tcp://{each}:{port}")
    return found


@pytest.fixture(scope="session")
def sockets(read_all):
    """Every host's listening TCP sockets, one `ss` a host, all at once."""
    return read_all(lambda host, hostvars: host.run("ss --numeric --listening --tcp")
                    if expected_ports(hostvars) else None)


def test_service_ports_are_listening(host, hostvars, sockets):
    ports = expected_ports(hostvars)
    if not ports:
        pytest.skip("no ports expected on this host")
    out = sockets.of(host)  # one `ss` for all ports
    assert out.rc == 0, f"cannot list listening sockets on {host.backend.hostname}: {out.stderr.strip()}"
    sockets = listening(out.stdout)
    closed = {name: port for name, port in ports.items()
              if not sockets & {f"tcp://{address}:{port}" for address in LOOPBACK}}
    assert not closed, f"not listening on {host.backend.hostname}: " + ", ".join(
        f"{name} (port {port})" for name, port in sorted(closed.items()))
