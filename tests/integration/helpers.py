"""Helpers shared by integration tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from ripcord import bus

# Parallel workers (or developers) can each have a fleet: RIPCORD_TEST_FLEET / _BASE_PORT.
TEST_FLEET = os.environ.get("RIPCORD_TEST_FLEET", "test-fleet")
TEST_BASE_PORT = int(os.environ.get("RIPCORD_TEST_BASE_PORT", "25000"))


def suite_port(offset: int) -> int:
    """A port of this suite's own range (RIPCORD_TEST_BASE_PORT + offset, 100 ports): the
    session fleet takes the first 50 (base+5..9 it never listens on); fleets of a test's own
    take theirs from the rest, so suites run side by side never meet."""
    assert 0 <= offset < 100, offset
    return TEST_BASE_PORT + offset


def commands_sent(monkeypatch) -> list[str]:
    """Records, as they are made, every command line ripcord sends to a host (Connection.run:
    the host's shell gets it as argv) and every process it starts here (subprocess.Popen): an
    audit of what could show in some process's argv, which no sampling of `ps` can miss."""
    from ripcord.connection import Connection

    sent: list[str] = []
    run, popen = Connection.run, subprocess.Popen.__init__

    def recording_run(self, command, *args, **kwargs):
        sent.append(f"{self.name}: {command}")
        return run(self, command, *args, **kwargs)

    def recording_popen(self, argv, *args, **kwargs):
        sent.append("local: " + (argv if isinstance(argv, str | bytes) else shlex.join(map(str, argv))))
        return popen(self, argv, *args, **kwargs)

    monkeypatch.setattr(Connection, "run", recording_run)
    monkeypatch.setattr(subprocess.Popen, "__init__", recording_popen)
    return sent


@contextmanager
def argv_recorded(host, *programs: str):
    """Wrappers for `programs` first in the sandbox host's PATH (its bin directory) that append
    their own argv to a log before exec'ing the real program: every run is recorded, however
    short. Yields a function returning the recorded argv lists; the wrappers go afterwards."""
    log = host.titan_home / "state" / f"argv-{time.time_ns()}.log"
    wrappers = [host.bin / name for name in programs]
    for wrapper in wrappers:
        real = shutil.which(wrapper.name, path="/usr/local/bin:/usr/bin:/bin")
        assert real, f"no {wrapper.name} to wrap"
        wrapper.write_text(f"#!/bin/sh\nprintf '%s\\037' \"$0\" \"$@\" >> {shlex.quote(str(log))}\n"
                           f"printf '\\n' >> {shlex.quote(str(log))}\nexec {shlex.quote(real)} \"$@\"\n")
        wrapper.chmod(0o755)

    def recorded() -> list[list[str]]:
        text = log.read_text() if log.exists() else ""
        return [line.rstrip("\037").split("\037") for line in text.splitlines() if line]

    try:
        yield recorded
    finally:
        for wrapper in wrappers:
            wrapper.unlink(missing_ok=True)
        log.unlink(missing_ok=True)


def exchange(access, method: str, path: str, key: str | None, body: dict | None = None, *,
             patient: bool = True):
    """(HTTP status, JSON body) of one call to the sandbox exchange, straight from here. Patient
    (as a client honouring Retry-After): a rate limit (429, a key's 20 requests a second, shared
    with its engine and the test's own polling) is waited out, up to 5 s; not for a test of it."""
    for _ in range(6 if patient else 1):
        request = urllib.request.Request(access.plan.exchange_url + path, method=method,
                                         data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Content-Type": "application/json",
                                                  **({"X-API-KEY": key} if key else {})})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            answer = error.code, json.loads(error.read() or b"{}")
        if answer[0] != 429:
            return answer
        time.sleep(1.0)
    return answer


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
