"""Helpers shared by integration tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from ripcord import bus


@contextmanager
def watching_processes(interval_s: float = 0.005):
    """Samples every process's command line (`ps -eo args`) while the block runs, to show that
    no secret ever appears in anyone's argv."""
    seen: list[str] = []
    stop = threading.Event()

    def sample():
        while True:  # at least once, however short the block
            seen.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)
            if stop.wait(interval_s):
                return

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        yield seen
    finally:
        stop.set()
        sampler.join()


def exchange(access, method: str, path: str, key: str | None, body: dict | None = None):
    """(HTTP status, JSON body) of one call to the sandbox exchange, straight from here."""
    request = urllib.request.Request(access.plan.exchange_url + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              **({"X-API-KEY": key} if key else {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def ghost_inventory(fleet, directory: Path) -> Path:
    """An extra inventory with exec-ghost: a host on a closed loopback port (unreachable)."""
    ghost = directory / "ghost.yml"
    ghost.write_text(f"all:\n  children:\n    exec:\n      hosts:\n        exec-ghost:\n"
                     f"          ansible_host: 127.0.0.1\n"
                     f"          ansible_port: {fleet.plan.base_port + 9}\n"
                     f"          ansible_timeout: 2\n")
    return ghost


def publish(access, subject: str, body: dict, secret: str | None, headers: dict | None = None,
            raw: bytes | None = None) -> dict:
    """Publish one command from a plain NATS client, signed with `secret` unless headers (or
    raw bytes) are given; returns the headers sent."""
    data = raw if raw is not None else bus.encode(body)
    if headers is None and secret is not None:
        headers = bus.sign(subject, data, secret)

    async def send(nc):
        await nc.publish(subject, data, headers=headers)
        await nc.flush()

    access.nats(send)
    return headers or {}
