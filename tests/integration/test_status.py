"""`invoke status` against the sandbox fleet, each fact checked by another path: curl of the
health URLs, supervisorctl over the system ssh client, the halt file written on the host's disk.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ghost_inventory

REPO = Path(__file__).resolve().parents[2]
EXECS = ("exec-1", "exec-2")


def status(fleet, host: str, *more: str, as_json: bool = True) -> tuple[int, dict | str, str]:
    """(exit code, the --json object or the screen's text, stderr) of `invoke status`."""
    result = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), "status",
                             "--host", host, "--inventory", str(fleet.inventory), *more,
                             *(["--json"] if as_json else [])],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return result.returncode, json.loads(result.stdout) if as_json else result.stdout, result.stderr


def supervisor_state(access, host: str, service: str) -> str:
    line = access.ssh(host, f"supervisorctl status {service}", check=False).stdout.split()
    return line[1] if len(line) > 1 else "?"


@pytest.fixture
def halt_file(fleet):
    """exec-1's halt file, on its disk (the sandbox hosts' directories are local); removed after."""
    path = fleet.plan.host("exec-1").halt_file
    yield path
    path.unlink(missing_ok=True)


def test_status_reports_what_the_hosts_say(fleet, access):
    before = {name: set(access.health(name, "titan-execution")["positions"]) for name in EXECS}
    code, report, err = status(fleet, "sandbox")
    assert code == 0, err
    assert report["ok"] is True and report["task"] == "status" and report["duration_s"] > 0
    assert list(report["hosts"]) == ["db-1", "core-1", "exec-1", "exec-2"]
    for name, host in report["hosts"].items():
        assert host["reachable"] is True and host["error"] is None
        assert list(host["services"]) == [s.name for s in access.plan.host(name).services]
        for service, fact in host["services"].items():
            assert fact["state"] == supervisor_state(access, name, service) == "RUNNING"
    for name in EXECS:
        engine, health = report["hosts"][name]["engine"], access.health(name, "titan-execution")
        assert engine["halted"] is health["halted"] is False and engine["halt_file"] is False
        # the engines trade while status runs: a symbol may open or close in between
        after = set(health["positions"])
        assert before[name] & after <= set(engine["positions"]) <= before[name] | after
        assert report["hosts"][name]["services"]["titan-execution"] == {
            "state": "RUNNING", "health": "ok", "version": health["version"], "error": None}
    brain = access.health("core-1", "titan-brain")
    assert {k: report["brain"][k] for k in ("host", "armed", "breaker", "version", "error")} == {
        "host": "core-1", "armed": brain["armed"], "breaker": brain["breaker"],
        "version": brain["version"], "error": None}
    assert report["exchange"]["host"] == "exec-1" and report["exchange"]["error"] is None
    assert isinstance(report["exchange"]["open_orders"], int)
    assert 0 <= report["hosts"]["core-1"]["services"]["titan-market-data"]["last_price_age_s"] < 5
    assert report["versions"] == {"engines": {h: brain["version"] for h in EXECS},
                                  "engines_differ": False}
    assert access.env("exec-1")["EXCHANGE_API_KEY"] not in json.dumps(report) + err


def test_a_halt_file_shows_as_halted_by_file_until_removed(fleet, access, halt_file):
    def settled() -> dict | None:  # halted, its orders cancelled: positions stop moving
        health = access.health("exec-1", "titan-execution")
        return health if health["halted"] and health["open_orders"] == 0 else None

    halt_file.write_text("status test\n")
    health = access.wait_for(settled, what="exec-1 halted with no open order")
    code, report, err = status(fleet, "exec")
    assert code == 0, err
    engine = report["hosts"]["exec-1"]["engine"]
    assert engine["halted"] is True and engine["halt_source"] == "file"
    assert engine["halt_file"] is True and engine["halt_file_path"] == str(halt_file)
    assert engine["positions"] == health["positions"] and engine["open_orders"] == 0  # frozen
    assert report["hosts"]["exec-2"]["engine"]["halted"] is False
    screen = status(fleet, "exec-1", as_json=False)[1]
    assert "HALTED" in screen and "present" in screen

    halt_file.unlink()
    access.wait_for(lambda: status(fleet, "exec-1")[1]["hosts"]["exec-1"]["engine"]["halted"] is False,
                    timeout=20, interval=0.5, what="status to say exec-1 trades again")


def test_a_stopped_service_shows_stopped(fleet, access):
    access.ssh("core-1", "supervisorctl stop titan-console")
    try:
        code, report, err = status(fleet, "core-1")
    finally:
        access.ssh("core-1", "supervisorctl start titan-console")
    assert code == 0, err
    assert report["hosts"]["core-1"]["services"]["titan-console"]["state"] == "STOPPED"
    assert report["hosts"]["core-1"]["services"]["titan-console"]["health"] == "no answer"
    access.wait_for(lambda: access.health("core-1", "titan-console")["status"] == "ok",
                    timeout=20, what="titan-console healthy again")
    assert status(fleet, "core-1")[1]["hosts"]["core-1"]["services"]["titan-console"]["state"] \
        == "RUNNING"


def test_an_unreachable_host_is_listed_and_exits_3(fleet, tmp_path):
    ghost = ghost_inventory(fleet, tmp_path)
    code, report, err = status(fleet, "exec", "--inventory", str(ghost))
    assert code == 3, err
    assert report["ok"] is False
    assert report["hosts"]["exec-ghost"]["reachable"] is False
    assert "exec-ghost" in report["hosts"]["exec-ghost"]["error"]
    assert list(report["hosts"]) == ["exec-1", "exec-2", "exec-ghost"]
    for host in EXECS:
        assert report["hosts"][host]["reachable"] is True and report["hosts"][host]["error"] is None
        assert report["hosts"][host]["engine"]["halted"] is False
