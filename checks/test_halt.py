"""Halt state of the execution engines: the kill switch's validation (runbook 000 step 2)."""

import pytest

pytestmark = [pytest.mark.halt]
ENGINE = "titan-execution"


def _engine(hostvars, health):
    if ENGINE not in (hostvars.get("health_urls") or {}):
        pytest.skip("no execution engine on this host")
    return health(ENGINE)


@pytest.mark.situational
def test_engine_is_halted(host, hostvars, health):
    """After a halt: the halt file is in place, and the engine says it is halted."""
    halt_file = host.file(f"{hostvars['titan_home']}/system.halt")
    state = _engine(hostvars, health)
    assert halt_file.exists, f"no halt file at {halt_file.path}"
    assert state is not None, "the engine's health endpoint does not answer"
    assert state["halted"], f"the engine reports {state['state']}, not halted"


@pytest.mark.resume
def test_engine_is_trading(host, hostvars, health):
    """After a resume: no halt file, and the engine says NORMAL."""
    halt_file = host.file(f"{hostvars['titan_home']}/system.halt")
    state = _engine(hostvars, health)
    assert not halt_file.exists, f"the halt file {halt_file.path} is still there"
    assert state is not None, "the engine's health endpoint does not answer"
    assert not state["halted"], f"the engine is halted (source: {state.get('halt_source')})"
