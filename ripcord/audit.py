"""`invoke audit`: the nightly drift and health audit, with reports people and machines read.

Drift: every config a host's inventory lists in `ripcord_configs` is rendered from templates/ with
the host's variables (ripcord.hostconfigs, as the sandbox provisions it) and compared with the file
on the host, as a unified diff; a .env key by key, each secret by fingerprint only, never its value.
Where the host has titan_home/state/last_known_good.json (written by a deploy), its release and
config checksums are compared too. Health: the whole check suite (ripcord.verify).

An audit only reads: it changes nothing on a host and takes no host lock, so it can run beside a
procedure. Its journal record carries the report's paths and the counts, never a diff.
"""

from __future__ import annotations

import base64
import binascii
import collections
import difflib
import hashlib
import json
import re
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from ripcord import dotenv, hostconfigs
from ripcord.bus import fingerprint
from ripcord.errors import EXIT_FAILED, EXIT_UNREACHABLE, InputError, RipcordError
from ripcord.templating import Secrets

LAST_KNOWN_GOOD = "state/last_known_good.json"
# .env keys whose values are secrets even where a template writes a plain value (a rotation's
# TITAN_HMAC_SECRET_PREVIOUS): shown by fingerprint, as the template's own secrets are.
SECRET_KEY = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|PRIVATE|API_KEY|_KEY$", re.IGNORECASE)


@dataclass
class Finding:
    """One cell of the host-by-check matrix."""

    host: str
    check: str  # drift/<template>, drift/last_known_good, or a health check's id
    kind: str  # drift | health | connect
    outcome: str  # passed | failed | waived | skipped | unreachable
    message: str = ""
    diff: str = ""


@dataclass
class Audit:
    pattern: str
    hosts: list[str]
    started: float  # epoch seconds
    duration_s: float = 0.0
    findings: list[Finding] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        found = collections.Counter(f.outcome for f in self.findings)
        return {"hosts": len(self.hosts), "checks": len(self.findings),
                **{o: found[o] for o in ("passed", "failed", "waived", "skipped", "unreachable")},
                "drift": sum(f.kind == "drift" and f.outcome == "failed" for f in self.findings)}

    def exit_code(self) -> int:
        counts = self.counts()
        return EXIT_UNREACHABLE if counts["unreachable"] else EXIT_FAILED if counts["failed"] else 0

    def payload(self) -> dict[str, Any]:
        counts = self.counts()
        return {"ok": not counts["failed"] and not counts["unreachable"], "task": "audit",
                "pattern": self.pattern, "started": self.started, "duration_s": round(self.duration_s, 3),
                "counts": counts, "hosts": {h: _host_counts(self, h) for h in self.hosts},
                "checks": {"passed": counts["passed"], "failed": counts["failed"],
                           "waived": counts["waived"], "results": [asdict(f) for f in self.findings]}}


def _host_counts(audit: Audit, host: str) -> dict[str, int]:
    found = collections.Counter(f.outcome for f in audit.findings if f.host == host)
    return {o: found[o] for o in ("passed", "failed", "waived", "skipped", "unreachable")}


def expected_configs(inventory, hosts: list[str]) -> tuple[dict[str, dict], dict[str, list]]:
    """(resolved variables, [(entry, rendered text)]) per host: every template rendered before any
    host is touched, so a bad template or a missing variable is invalid input."""
    from ripcord.templating import Templar, resolve_vars

    templar = Templar()
    hostvars, expected = {}, {}
    for host in hosts:
        magic = {"inventory_hostname": host, "inventory_hostname_short": host.split(".")[0],
                 "group_names": sorted(g for g in inventory.groups_of(host) if g not in ("all", "ungrouped"))}
        variables = resolve_vars(templar, {**inventory.host_vars(host), **magic})
        hostvars[host] = variables
        rendered = []
        for entry in hostconfigs.configs(variables, host):
            names = hostconfigs.SecretNames() if hostconfigs.is_dotenv(entry["template"]) else {}
            text = hostconfigs.render(entry["template"], {**variables, "secrets": names})
            rendered.append((entry, text))
        expected[host] = rendered
    return hostvars, expected


def read_files(conn, paths: list[str]) -> dict[str, bytes | str]:
    """Each path's bytes, or 'missing' / 'unreadable', in one command (base64, one line a file)."""
    if not paths:
        return {}
    quoted = " ".join(shlex.quote(p) for p in paths)
    line = (f"for f in {quoted}; do if [ -f \"$f\" ] && [ -r \"$f\" ]; then printf 'ok '; "
            "base64 < \"$f\" | tr -d '\\n'; echo; elif [ -e \"$f\" ]; then echo unreadable; "
            "else echo missing; fi; done")
    try:
        out = conn.run(line)
        lines = out.stdout.splitlines()
        if out.rc != 0 or len(lines) != len(paths):
            return {p: "unreadable" for p in paths}
        return {path: base64.b64decode(text[3:], validate=True) if text.startswith("ok ") else text.strip()
                for path, text in zip(paths, lines, strict=True)}
    except (RipcordError, binascii.Error):  # a host lost mid-way: its configs could not be read
        return {p: "unreadable" for p in paths}


def _release(conn, titan_home: str) -> str:
    try:
        out = conn.run(f"readlink {shlex.quote(titan_home + '/current')}")
    except RipcordError:
        return ""
    return Path(out.stdout.strip()).name if out.rc == 0 else ""


def fingerprint_of(value: str) -> str:
    return f"sha256:{fingerprint(value)}" if value else ""


def compare_env(expected_text: str, actual_text: str, *, shared: dict[str, str],
                pinned: dict[str, str], dest: str, host: str) -> tuple[str, str]:
    """(message, diff) of a .env, key by key: plain values as they are, secrets by fingerprint.
    A secret is expected to be: the inventory's secret_fingerprints[KEY] (`pinned`), else the one
    most audited hosts hold (`shared`, by the template's secret name), else any value but none.
    ('', '') when they agree."""
    expected, actual = dotenv.parse(expected_text), dotenv.parse(actual_text)
    secret_keys = {k for k in (*expected, *actual, *pinned) if SECRET_KEY.search(k) or k in pinned}
    secret_keys |= {k for k, v in expected.items() if hostconfigs.secret_name(v)}
    have = {k: fingerprint_of(v) if k in secret_keys else v for k, v in actual.items()}
    want = {}
    for key, value in expected.items():
        name = hostconfigs.secret_name(value)
        if key in pinned:
            want[key] = _pin(pinned[key])
        elif name is not None:
            want[key] = shared.get(name) or have.get(key) or "<set>"
        else:
            want[key] = fingerprint_of(value) if key in secret_keys else value
    if want == have:
        return "", ""
    keys = sorted(k for k in {*want, *have} if want.get(k) != have.get(k))
    diff = "".join(difflib.unified_diff([f"{k}={v}\n" for k, v in want.items()],
                                        [f"{k}={v}\n" for k, v in have.items()],
                                        f"{dest} (rendered from templates/)", f"{dest} on {host}"))
    return f"{dest}: " + ", ".join(keys) + (" differs" if len(keys) == 1 else " differ"), diff


def _pin(value: str) -> str:
    value = str(value).strip()
    return value if value.startswith("sha256:") else f"sha256:{value}"


def compare_text(expected: str, actual: str, *, dest: str, host: str) -> tuple[str, str]:
    if expected == actual:
        return "", ""
    diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True),
                                        actual.splitlines(keepends=True),
                                        f"{dest} (rendered from templates/)", f"{dest} on {host}"))
    changed = sum(1 for line in diff.splitlines()[2:] if line[:1] in "+-")
    return f"{dest}: {changed} line{'s differ' if changed != 1 else ' differs'} from the template", diff


def _decode(data: bytes | str) -> str | None:
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else None


def drift(hosts_read: dict[str, dict[str, Any]], expected: dict[str, list],
          hostvars: dict[str, dict]) -> list[Finding]:
    """Findings for every config of every host read (hosts_read: host -> {files, release})."""
    shared = _shared_fingerprints(hosts_read, expected)
    findings = []
    for host, read in hosts_read.items():
        files, secrets = read["files"], _host_secrets(read["files"], expected[host])
        pinned = hostvars[host].get("secret_fingerprints") or {}
        if not expected[host]:  # said, never a silent pass: nothing was compared
            findings.append(Finding(host, "drift/configs", "drift", "skipped",
                                    "no ripcord_configs in the inventory: no config compared"))
        for entry, text in expected[host]:
            dest, check = entry["dest"], "drift/" + entry["template"].removesuffix(".j2")
            actual = _decode(files.get(dest, "missing"))
            if actual is None:
                message, diff = f"{dest}: {files.get(dest)} on the host", ""
            elif hostconfigs.is_dotenv(entry["template"]):
                message, diff = compare_env(text, actual, shared=shared, pinned=pinned, dest=dest, host=host)
            else:
                message, diff = compare_text(text, actual, dest=dest, host=host)
            findings.append(Finding(host, check, "drift", "failed" if message else "passed",
                                    secrets.redact(message), secrets.redact(diff)))
        lkg = _last_known_good(read, hostvars[host])
        if lkg is not None:
            message, diff = lkg
            findings.append(Finding(host, "drift/last_known_good", "drift",
                                    "failed" if message else "passed", secrets.redact(message),
                                    secrets.redact(diff)))
    return findings


def _host_secrets(files: dict[str, Any], expected: list) -> Secrets:
    """The secret values in a host's .env files: redacted from anything else shown of that host."""
    secrets = Secrets()
    for entry, _ in expected:
        text = _decode(files.get(entry["dest"], "missing"))
        if text is not None and hostconfigs.is_dotenv(entry["template"]):
            for key, value in dotenv.parse(text).items():
                if SECRET_KEY.search(key) and len(value) >= 6:
                    secrets.add(value)
    return secrets


def _shared_fingerprints(hosts_read: dict[str, dict], expected: dict[str, list]) -> dict[str, str]:
    """Per secret name, the fingerprint most audited hosts hold: a host whose shared secret (the
    HMAC secret, the database password) differs from the others' is drift."""
    seen: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for host, read in hosts_read.items():
        for entry, text in expected[host]:
            actual = _decode(read["files"].get(entry["dest"], "missing"))
            if actual is None or not hostconfigs.is_dotenv(entry["template"]):
                continue
            values = dotenv.parse(actual)
            for key, value in dotenv.parse(text).items():
                name = hostconfigs.secret_name(value)
                if name and values.get(key):
                    seen[name][fingerprint_of(values[key])] += 1
    return {name: counter.most_common(1)[0][0] for name, counter in seen.items()}


def _last_known_good(read: dict[str, Any], hostvars: dict) -> tuple[str, str] | None:
    """(message, diff) against titan_home/state/last_known_good.json; None when there is none."""
    data = read["files"].get(read["lkg_path"], "missing")
    if data == "missing":
        return None
    text = _decode(data)
    try:
        record = json.loads(text) if text is not None else None
    except ValueError:
        record = None
    if not isinstance(record, dict):
        return f"{read['lkg_path']}: not a JSON object", ""
    problems, lines = [], []
    version = record.get("version")
    if version is not None and str(version) != read["release"]:
        problems.append(f"current is {read['release'] or 'missing'}, last known good {version}")
        lines += [f"-version {version}\n", f"+version {read['release']}\n"]
    for path, want in sorted(_checksums(record, hostvars).items()):
        data = read["files"].get(path, "missing")
        have = hashlib.sha256(data).hexdigest() if isinstance(data, bytes) else data
        if have != want:
            problems.append(f"{path} checksum differs")
            lines += [f"-{path} {want}\n", f"+{path} {have}\n"]
    if not problems:
        return "", ""
    diff = f"--- {read['lkg_path']}\n+++ on the host\n" + "".join(lines)
    return "; ".join(problems), diff


def _checksums(record: dict, hostvars: dict) -> dict[str, str]:
    """Config checksums in a last_known_good record: {path: sha256}, paths relative to titan_home."""
    for key in ("configs", "config_checksums", "checksums"):
        table = record.get(key)
        if isinstance(table, dict):
            break
    else:
        return {}
    home = str(hostvars.get("titan_home", ""))
    found = {}
    for path, value in table.items():
        digest = value.get("sha256") if isinstance(value, dict) else value
        if isinstance(digest, str):
            full = path if str(path).startswith("/") else f"{home}/{path}"
            found[full] = digest.removeprefix("sha256:").lower()
    return found


def read_host(conn, hostvars: dict, expected: list) -> dict[str, Any]:
    """What the audit needs from one host: its configs, last_known_good.json (and the files it
    names) and the release `current` points at. Reads only."""
    home = str(hostvars.get("titan_home", ""))
    lkg_path = f"{home}/{LAST_KNOWN_GOOD}" if home else ""
    paths = [entry["dest"] for entry, _ in expected] + ([lkg_path] if lkg_path else [])
    files = read_files(conn, paths)
    read = {"files": files, "lkg_path": lkg_path, "release": ""}
    if isinstance(files.get(lkg_path), bytes):
        read["release"] = _release(conn, home)
        try:
            record = json.loads(files[lkg_path])
        except ValueError:
            record = None
        if isinstance(record, dict):
            more = [p for p in _checksums(record, hostvars) if p not in files]
            files.update(read_files(conn, more))
    return read


def run_audit(*, pattern: str, inventory_paths: list[str] | None, report_dir: str | None,
              console: Console, forks: int = 20):
    """Audit the hosts a pattern selects; write the reports; journal the run. Returns an Outcome."""
    from ripcord.auditreport import report_paths, write_reports
    from ripcord.execute import Outcome, _journal
    from ripcord.inventory import load_operator_inventory
    from ripcord.verify import DEFAULT_SELECTION, WAIVERS, connect, load_waivers, run_checks

    started, clock = time.time(), time.monotonic()
    directory = _report_dir(report_dir)
    inventory = load_operator_inventory(inventory_paths)
    hosts = inventory.select(pattern)
    hostvars, expected = expected_configs(inventory, hosts)
    load_waivers(WAIVERS)  # a malformed waivers file is invalid input, before any connection
    audit = Audit(pattern, hosts, started)
    connections, unreachable = connect(inventory, hosts, forks)
    try:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, min(forks, len(connections) or 1))) as pool:
            reads = dict(zip(connections, pool.map(
                lambda h: read_host(connections[h], hostvars[h], expected[h]), connections), strict=True))
        console.print(f"audit: drift and the check suite on {len(connections)} hosts", highlight=False)
        report = (run_checks(DEFAULT_SELECTION, connections, {h: hostvars[h] for h in connections})
                  if connections else None)
    finally:
        for conn in connections.values():
            conn.close()
    audit.findings += drift(reads, expected, hostvars)
    for result in report.results if report else []:
        audit.findings.append(Finding(result.host, result.id, "health", result.outcome, result.message))
    for host, why in unreachable.items():
        audit.findings.append(Finding(host, "connect", "connect", "unreachable", why))
    audit.findings.sort(key=lambda f: (hosts.index(f.host) if f.host in hosts else len(hosts),
                                       f.kind != "connect", f.kind != "drift", f.check))
    audit.duration_s = time.monotonic() - clock
    paths = report_paths(directory, started)
    write_reports(audit, paths)
    code = audit.exit_code()
    counts = audit.counts()
    failed = [f"{f.host} {f.check}" for f in audit.findings if f.outcome in ("failed", "unreachable")]
    journal_id, head = _journal({"kind": "audit", "pattern": pattern, "report": paths,
                                 "counts": counts, "failed": failed, "exit_code": code,
                                 "duration_s": round(audit.duration_s, 3)})
    _show(console, audit, paths)
    payload = {**audit.payload(), "report": paths, "journal_id": journal_id, "journal_head": head}
    if journal_id is None:
        code, payload["ok"] = code or EXIT_FAILED, False
    return Outcome(code, payload)


def _report_dir(given: str | None) -> Path:
    """--report-dir, else <state dir>/audit; made now, so an unusable one is invalid input."""
    from ripcord.sandbox.plan import state_base

    directory = Path(given).expanduser() if given else state_base() / "audit"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--report-dir {directory}: {exc.strerror}") from None
    if not directory.is_dir():
        raise InputError(f"--report-dir {directory} is not a directory")
    return directory


def _show(console: Console, audit: Audit, paths: dict[str, str]) -> None:
    from ripcord.report import inert

    for finding in audit.findings:
        if finding.outcome in ("failed", "unreachable"):
            style = "bold red" if finding.outcome == "failed" else "bold magenta"
            console.print(f"[{style}]{finding.outcome.upper()}[/] {inert(finding.host)} "
                          f"{inert(finding.check)}: {inert(finding.message)}", soft_wrap=True)
    counts = audit.counts()
    console.print(f"audit: {counts['hosts']} hosts, {counts['passed']} passed, {counts['failed']} "
                  f"failed ({counts['drift']} drift), {counts['waived']} waived, "
                  f"{counts['unreachable']} unreachable in {audit.duration_s:.1f}s", highlight=False)
    console.print(f"report: {inert(paths['html'])}", highlight=False, soft_wrap=True)
