"""A whole incident on the sandbox fleet, as operators run it: open, halt, verify, backup-db,
resume, notes, status updates, close, post-mortem.

The post-mortem is checked against the journal record by record (read as JSON lines, not through
ripcord), the engines' state through their own /health, and every file the incident wrote is
searched for every secret the fleet's .env files hold and the one given with -e.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path

from helpers import trading_again

ENGINES = ("exec-1", "exec-2")
SECRET_KEY = re.compile(r"secret|passw|token|key", re.IGNORECASE)


def _fleet_secrets(access) -> set[str]:
    """Every secret-named value of every host's .env, read over ssh."""
    return {value for host in access.plan.hosts for key, value in access.env(host.name).items()
            if SECRET_KEY.search(key) and len(value) >= 4}


def _timeline(text: str) -> list[list[str]]:
    """The post-mortem's timeline rows, as cells."""
    section = text.split("## Timeline", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"^\| \d+ \|", line)]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]


def _ms_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def test_a_whole_incident_is_written_from_the_journal(ripcord, access, secret, tmp_path):
    env = {"RIPCORD_STATE_DIR": str(tmp_path / "state")}  # this test's own incidents

    def run(task, *args, ok=True):
        result = ripcord(task, *args, extra_env=env,
                         own_inventory=task not in ("incident.close", "journal.verify"))
        if ok:
            assert result.returncode == 0, (task, result.stdout, result.stderr)
        return result

    fleet_secrets = _fleet_secrets(access)
    assert secret in fleet_secrets
    given = "tok-" + secrets.token_hex(12)  # an -e secret, never in any file written
    db_password = access.env("db-1")["TITAN_DB_PASSWORD"]
    started = time.time() - 90
    opened = run("incident.open", "--sev", "1", "--title", f"engines stuck {secret}",
                 "--started", str(started), "--json")
    incident = json.loads(opened.stdout)["incident"]["id"]
    assert "Acknowledge the incident" in opened.stderr and "< 5 minutes" in opened.stderr  # for people
    assert re.search(r"\(by \d\d:\d\d:\d\d UTC\)", opened.stderr), opened.stderr
    try:
        run("halt", "--host", "sandbox", "--reason", "incident drill")
        for host in ENGINES:
            assert access.health(host, "titan-execution")["halted"] is True
        run("verify", "--host", "db", "--checks", "backups")
        run("backup-db", "--host", "db", "--yes")
        run("resume", "--host", "sandbox", "--yes")
        for host in ENGINES:
            access.wait_for(lambda h=host: not access.health(h, "titan-execution")["halted"],
                            timeout=10, what=f"{host} trading again")
        run("incident.note", f"the .env secret {secret} and {given} leaked in chat",
            "-e", f"api_token={given}")
        run("incident.note", f"db password {db_password} rotated? {given}")
        run("incident.update", "--status", "identified", "--message", "a stuck engine")
        run("incident.update", "--status", "monitoring", "--message", f"resumed; watching {given}")
        run("incident.update", "--status", "resolved")
        run("incident.close")
        written = json.loads(run("incident.postmortem", "--dir", str(tmp_path / "docs"), "--json").stdout)
    finally:
        ripcord("incident.close", extra_env=env, own_inventory=False)
        if any(access.health(h, "titan-execution")["halted"] for h in ENGINES):
            trading_again(access, secret)

    records = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    mine = [r for r in records if r.get("incident") == incident]
    assert mine == records  # every run was attached, and nothing else was journaled
    steps = [r.get("action") or Path(r.get("playbook", "verify")).stem for r in mine]
    assert steps == ["open", "halt", "verify", "backup-db", "resume", "note", "note",
                     "update", "update", "update", "close"]
    assert {(r["operator"], r["ripcord_version"], bool(r["controller"])) for r in mine} \
        == {("alice", mine[0]["ripcord_version"], True)}
    assert mine[5]["text"] == "the .env secret ******** and ******** leaked in chat"
    assert mine[6]["text"] == "db password ******** rotated? ********"  # -e given to an earlier step

    (postmortem,) = (tmp_path / "docs").glob("*-engines-stuck.md")
    assert written["path"] == str(postmortem) and written["journal_head"]["seq"] == mine[-1]["seq"]
    text = postmortem.read_text()
    rows = _timeline(text)
    assert [(int(r[0]), r[1], r[2]) for r in rows] == \
        [(r["seq"], _ms_time(r["ts"]), r["operator"]) for r in mine]
    assert rows[1][3] == "halt --host sandbox (reason: incident drill)" and rows[1][4].startswith("ok")
    assert rows[8][3] == "status monitoring: resumed; watching ********"

    def seconds(a, b):
        return f"{(int(b * 1000) - int(a * 1000)) / 1000:.3f} s"
    expected = {"MTTD": seconds(started, mine[0]["ts"]), "MTTA": seconds(mine[0]["ts"], mine[1]["ts"]),
                "MTTM": seconds(mine[0]["ts"], mine[8]["ts"]),
                "MTTR": seconds(mine[0]["ts"], mine[9]["ts"])}
    figures = dict(re.findall(r"^\| (MTT[DAMR]) \([^)]*\) \| (\S+ s) ", text, re.MULTILINE))
    assert figures == expected

    updates = {p.name: p.read_text() for p in (tmp_path / "state" / "incidents" / incident
                                               / "updates").iterdir()}
    assert len(updates) == 6
    internal = updates[f"{mine[8]['seq']:06d}-monitoring-internal.md"]
    assert "Status: MONITORING" in internal
    assert "- halt --host sandbox (reason: incident drill): ok" in internal
    external = updates[f"{mine[8]['seq']:06d}-monitoring-external.md"]
    assert "We are currently experiencing resumed; watching ********." in external

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 10
    for path in written:
        content = path.read_bytes()
        for value in {*fleet_secrets, given}:
            assert value.encode() not in content, (path, "holds a secret")

    journal = tmp_path / "journal.jsonl"
    journal.write_text("".join(journal.read_text().splitlines(keepends=True)[:-1]))
    result = run("journal.verify", ok=False)
    assert result.returncode == 1 and "the last records were deleted" in result.stdout, result.stdout
    assert incident in result.stdout
