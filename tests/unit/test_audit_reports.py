"""The audit's comparisons and report writers, without a fleet: secrets only ever as fingerprints,
host text inert in HTML and XML, and files that Prometheus's and JUnit's readers accept."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

from prometheus_client.parser import text_string_to_metric_families

from ripcord import audit, auditreport, hostconfigs

SECRET = "s3cr3t-hmac-value-0123456789"
TEMPLATE_ENV = ("TITAN_HOST=exec-1\nTITAN_HMAC_SECRET=@@secret:hmac_secret@@\n"
                "TITAN_HMAC_SECRET_PREVIOUS=\nTITAN_SIGNAL_INTERVAL_S=3\n")


def fp(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:8]


def test_env_secrets_are_compared_and_shown_by_fingerprint_only():
    same = TEMPLATE_ENV.replace("@@secret:hmac_secret@@", SECRET)
    kwargs = {"shared": {"hmac_secret": fp(SECRET)}, "pinned": {}, "dest": "/h/.env", "host": "exec-1"}
    assert audit.compare_env(TEMPLATE_ENV, same, **kwargs) == ("", "")
    other = same.replace(SECRET, "another-secret-value").replace("PREVIOUS=", "PREVIOUS=old-secret-1")
    message, diff = audit.compare_env(TEMPLATE_ENV, other, **kwargs)
    assert message == "/h/.env: TITAN_HMAC_SECRET, TITAN_HMAC_SECRET_PREVIOUS differ"
    assert f"-TITAN_HMAC_SECRET={fp(SECRET)}\n" in diff
    assert f"+TITAN_HMAC_SECRET={fp('another-secret-value')}\n" in diff
    assert f"+TITAN_HMAC_SECRET_PREVIOUS={fp('old-secret-1')}\n" in diff
    for value in (SECRET, "another-secret-value", "old-secret-1"):
        assert value not in message + diff
    # pinned by the inventory (secret_fingerprints) beats what the hosts hold
    pinned = {**kwargs, "pinned": {"TITAN_HMAC_SECRET": fp("rotated")[7:]}}
    assert "TITAN_HMAC_SECRET differs" in audit.compare_env(TEMPLATE_ENV, same, **pinned)[0]
    # no host holds the secret: expected set, found empty
    message, _ = audit.compare_env(TEMPLATE_ENV, same.replace(SECRET, ""), **{**kwargs, "shared": {}})
    assert message == "/h/.env: TITAN_HMAC_SECRET differs"


def _read(env_text: str, conf_text: str, lkg: dict | None = None, release: str = "1.0") -> dict:
    files = {"/h/.env": env_text.encode(), "/h/app.conf": conf_text.encode()}
    if lkg is not None:
        files["/h/state/last_known_good.json"] = json.dumps(lkg).encode()
    return {"files": files, "lkg_path": "/h/state/last_known_good.json", "release": release}


EXPECTED = [({"template": "titan.env.j2", "dest": "/h/.env"}, TEMPLATE_ENV),
            ({"template": "app.conf.j2", "dest": "/h/app.conf"}, "a=1\n")]


def test_a_host_whose_shared_secret_differs_from_the_others_drifts_and_secrets_are_redacted():
    env = TEMPLATE_ENV.replace("@@secret:hmac_secret@@", SECRET)
    odd = TEMPLATE_ENV.replace("@@secret:hmac_secret@@", "odd-one-out-secret")
    reads = {"a": _read(env, "a=1\n"), "b": _read(env, "a=1\n"),
             "c": _read(odd, f"a=1\nkey={'odd-one-out-secret'}\n")}
    vars_ = {h: {"titan_home": "/h"} for h in reads}
    found = audit.drift(reads, {h: EXPECTED for h in reads}, vars_)
    failed = [(f.host, f.check) for f in found if f.outcome == "failed"]
    assert failed == [("c", "drift/titan.env"), ("c", "drift/app.conf")]
    conf = next(f for f in found if f.host == "c" and f.check == "drift/app.conf")
    assert "+key=********" in conf.diff and "odd-one-out-secret" not in conf.diff  # from c's .env


def test_last_known_good_version_and_checksums():
    env = TEMPLATE_ENV.replace("@@secret:hmac_secret@@", SECRET)
    good = hashlib.sha256(b"a=1\n").hexdigest()
    lkg = {"version": "1.0", "configs": {"app.conf": f"sha256:{good}"}, "time": 1}
    reads = {"a": _read(env, "a=1\n", lkg), "b": _read(env, "a=2\n", lkg, release="0.9"),
             "c": _read(env, "a=1\n")}
    vars_ = {h: {"titan_home": "/h"} for h in reads}
    found = {(f.host, f.check): f for f in audit.drift(reads, {h: EXPECTED for h in reads}, vars_)}
    assert found["a", "drift/last_known_good"].outcome == "passed"
    bad = found["b", "drift/last_known_good"]
    assert bad.outcome == "failed"
    assert bad.message == "current is 0.9, last known good 1.0; /h/app.conf checksum differs"
    assert ("c", "drift/last_known_good") not in found  # no file: nothing to compare, quietly
    # as a deploy writes it (ripcord/modules/release.py): absolute paths, bare hex digests
    deployed = {"version": "1.0", "time": "2026-12-06T13:00:00Z", "host": "a",
                "config_checksums": {"/h/app.conf": good, "/h/.env": hashlib.sha256(b"x").hexdigest()}}
    found = audit.drift({"a": _read(env, "a=1\n", deployed)}, {"a": EXPECTED}, {"a": {"titan_home": "/h"}})
    assert [(f.check, f.message) for f in found if f.outcome == "failed"] == [
        ("drift/last_known_good", "/h/.env checksum differs")]


HOSTILE = '<script>alert(1)</script><img src=x onerror=alert(2)> "quoted" \x1b[31m'


def sample() -> audit.Audit:
    run = audit.Audit("sandbox", ["exec-1", "exec-2"], started=1_800_000_000.0, duration_s=3.5)
    run.findings = [
        audit.Finding("exec-1", "drift/titan.env", "drift", "failed", f"env differs {HOSTILE}",
                      f"--- a\n+++ b\n-X=1\n+X={HOSTILE}\n"),
        audit.Finding("exec-1", 'test_x.py::test_"q"\\n', "health", "passed"),
        audit.Finding("exec-2", "drift/titan.env", "drift", "passed"),
        audit.Finding("exec-2", 'test_x.py::test_"q"\\n', "health", "skipped", "not here"),
    ]
    return run


class Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.failed = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "td" and attrs.get("class") == "failed":
            self.failed.append((attrs["data-host"], attrs["data-check"]))


def test_html_report_escapes_host_text_and_has_no_script():
    text = auditreport.html_report(sample())
    parsed = Cells()
    parsed.feed(text)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert parsed.failed == [("exec-1", "drift/titan.env")]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "\x1b" not in text and "\\x1b[31m" in text
    assert '<meta name="viewport"' in text and "<details>" in text


def test_prometheus_textfile_parses_with_escaped_labels():
    families = {f.name: f for f in text_string_to_metric_families(auditreport.prometheus(sample()))}
    samples = {(s.labels["host"], s.labels["check"]): s.value for s in families["ripcord_check_ok"].samples}
    assert samples == {("exec-1", "drift/titan.env"): 0.0, ("exec-1", 'test_x.py::test_"q"\\n'): 1.0,
                       ("exec-2", "drift/titan.env"): 1.0}  # skipped: no sample
    assert families["ripcord_audit_duration_seconds"].samples[0].value == 3.5
    assert families["ripcord_audit_timestamp_seconds"].samples[0].value == 1_800_000_000.0


def test_junit_is_suites_of_hosts_with_one_failure_carrying_the_diff():
    root = ET.fromstring(auditreport.junit(sample()))
    assert root.tag == "testsuites" and root.get("failures") == "1"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"exec-1", "exec-2"}
    failures = [(s.get("name"), c.get("name"), c.find("failure"))
                for s in suites.values() for c in s.findall("testcase") if c.find("failure") is not None]
    assert [(h, n) for h, n, _ in failures] == [("exec-1", "drift/titan.env")]
    assert "+X=<script>" in failures[0][2].text and "\x1b" not in failures[0][2].text
    assert suites["exec-2"].get("skipped") == "1"


def test_reports_are_written_whole_and_named_per_run(tmp_path):
    paths = auditreport.report_paths(tmp_path, 1_800_000_000.0)
    auditreport.write_reports(sample(), paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audit-20270115T080000Z.html", "audit-20270115T080000Z.json", "audit-20270115T080000Z.xml",
        "ripcord_audit.prom"]  # no temporary file left behind
    assert json.loads((tmp_path / "audit-20270115T080000Z.json").read_text())["counts"]["failed"] == 1


def test_secret_names_render_as_marks_never_values():
    text = hostconfigs.render("titan.env.j2", {
        "inventory_hostname": "exec-1", "titan_role": "exec", "nats_url": "n", "redis_url": "r",
        "postgres_host": "h", "postgres_port": 1, "postgres_db": "d", "postgres_user": "u",
        "exchange_url": "e", "titan_home": "/t", "brain_url": "b", "titan_symbols": "S",
        "titan_signal_interval_s": 3, "service_ports": {"titan-execution": 5},
        "secrets": hostconfigs.SecretNames()})
    assert "EXCHANGE_API_KEY=@@secret:exchange_key:exec-1@@\n" in text
    assert hostconfigs.secret_name("@@secret:hmac_secret@@") == "hmac_secret"
    assert "TITAN_EXECUTION_PORT=5\n" in text


def test_a_variable_the_inventory_lacks_is_invalid_input_naming_the_template_line():
    import pytest

    from ripcord.errors import InputError

    with pytest.raises(InputError, match=r"templates/nats.conf.j2:3: cannot render: 'nats_monitor_port'"):
        hostconfigs.render("nats.conf.j2", {"inventory_hostname": "db-1", "nats_port": 1})
    with pytest.raises(InputError, match="no template '../x.j2'"):
        hostconfigs.render("../x.j2", {})


def test_a_host_without_ripcord_configs_says_nothing_was_compared():
    reads = {"a": {"files": {}, "lkg_path": "/h/state/last_known_good.json", "release": ""}}
    found = audit.drift(reads, {"a": []}, {"a": {}})
    assert [(f.check, f.outcome) for f in found] == [("drift/configs", "skipped")]


class ShellConn:
    """A connection whose commands run in a local sh, as a host's shell would run them."""

    def run(self, line):
        import subprocess
        from types import SimpleNamespace

        done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=30)
        return SimpleNamespace(rc=done.returncode, stdout=done.stdout, stderr=done.stderr)


class LostConn:
    def run(self, line):
        from ripcord.errors import UnreachableError

        raise UnreachableError("connection lost")


def test_files_are_read_byte_for_byte_in_one_command_and_a_lost_host_reads_as_unreadable(tmp_path):
    odd = tmp_path / "it's a file\nwith $(no) expansion"
    odd.write_bytes(b"a=1\n\xff\x00binary\n" * 100)
    (tmp_path / "empty").write_bytes(b"")
    paths = [str(odd), str(tmp_path / "empty"), str(tmp_path / "absent"), str(tmp_path)]
    assert audit.read_files(ShellConn(), paths) == {
        str(odd): odd.read_bytes(), str(tmp_path / "empty"): b"", str(tmp_path / "absent"): "missing",
        str(tmp_path): "unreadable"}
    assert audit.read_files(LostConn(), paths[:1]) == {str(odd): "unreadable"}
