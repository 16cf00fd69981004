"""Incidents without a fleet: runs attached while one is open, notes redacted of every known
secret, the timeline and response times from the journal, templates that treat text as data, and
a post-mortem that is never written over once edited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ripcord import incident, postmortem
from ripcord.errors import InputError
from ripcord.journal import Journal

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("RIPCORD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RIPCORD_JOURNAL", str(tmp_path / "journal.jsonl"))
    monkeypatch.setenv("RIPCORD_OPERATOR", "alice")
    return tmp_path


def _inventory(tmp_path, env_text="TITAN_HMAC_SECRET=hmac-from-env-file\nPORT=8080\n"):
    (tmp_path / "host.env").write_text(env_text)
    path = tmp_path / "inv.yml"
    (tmp_path / "hmac").write_text("aGVsbG8gc2VjcmV0=\n")  # base64: an '=' that is no .env line
    path.write_text("all:\n  hosts:\n    web-1:\n      env_file: " + str(tmp_path / "host.env") + "\n"
                    "      titan_hmac_secret_file: " + str(tmp_path / "hmac") + "\n"
                    "      services: [titan-brain]\n      api_token: inventory-token-1\n")
    return [str(path)]


def test_runs_are_attached_only_while_an_incident_is_open(state):
    journal = Journal()
    journal.append({"kind": "play", "n": 0})
    meta = incident.open_incident(1, "engines stuck", None)
    journal.append({"kind": "play", "n": 1})
    incident.close()
    journal.append({"kind": "play", "n": 2})
    assert [(r["kind"], r.get("action"), r.get("incident")) for r in journal.records()] == [
        ("play", None, None), ("incident", "open", meta["id"]), ("play", None, meta["id"]),
        ("incident", "close", meta["id"]), ("play", None, None)]
    assert [h["seq"] for h in incident.heads(meta["id"])] == [2, 3, 4]
    with pytest.raises(InputError, match="no incident is open"):
        incident.note("late")


def test_a_second_incident_cannot_open_while_one_is(state):
    first = incident.open_incident(2, "one", None)
    with pytest.raises(InputError, match=f"incident {first['id']} is open"):
        incident.open_incident(3, "two", None)


def test_notes_are_redacted_of_every_known_secret(state):
    meta = incident.open_incident(1, "drill", None)
    Journal().append({"kind": "play"}, secrets={"secret-a-run-used", "abc"})
    assert "secret-a-run-used" not in (incident.base() / meta["id"] / "secrets.json").read_text()
    known = incident.known_secrets(_inventory(state), {"db_password": "given-with-e", "port": 99999},
                                   meta["id"])
    text = ("env hmac-from-env-file, inventory inventory-token-1, -e given-with-e, run "
            "secret-a-run-used, file aGVsbG8gc2VjcmV0=, not secret: 8080 99999 abc")
    assert known.redact(text) == ("env ********, inventory ********, -e ********, run ********, "
                                  "file ********, not secret: 8080 99999 abc")


def _records(state):
    return [json.loads(line) for line in (state / "journal.jsonl").read_text().splitlines()]


def test_response_times_come_from_the_records_times(state):
    meta = incident.open_incident(1, "drill", started=1000.0)
    Journal().append({"kind": "play", "playbook": "halt.yml", "pattern": "all", "exit_code": 0})
    incident.update("identified", "")
    incident.update("monitoring", "")
    incident.update("resolved", "")
    incident.close()
    records = incident.records(meta["id"])
    found = postmortem.moments(records, 1000.0)
    ts = [r["ts"] for r in records]
    assert found == {"started": 1000.0, "detected": ts[0], "acknowledged": ts[1],
                     "mitigated": ts[3], "resolved": ts[4]}
    rows = {m["name"]: m["seconds"] for m in postmortem.metrics(found)}
    assert rows["MTTR"] == (int(ts[4] * 1000) - int(ts[0] * 1000)) / 1000


def test_templates_render_operator_text_as_data(state):
    meta = incident.open_incident(2, "{{ 7*7 }} {% raw %}| x", None)
    incident.note("{{ lipsum.__globals__ }}\n| a pipe")
    incident.close()
    out = state / "docs"
    path = postmortem.write_postmortem(incident.load(meta["id"]), out, {})
    text = path.read_text()
    assert "# Incident: " in text and "{{ 7*7 }} {% raw %}| x" in text
    assert "| note: {{ lipsum.__globals__ }} \\| a pipe |" in text


def test_an_edited_post_mortem_is_never_overwritten(state):
    meta = incident.open_incident(3, "disk full", None)
    incident.close()
    meta = incident.load(meta["id"])
    path = postmortem.write_postmortem(meta, state / "docs", {})
    assert postmortem.write_postmortem(meta, state / "docs", {}) == path  # unedited: written again
    path.write_text(path.read_text() + "\nroot cause: a log file\n")
    with pytest.raises(incident.EditedError, match="has been edited"):
        postmortem.write_postmortem(meta, state / "docs", {})
    assert path.read_text().endswith("root cause: a log file\n")
    other = state / "docs" / path.name
    other.unlink()
    other.write_text("someone else's\n")  # never written by ripcord at this path: left alone too
    with pytest.raises(incident.EditedError):
        postmortem.write_postmortem(meta, state / "docs", {})


def test_a_bad_escalation_file_names_its_line(tmp_path, monkeypatch):
    bad = tmp_path / "escalation.yml"
    text = (REPO / "inventory" / "escalation.yml").read_text().replace("respond_within_s: 900",
                                                                       "respond_within_s: soon")
    bad.write_text(text)
    monkeypatch.setenv("RIPCORD_ESCALATION", str(bad))
    line = next(n for n, t in enumerate(text.splitlines(), 1) if "respond_within_s: soon" in t)
    with pytest.raises(InputError, match=rf"escalation.yml:{line}: severity 2: respond_within_s"):
        incident.escalation()


def _invoke(state, *args, env=None):
    return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_the_operator_option_wins_over_the_environment(state):
    result = _invoke(state, "incident.open", "--sev", "4", "--title", "x", "-i",
                     _inventory(state)[0], "--operator", "dave")
    assert result.returncode == 0, result.stderr
    assert [r["operator"] for r in _records(state)] == ["dave"]  # RIPCORD_OPERATOR is alice
    bad = _invoke(state, "incident.close", "--operator", "")
    assert bad.returncode == 2 and "--operator" in bad.stderr and incident.open_id()


def test_bad_input_is_refused_before_anything_is_written(state, capsys):
    from invoke import Exit

    from ripcord.tasks.incident import open_

    inventory = _inventory(state)
    for args, needle in (({"sev": "5", "title": "x"}, "--sev '5'"),
                         ({"sev": "1", "title": " "}, "--title: give some text"),
                         ({"sev": "1", "title": "x", "started": "soon"}, "--since 'soon'")):
        with pytest.raises(Exit) as failed:
            open_.body(None, inventory=inventory, **args)
        assert failed.value.code == 2 and needle in capsys.readouterr().err, args
    assert not (state / "journal.jsonl").exists() and not (state / "state" / "incidents").exists()


def test_journal_show_lists_an_incidents_records_since_a_time(state):
    journal = Journal()
    journal.append({"kind": "play", "n": 0})
    meta = incident.open_incident(2, "drill", None)
    for n in (1, 2):
        journal.append({"kind": "play", "n": n})
    incident.close()
    journal.append({"kind": "play", "n": 3})
    since = _records(state)[3]["ts"]  # the second run of the incident
    result = _invoke(state, "journal.show", "--json", "--incident", meta["id"], "--since", repr(since))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)["records"]
    assert [(r["kind"], r.get("n"), r.get("action")) for r in shown] == [("play", 2, None),
                                                                         ("incident", None, "close")]


def test_the_timeline_names_failed_checks_and_tasks():
    record = {"kind": "verify", "select": "health", "pattern": "exec", "exit_code": 1,
              "checks": {"passed": 3, "failed": 1, "results": [
                  {"host": "exec-1", "id": "test_health.py::test_engine", "outcome": "failed"},
                  {"host": "exec-2", "id": "test_health.py::test_engine", "outcome": "passed"}]},
              "tasks": [{"task": "Halt", "host": "exec-2", "outcome": "unreachable"}]}
    assert postmortem.describe(record) == (
        "verify health --host exec",
        "failed (exit 1); checks 3 passed, 1 failed; test_health.py::test_engine on exec-1, "
        "task 'Halt' unreachable on exec-2")


def test_a_secret_a_run_was_given_is_redacted_from_the_incidents_later_notes(state):
    """`invoke play -e api_token=...` during an incident: the journal never holds the value, and a
    note that quotes it later is redacted (the incident keeps the run's secrets as digests)."""
    from ripcord.tasks.incident import note

    inventory = _inventory(state)
    incident.open_incident(3, "drill", None)
    playbook = state / "show.yml"
    playbook.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
                        "    - debug:\n        msg: 'the token is {{ api_token }}'\n")
    given = "tok-only-the-run-saw-42"
    result = _invoke(state, "play", str(playbook), "--host", "all", "-i", inventory[0],
                     "-e", f"api_token={given}")
    assert result.returncode == 0, result.stdout + result.stderr
    note.body(None, f"someone pasted {given}", inventory=inventory)
    assert _records(state)[-1]["text"] == "someone pasted ********"
    for path in (p for p in state.rglob("*") if p.is_file()):
        assert given.encode() not in path.read_bytes(), path


def test_escalation_yml_is_no_inventory_source(tmp_path):
    """An inventory directory (inventory/ is the default) reads every .yml in it but escalation.yml."""
    from ripcord.inventory_sources import expand_sources

    for name in ("escalation.yml", "hosts.yml"):
        (tmp_path / name).write_text((REPO / "inventory" / "escalation.yml").read_text()
                                     if name == "escalation.yml" else "all: {}\n")
    assert expand_sources([tmp_path]) == [(str(tmp_path), [str(tmp_path / "hosts.yml")])]
