"""Helpers shared by integration tests (fixtures live in conftest.py)."""

from __future__ import annotations

import subprocess
import threading
from contextlib import contextmanager


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
