"""After `invoke isolate`: the strategy services are stopped, so no new signal is made."""

import pytest

pytestmark = [pytest.mark.supervisor, pytest.mark.isolate, pytest.mark.situational,
              pytest.mark.scenario15]
STRATEGIES = ("titan-scavenger", "titan-hunter", "titan-sentinel")


def test_strategies_are_stopped(host, hostvars):
    strategies = [s for s in hostvars.get("strategy_services") or STRATEGIES
                  if s in (hostvars.get("services") or [])]
    if not strategies:
        pytest.skip("no strategy runs on this host")
    conf = hostvars.get("supervisor_config")
    out = host.run("supervisorctl -c %s status", conf) if conf else host.run("supervisorctl status")
    states = dict(line.split()[:2] for line in out.stdout.splitlines() if len(line.split()) > 1)
    running = [s for s in strategies if states.get(s) not in ("STOPPED", "EXITED", "FATAL")]
    assert not running, f"strategies not stopped: {', '.join(f'{s} ({states.get(s)})' for s in running)}"
