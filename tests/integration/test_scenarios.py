"""The scenario layer on the sandbox: triage on a healthy fleet names nothing; every scenario the
sandbox can show is drilled (fault injected, triage names it, recovery and validation pass, the
MTTD/MTTR table printed); and triage --fix stops acting on a recovery that keeps being needed
and escalates. Outcomes are read through the hosts themselves (supervisord's pids over the
system ssh client, curl of /health, the files), not only through ripcord's report."""

from __future__ import annotations

import json
import os

from ripcord import scenarios
from ripcord.sandbox import chaos


def _journal(tmp_path) -> list[dict]:
    path = tmp_path / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _pid(access, host: str, service: str) -> str:
    return access.ssh(host, f"supervisorctl pid {service}").stdout.strip()


def test_a_healthy_fleet_matches_no_scenario(ripcord):
    out = ripcord("triage", "--host", "sandbox", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["scenarios"] == [] and report["unreachable"] == {}
    assert all(report["answers"].values())


def test_every_injectable_scenario_is_drilled(ripcord, access, fleet, tmp_path):
    injectable = [s for s in scenarios.load_all() if s.fault]
    engine, postgres, nats = (_pid(access, "exec-1", "titan-execution"), _pid(access, "db-1", "postgresql"),
                              _pid(access, "db-1", "nats"))
    other_engine = _pid(access, "exec-2", "titan-execution")
    out = ripcord("drill", "--scenario", "all", extra_env={"RIPCORD_SANDBOX_DIR": str(fleet.root)})
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr
    assert "DRILLS time to detect (MTTD), to recover (MTTR)" in out.stdout
    drills = {r["scenario"]: r for r in _journal(tmp_path) if r.get("kind") == "drill"}
    assert sorted(drills) == [s.id for s in injectable]
    for record in drills.values():
        assert record["ok"] and record["detect_s"] > 0 and record["recover_s"] > 0, record
    # The recoveries really ran on the hosts: the crashed engine, PostgreSQL and NATS are new
    # processes; and the fleet is whole again, read from each service's own /health.
    assert _pid(access, "exec-1", "titan-execution") != engine
    assert _pid(access, "db-1", "postgresql") != postgres and _pid(access, "db-1", "nats") != nats
    # The leak's recovery restarted the leaking engine alone, halted while it did, and resumed it.
    assert _pid(access, "exec-2", "titan-execution") == other_engine
    assert access.health("exec-1", "titan-execution")["state"] == "NORMAL"
    assert not (access.plan.host("exec-1").titan_home / "system.halt").exists()
    # Triage told them apart by the checks' own words: the leaking service named; one book left
    # behind is a desync (13), not a feed lost (3).
    drilled = dict(part.split(":", 1) for part in out.stdout.split("DRILL scenario ")[1:])
    assert "test_service_memory" in drilled["5"] and "titan-execution" in drilled["5"], drilled["5"]
    assert "scenario 13 Order book desync" in drilled["13"], drilled["13"]
    assert "scenario 3 Market data feed loss" not in drilled["13"], drilled["13"]
    assert "scenario 3 Market data feed loss" in drilled["3"], drilled["3"]
    assert access.fleet.unhealthy() == []
    brain = access.plan.host("core-1").service("titan-brain").health_url
    assert access.curl_json(brain)["breaker"] == "CLOSED"
    assert (access.plan.host("exec-1").titan_home / ".env").stat().st_mode & 0o777 == 0o600
    assert not (fleet.root / "faults.json").exists()


def _counting_opens(tmp_path, path) -> tuple[dict, object]:
    """extra_env that makes a ripcord run log every open of `path` (a Python audit hook, loaded
    by sitecustomize), and the log: how often the run read the file, seen from outside ripcord."""
    hook, log = tmp_path / "hook", tmp_path / "opens.log"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, sys\n"
        f"def _seen(event, args, path={str(path)!r}, log={str(log)!r}):\n"
        "    if event == 'open' and isinstance(args[0], str) and os.path.abspath(args[0]) == path:\n"
        "        with open(log, 'a') as f:\n"
        "            f.write('open\\n')\n"
        "sys.addaudithook(_seen)\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, (str(hook), os.environ.get("PYTHONPATH"))))}, log


def test_triage_fix_stops_a_recovery_that_keeps_failing_and_escalates(ripcord, access, tmp_path):
    """The backups gone (scenario 16) for a cause backup-db cannot cure (their directory made
    read-only): two attempts, then no third; an escalation instead, journaled. Each run reads the
    inventory once (diagnosis, rate limit and procedure share it)."""
    limits = tmp_path / "limits.yml"
    limits.write_text("all:\n  vars:\n    triage_max_recoveries: 2\n    triage_validate_seconds: 2\n")
    counting, opens = _counting_opens(tmp_path, limits)
    backups = access.plan.db.titan_home / "backups"
    chaos.inject(access.plan, "lose-backups")
    access.ssh("db-1", 'chmod 500 "$TITAN_HOME/backups"')
    try:
        for attempt in range(3):
            opens.unlink(missing_ok=True)
            out = ripcord("triage", "--host", "sandbox", "--fix", "--yes", inventories=(limits,),
                          extra_env=counting)
            assert out.returncode == 1, out.stdout + out.stderr
            reads = opens.read_text().count("open")
            assert reads == 1, f"the inventory was read {reads} times"
            assert "scenario 16 Backup failure" in out.stdout
            if attempt < 2:
                assert "RECOVERY scenario 16: procedure backup-db" in out.stdout
        assert "RECOVERY" not in out.stdout, "the third must not act"
        assert "not acting" in out.stdout and "Escalating to on-call" in out.stdout
        kinds = [r["kind"] for r in _journal(tmp_path) if r.get("kind", "").startswith("triage.")]
        assert kinds == ["triage.fix", "triage.fix_failed", "triage.fix", "triage.fix_failed",
                         "triage.escalation"]
        backup_runs = [r for r in _journal(tmp_path)
                       if r.get("kind") == "play" and r["playbook"].endswith("/backup-db.yml")]
        assert len(backup_runs) == 2 and not any(backups.glob("titan-*")), "no backup was made"
    finally:
        access.ssh("db-1", 'chmod 700 "$TITAN_HOME/backups"')
        chaos.heal(access.plan)
