"""service and services against the sandbox fleet, checked through independent paths.

What the modules report is compared with what an operator would see by hand: `supervisorctl
status` over the system ssh client, curl of the health URLs, and supervisord's own log for the
order things happened in. Every test leaves every service RUNNING.
"""

from __future__ import annotations

import re
import subprocess

import pytest

HOSTS = ("db-1", "core-1", "exec-1", "exec-2")


def supervisor_status(access, host: str, service: str) -> tuple[str, str]:
    """(state, pid or '') as supervisorctl on the host prints them."""
    line = access.ssh(host, f"supervisorctl status {service}", check=False).stdout
    words = line.split()
    pid = re.search(r"pid (\d+)", line)
    return words[1], pid.group(1) if pid else ""


def health_refused(url: str) -> bool:
    """curl exits 7 when the connection is refused: nothing listens any more."""
    return subprocess.run(["curl", "-sS", "--max-time", "3", url], capture_output=True,
                          timeout=10).returncode == 7


def health_url(access, host: str, service: str) -> str:
    return access.plan.host(host).service(service).health_url


def all_healthy(access, host: str) -> bool:
    services = [s for s in access.plan.host(host).services if s.health_url]
    return all(access.curl_json(s.health_url)["status"] == "ok" for s in services)


def supervisord_events(access, host: str, after_line: int) -> list[tuple[str, str]]:
    """(event, service) from the host's supervisord log, after a line count taken earlier."""
    log = access.ssh(host, f'tail -n +{after_line + 1} "$TITAN_HOME/logs/supervisord.log"').stdout
    events = []
    for line in log.splitlines():
        stopped = re.search(r"INFO stopped: (\S+)", line)
        spawned = re.search(r"INFO spawned: '([^']+)'", line)
        running = re.search(r"INFO success: (\S+) entered RUNNING", line)
        for kind, match in (("stopped", stopped), ("spawned", spawned), ("running", running)):
            if match:
                events.append((kind, match.group(1)))
    return events


def log_lines(access, host: str) -> int:
    return int(access.ssh(host, 'wc -l < "$TITAN_HOME/logs/supervisord.log"').stdout.strip())


@pytest.fixture(autouse=True)
def everything_running_after(access, connect):
    """Whatever a test did, it ends with every service RUNNING and healthy again."""
    yield
    for host in HOSTS:
        connect(host).run("supervisorctl start all")
    for host in HOSTS:
        access.wait_for(lambda h=host: all_healthy(access, h), timeout=30, what=f"{host} healthy")


# --- service --------------------------------------------------------------------------------

def test_stop_and_start_a_service_seen_from_outside(run_module, access):
    url = health_url(access, "exec-1", "titan-hunter")

    stopped = run_module("service", {"name": "titan-hunter", "state": "stopped"}, "exec-1")
    assert (stopped.changed, stopped.failed, stopped.data["status"]) == (True, False, "STOPPED")
    assert supervisor_status(access, "exec-1", "titan-hunter")[0] == "STOPPED"
    assert health_refused(url)

    again = run_module("service", {"name": "titan-hunter", "state": "stopped"}, "exec-1")
    assert (again.changed, again.failed) == (False, False)

    started = run_module("service", {"name": "titan-hunter", "state": "started"}, "exec-1")
    assert (started.changed, started.failed) == (True, False), started.msg
    assert started.data["healthy"] is True and started.data["health_url"] == url
    assert supervisor_status(access, "exec-1", "titan-hunter")[0] == "RUNNING"
    assert access.curl_json(url)["status"] == "ok"  # healthy the moment the task returns

    again = run_module("service", {"name": "titan-hunter", "state": "started"}, "exec-1")
    assert (again.changed, again.failed, again.data["status"]) == (False, False, "RUNNING")


def test_status_only_changes_nothing(run_module, access):
    before = supervisor_status(access, "core-1", "titan-brain")
    result = run_module("service", {"name": "titan-brain"}, "core-1")
    assert (result.changed, result.failed, result.data["status"]) == (False, False, "RUNNING")
    assert f"pid {before[1]}" in result.data["detail"]
    assert supervisor_status(access, "core-1", "titan-brain") == before


def test_check_mode_reports_without_acting(run_module, access):
    before = supervisor_status(access, "exec-1", "titan-scavenger")
    for state in ("stopped", "restarted"):
        result = run_module("service", {"name": "titan-scavenger", "state": state}, "exec-1",
                            check=True)
        assert (result.changed, result.failed) == (True, False)
        assert result.msg.startswith("would ")
    unchanged = run_module("service", {"name": "titan-scavenger", "state": "started"}, "exec-1",
                           check=True)
    assert unchanged.changed is False
    assert supervisor_status(access, "exec-1", "titan-scavenger") == before  # same pid, running


def test_restarted_always_changes(run_module, access):
    pids = [supervisor_status(access, "exec-2", "titan-sentinel")[1]]
    for _ in range(2):
        result = run_module("service", {"name": "titan-sentinel", "state": "restarted"}, "exec-2")
        assert (result.changed, result.failed, result.data["healthy"]) == (True, False, True)
        pids.append(supervisor_status(access, "exec-2", "titan-sentinel")[1])
    assert len(set(pids)) == 3


def test_a_service_that_cannot_start_is_failed_and_fatal(run_module, access):
    """A broken setting: supervisord gives up (FATAL), and the module says so, in its words."""
    env = '"$TITAN_HOME/.env"'
    access.ssh("exec-2", f"cp {env} {env}.m2bak && "
                         f"sed -i 's/^TITAN_HUNTER_PORT=.*/TITAN_HUNTER_PORT=notaport/' {env}")
    try:
        broken = run_module("service", {"name": "titan-hunter", "state": "restarted"}, "exec-2")
        assert (broken.changed, broken.failed) == (True, True)
        assert "spawn error" in broken.msg
        access.wait_for(lambda: supervisor_status(access, "exec-2", "titan-hunter")[0] == "FATAL",
                        timeout=20, what="FATAL")
        status = run_module("service", {"name": "titan-hunter"}, "exec-2")
        assert (status.data["status"], status.data["raw_status"], status.data["active"]) == \
            ("FAILED", "FATAL", False)
        # FATAL is not running: stopping it is already done
        assert run_module("service", {"name": "titan-hunter", "state": "stopped"},
                          "exec-2").changed is False
    finally:
        access.ssh("exec-2", f"mv {env}.m2bak {env}")
    fixed = run_module("service", {"name": "titan-hunter", "state": "started"}, "exec-2")
    assert (fixed.changed, fixed.failed, fixed.data["healthy"]) == (True, False, True)


def test_a_degraded_service_is_not_healthy(run_module, access):
    """The console answers 200 but says "degraded" while the brain is down: not good enough."""
    access.ssh("core-1", "supervisorctl stop titan-brain")
    result = run_module("service", {"name": "titan-console", "state": "restarted", "timeout": 2},
                        "core-1")
    assert (result.changed, result.failed) == (True, True)
    assert "did not become healthy" in result.msg and "'degraded'" in result.msg
    assert access.health("core-1", "titan-console")["status"] == "degraded"


def test_an_unknown_service_fails_cleanly(run_module):
    result = run_module("service", {"name": "titan-ai-quant", "state": "started"}, "exec-1")
    assert (result.changed, result.failed) == (False, True)
    assert "does not know 'titan-ai-quant'" in result.msg


# --- services -------------------------------------------------------------------------------

def test_restart_core_in_dependency_order(run_module, access):
    services = ["titan-brain", "titan-console", "titan-market-data"]
    pids = {s: supervisor_status(access, "core-1", s)[1] for s in services}
    mark = log_lines(access, "core-1")

    result = run_module("services", {"state": "restarted"}, "core-1")
    assert (result.changed, result.failed) == (True, False), result.msg
    assert result.data["stop_order"] == ["titan-console", "titan-market-data", "titan-brain"]
    assert result.data["start_tiers"] == [["titan-brain", "titan-market-data"], ["titan-console"]]

    events = supervisord_events(access, "core-1", mark)
    at = {event: i for i, event in enumerate(events)}
    # the console (which needs the brain) goes down first and comes up last, after the brain is
    # RUNNING; supervisord's own log is the witness
    assert at[("stopped", "titan-console")] < at[("stopped", "titan-brain")]
    assert at[("stopped", "titan-brain")] < at[("spawned", "titan-brain")]
    assert at[("running", "titan-brain")] < at[("spawned", "titan-console")]
    assert at[("running", "titan-market-data")] < at[("spawned", "titan-console")]
    assert [e for e in events if e[0] == "stopped"] == \
        [("stopped", s) for s in result.data["stop_order"]]

    for service in services:
        state, pid = supervisor_status(access, "core-1", service)
        assert state == "RUNNING" and pid != pids[service], service
        assert result.data["services"][service]["done"] == ["stopped", "started"]
        assert result.data["services"][service]["healthy"] is True
    assert all_healthy(access, "core-1")

    again = run_module("services", {"state": "started"}, "core-1")
    assert (again.changed, again.failed, again.data["actions"]) == (False, False, [])


def test_with_dependents_restarts_only_what_depends_on_it(run_module, access):
    """On an exec host, the brain's dependents are the strategies; the engine is left alone."""
    engine = supervisor_status(access, "exec-2", "titan-execution")
    strategies = ["titan-hunter", "titan-scavenger", "titan-sentinel"]
    pids = {s: supervisor_status(access, "exec-2", s)[1] for s in strategies}

    result = run_module("services", {"state": "restarted", "with_dependents": "titan-brain"},
                        "exec-2")
    assert (result.changed, result.failed) == (True, False), result.msg
    assert result.data["not_on_host"] == ["titan-brain", "titan-console"]
    assert result.data["actions"] == [f"stop {s}" for s in reversed(strategies)] + \
        [f"start {s}" for s in strategies]
    assert supervisor_status(access, "exec-2", "titan-execution") == engine
    for service in strategies:
        state, pid = supervisor_status(access, "exec-2", service)
        assert state == "RUNNING" and pid != pids[service]
        assert access.health("exec-2", service)["status"] == "ok"


def test_with_dependents_of_nats_would_restart_the_whole_exec_host(run_module, access):
    before = {s.name: supervisor_status(access, "exec-1", s.name)
              for s in access.plan.host("exec-1").services}
    result = run_module("services", {"state": "restarted", "with_dependents": "nats"}, "exec-1",
                        check=True)
    assert (result.changed, result.failed) == (True, False)
    assert result.data["not_on_host"][0] == "nats"
    assert result.data["start_tiers"] == [["titan-execution"],
                                          ["titan-hunter", "titan-scavenger", "titan-sentinel"]]
    assert len(result.data["actions"]) == 8  # four stops, four starts: reported, not done
    assert {s: supervisor_status(access, "exec-1", s) for s in before} == before


def test_stop_then_start_a_subset_in_order(run_module, access):
    names = ["titan-console", "titan-brain"]
    stopped = run_module("services", {"state": "stopped", "names": names}, "core-1")
    assert stopped.data["actions"] == ["stop titan-console", "stop titan-brain"]
    assert {supervisor_status(access, "core-1", n)[0] for n in names} == {"STOPPED"}
    assert supervisor_status(access, "core-1", "titan-market-data")[0] == "RUNNING"
    assert run_module("services", {"state": "stopped", "names": names}, "core-1").changed is False

    started = run_module("services", {"state": "started", "names": names}, "core-1")
    assert started.data["actions"] == ["start titan-brain", "start titan-console"]
    assert access.health("core-1", "titan-console")["status"] == "ok"


def test_restart_the_databases_waits_for_their_ports(run_module, access):
    result = run_module("services", {"state": "restarted"}, "db-1")
    assert (result.changed, result.failed) == (True, False), result.msg
    assert result.data["start_tiers"] == [["nats", "postgresql", "redis"]]
    for service in ("nats", "postgresql", "redis"):
        assert result.data["services"][service]["health"].endswith("accepts connections")
        assert supervisor_status(access, "db-1", service)[0] == "RUNNING"
