"""`invoke audit` on the session fleet: a fresh fleet audits clean; a hand edit of one host's .env
(made with the system ssh client) is reported as exactly that drift, its secret by fingerprint
only; the reports read back through their own readers: headless Chromium for the HTML,
prometheus_client's parser for the textfile, xml.etree for the JUnit XML."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

HOST = "core-1"  # runs no reader of the HMAC secret (checks/test_secrets.py): only drift changes


def audit(ripcord, report_dir: Path):
    result = ripcord("audit", "--host", "sandbox", "--report-dir", str(report_dir), "--json")
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def failures(payload: dict) -> list[tuple[str, str]]:
    return [(r["host"], r["check"]) for r in payload["checks"]["results"]
            if r["outcome"] in ("failed", "unreachable")]


def prometheus_samples(path: str) -> dict:
    families = {f.name: f for f in text_string_to_metric_families(Path(path).read_text())}
    assert families["ripcord_audit_duration_seconds"].samples[0].value > 0
    assert families["ripcord_audit_timestamp_seconds"].samples[0].value > 1.7e9
    return {(s.labels["host"], s.labels["check"]): s.value for s in families["ripcord_check_ok"].samples}


def junit_failures(path: str) -> list[tuple[str, str, str]]:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    found = []
    for suite in root.findall("testsuite"):
        assert suite.get("name") and int(suite.get("tests")) == len(suite.findall("testcase"))
        for case in suite.findall("testcase"):
            for failure in case.findall("failure") + case.findall("error"):
                found.append((suite.get("name"), case.get("name"), failure.text or ""))
    return found


def test_a_fresh_fleet_audits_clean(ripcord, tmp_path):
    code, payload = audit(ripcord, tmp_path)
    assert (code, failures(payload)) == (0, [])
    hosts = {"db-1", "core-1", "exec-1", "exec-2"}
    drift_checks = {(r["host"], r["check"]) for r in payload["checks"]["results"] if r["kind"] == "drift"}
    assert {h for h, _ in drift_checks} == hosts and ("db-1", "drift/nats.conf") in drift_checks
    samples = prometheus_samples(payload["report"]["prometheus"])
    assert samples and set(samples.values()) == {1.0}
    assert junit_failures(payload["report"]["junit"]) == []


class FailedCells(HTMLParser):
    """The matrix's failed cells in a DOM: (host, check, the cell's text)."""

    def __init__(self):
        super().__init__()
        self.cells, self.current, self.depth = [], None, 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "td" and attrs.get("class") == "failed":
            self.current = [attrs["data-host"], attrs["data-check"], ""]
            self.depth = 0
        elif tag == "td" and self.current:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag == "td" and self.current:
            self.cells.append(tuple(self.current))
            self.current = None

    def handle_data(self, data):
        if self.current:
            self.current[2] += data


def rendered_dom(path: str, profile: Path) -> str:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (make system-deps installs it)"
    result = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                             f"--user-data-dir={profile}", "--dump-dom", Path(path).as_uri()],
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 0 and "<table" in result.stdout, result.stderr[-500:]
    return result.stdout


@pytest.fixture
def hand_edited_env(access):
    """core-1's .env with one plain value and its HMAC secret changed by hand over ssh (in place),
    put back byte for byte afterwards."""
    original = access.ssh(HOST, 'cat "$TITAN_HOME/.env"').stdout
    edited = "".join("TITAN_SIGNAL_INTERVAL_S=7\n" if line.startswith("TITAN_SIGNAL_INTERVAL_S=")
                     else "TITAN_HMAC_SECRET=hand-edited-secret-4f2a9c\n"
                     if line.startswith("TITAN_HMAC_SECRET=") else line
                     for line in original.splitlines(keepends=True))
    assert edited.count("\n") == original.count("\n") and edited != original

    def write(text: str) -> None:
        subprocess.run([*access.ssh_argv(HOST), 'cat > "$TITAN_HOME/.env"'], input=text, text=True,
                       check=True, timeout=30)
        assert access.ssh(HOST, 'cat "$TITAN_HOME/.env"').stdout == text

    write(edited)
    try:
        yield original
    finally:
        write(original)


def test_a_hand_edit_is_reported_as_exactly_that_drift(ripcord, access, hand_edited_env, tmp_path):
    before = dict(line.split("=", 1) for line in hand_edited_env.splitlines() if "=" in line)
    secrets = [v for k, v in before.items() if v and ("SECRET" in k or "KEY" in k or "PASSWORD" in k)]
    code, payload = audit(ripcord, tmp_path / "reports")
    assert code == 1
    assert failures(payload) == [(HOST, "drift/titan.env")]
    finding = next(r for r in payload["checks"]["results"] if r["outcome"] == "failed")
    old_fp = "sha256:" + hashlib.sha256(access.env("exec-1")["TITAN_HMAC_SECRET"].encode()).hexdigest()[:8]
    new_fp = "sha256:" + hashlib.sha256(b"hand-edited-secret-4f2a9c").hexdigest()[:8]
    changed = [line for line in finding["diff"].splitlines()[2:] if line[:1] in "+-"]
    assert changed == [f"-TITAN_HMAC_SECRET={old_fp}", f"+TITAN_HMAC_SECRET={new_fp}",
                       "-TITAN_SIGNAL_INTERVAL_S=3", "+TITAN_SIGNAL_INTERVAL_S=7"]
    assert finding["message"].endswith("TITAN_HMAC_SECRET, TITAN_SIGNAL_INTERVAL_S differ")

    report = payload["report"]
    for path in report.values():  # no secret, old or hand-made, in any report
        text = Path(path).read_text()
        for value in [*secrets, "hand-edited-secret-4f2a9c"]:
            assert value not in text, path

    cells = FailedCells()
    cells.feed(rendered_dom(report["html"], tmp_path / "chromium"))
    assert [(h, c) for h, c, _ in cells.cells] == [(HOST, "drift/titan.env")]
    assert "+TITAN_SIGNAL_INTERVAL_S=7" in cells.cells[0][2] and new_fp in cells.cells[0][2]

    samples = prometheus_samples(report["prometheus"])
    assert {k for k, v in samples.items() if v != 1.0} == {(HOST, "drift/titan.env")}
    assert [(h, n) for h, n, _ in junit_failures(report["junit"])] == [(HOST, "drift/titan.env")]
    assert "+TITAN_SIGNAL_INTERVAL_S=7" in junit_failures(report["junit"])[0][2]

    record = [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text().splitlines()][-1]
    assert (record["kind"], record["report"]) == ("audit", report)
    assert record["failed"] == [f"{HOST} drift/titan.env"]
    assert record["counts"]["failed"] == 1 and record["counts"]["drift"] == 1


def test_bad_input_touches_nothing_and_writes_no_report(ripcord, tmp_path):
    result = ripcord("audit", "--host", "no-such-host", "--report-dir", str(tmp_path / "r"))
    assert result.returncode == 2, result.stderr
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
    blocked = tmp_path / "file"
    blocked.write_text("")
    result = ripcord("audit", "--host", "sandbox", "--report-dir", str(blocked / "r"))
    assert result.returncode == 2 and "--report-dir" in result.stderr
