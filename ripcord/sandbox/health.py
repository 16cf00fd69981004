"""Cheap liveness probes used while the fleet starts: an HTTP health endpoint, an SSH banner."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request


def probe_health(url: str, timeout: float = 1.0) -> str | None:
    """The `status` field of a JSON health endpoint, or None when it does not answer 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status != 200:
                return None
            return str(json.loads(response.read()).get("status"))
    except (OSError, ValueError, urllib.error.URLError):
        return None


def ssh_banner(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """True when an SSH server greets on host:port (sshd is accepting connections)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False
