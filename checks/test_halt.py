"""Halt state of the execution engines: the kill switch's validation (runbook 000 step 2).

After a halt each engine is halted twice over: the halt file is in place (it survives restarts)
and the engine says so, or its service is stopped (the last resort: nothing can trade). The
engine's log shows the halt as its latest state change.
"""

import json
from dataclasses import dataclass

import pytest

pytestmark = [pytest.mark.halt]
ENGINE = "titan-execution"
STATE_LINES = ("System HALTED", "System NORMAL")  # what the engine logs on each state change


@dataclass
class HaltState:
    """What one engine host shows: its halt file, its health answer, its latest state line."""

    halt_file: str
    halt_file_present: bool
    health: dict | None  # None: the health endpoint does not answer 200 with JSON
    last_state_line: str


def _read_halt_state(host, hostvars) -> HaltState | None:
    """The three facts in one command (a halt waits for these checks), not testinfra's host.file,
    which first probes the system type with three more; None on a host without an engine."""
    url = (hostvars.get("health_urls") or {}).get(ENGINE)
    if not url:
        return None
    path = hostvars.get("titan_halt_file") or f"{hostvars['titan_home']}/system.halt"
    log = f"{hostvars['titan_home']}/logs/{ENGINE}.log"
    # Line 1: the halt file there (1) or not (0); line 2: the latest state line; then the health
    # answer, and on the last line curl's exit status.
    out = host.run("if test -e %s; then echo 1; else echo 0; fi; "
                   'printf "%%s\\n" "$(tac %s | grep -m 1 -F -e %s -e %s)"; '
                   "curl -sfS --max-time 3 %s; printf '\\n%%s' \"$?\"",
                   path, log, *STATE_LINES, url)
    flag, line, rest = (out.stdout.split("\n", 2) + ["", ""])[:3]
    body, _, status = rest.rpartition("\n")
    assert out.rc == 0 and flag in ("0", "1") and status.isdigit(), (
        f"cannot read the halt state on {host.backend.hostname}: "
        f"{out.stderr.strip()[:200] or 'no answer'}")
    try:
        health = json.loads(body) if status == "0" else None
    except ValueError:
        health = None
    return HaltState(path, flag == "1", health if isinstance(health, dict) else None, line.strip())


@pytest.fixture(scope="session")
def halt_states(read_all):
    return read_all(_read_halt_state)  # every engine at once


@pytest.fixture(scope="module")
def halt_state(host, halt_states) -> HaltState:
    state = halt_states.of(host)
    if state is None:
        pytest.skip("no execution engine on this host")
    return state


@pytest.mark.situational
def test_engine_is_halted(host, hostvars, halt_state):
    """After a halt: the halt file is in place, and the engine says it is halted (or is stopped)."""
    assert halt_state.halt_file_present, f"no halt file at {halt_state.halt_file}"
    if halt_state.health is None:  # stopped by the last resort?
        conf = hostvars.get("supervisor_config")
        out = host.run("supervisorctl -c %s status %s", conf, ENGINE) if conf else \
            host.run("supervisorctl status %s", ENGINE)
        assert "STOPPED" in out.stdout, (
            f"the engine's health endpoint does not answer, and {ENGINE} is not stopped: "
            f"{out.stdout.strip() or out.stderr.strip()}")
        return
    assert halt_state.health["halted"], \
        f"the engine reports {halt_state.health['state']}, not halted"


@pytest.mark.situational
def test_halt_is_logged(hostvars, halt_state):
    """After a halt: the engine's latest state change in its log is `System HALTED`."""
    if halt_state.health is None:
        pytest.skip("the engine is stopped: it logs nothing more")
    log = f"{hostvars['titan_home']}/logs/{ENGINE}.log"
    assert "System HALTED" in halt_state.last_state_line, (
        f"{log}: the latest state change is not a halt: "
        f"{halt_state.last_state_line or 'none logged'}")


@pytest.mark.resume
def test_engine_is_trading(halt_state):
    """After a resume: no halt file, and the engine says NORMAL."""
    assert not halt_state.halt_file_present, f"the halt file {halt_state.halt_file} is still there"
    assert halt_state.health is not None, "the engine's health endpoint does not answer"
    assert not halt_state.health["halted"], \
        f"the engine is halted (source: {halt_state.health.get('halt_source')})"
