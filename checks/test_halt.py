"""Halt state of the execution engines: the kill switch's validation (runbook 000 step 2).

After a halt each engine is halted twice over: the halt file is in place (it survives restarts)
and the engine says so, or its service is stopped (the last resort: nothing can trade). The
engine's log shows the halt as its latest state change.
"""

import pytest

pytestmark = [pytest.mark.halt]
ENGINE = "titan-execution"
STATE_LINES = ("System HALTED", "System NORMAL")  # what the engine logs on each state change


def _engine(hostvars, health):
    if ENGINE not in (hostvars.get("health_urls") or {}):
        pytest.skip("no execution engine on this host")
    return health(ENGINE)


class _HaltFile:
    """The halt file's presence, by one `test -e` (host.file would first probe the system type
    with three more commands, a third of a halt's verification time)."""

    def __init__(self, host, hostvars):
        self.path = hostvars.get("titan_halt_file") or f"{hostvars['titan_home']}/system.halt"
        self.exists = host.run("test -e %s", self.path).rc == 0


def _halt_file(host, hostvars):
    return _HaltFile(host, hostvars)


@pytest.mark.situational
def test_engine_is_halted(host, hostvars, health):
    """After a halt: the halt file is in place, and the engine says it is halted (or is stopped)."""
    halt_file = _halt_file(host, hostvars)
    state = _engine(hostvars, health)
    assert halt_file.exists, f"no halt file at {halt_file.path}"
    if state is None:  # stopped by the last resort?
        conf = hostvars.get("supervisor_config")
        out = host.run("supervisorctl -c %s status %s", conf, ENGINE) if conf else \
            host.run("supervisorctl status %s", ENGINE)
        assert "STOPPED" in out.stdout, (
            f"the engine's health endpoint does not answer, and {ENGINE} is not stopped: "
            f"{out.stdout.strip() or out.stderr.strip()}")
        return
    assert state["halted"], f"the engine reports {state['state']}, not halted"


@pytest.mark.situational
def test_halt_is_logged(host, hostvars, health):
    """After a halt: the engine's latest state change in its log is `System HALTED`."""
    if _engine(hostvars, health) is None:
        pytest.skip("the engine is stopped: it logs nothing more")
    log = f"{hostvars['titan_home']}/logs/{ENGINE}.log"
    out = host.run("tac %s | grep -m 1 -F -e %s -e %s", log, *STATE_LINES)  # newest first
    assert "System HALTED" in out.stdout, (
        f"{log}: the latest state change is not a halt: {out.stdout.strip() or 'none logged'}")


@pytest.mark.resume
def test_engine_is_trading(host, hostvars, health):
    """After a resume: no halt file, and the engine says NORMAL."""
    halt_file = _halt_file(host, hostvars)
    state = _engine(hostvars, health)
    assert not halt_file.exists, f"the halt file {halt_file.path} is still there"
    assert state is not None, "the engine's health endpoint does not answer"
    assert not state["halted"], f"the engine is halted (source: {state.get('halt_source')})"
