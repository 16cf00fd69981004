"""An audit's reports: HTML for people (a phone will do), JSON, JUnit XML for CI, and a Prometheus
textfile for node_exporter's textfile collector.

Every file is written whole to a temporary name and renamed over its own (atomic: a collector or
a browser never reads half a report). Host text is data: escaped in HTML and XML, quoted in
Prometheus labels, its control characters shown as escapes; no script in the HTML.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from ripcord.report import visible

if TYPE_CHECKING:
    from ripcord.audit import Audit

PROMETHEUS_FILE = "ripcord_audit.prom"  # one name, overwritten each run: what node_exporter reads
MARK = {"passed": "✓", "failed": "✗", "waived": "~", "skipped": "–", "unreachable": "⚠"}


def report_paths(directory: Path, started: float) -> dict[str, str]:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    base = directory / f"audit-{stamp}"
    return {"html": f"{base}.html", "json": f"{base}.json", "junit": f"{base}.xml",
            "prometheus": str(directory / PROMETHEUS_FILE)}


def write_reports(audit: Audit, paths: dict[str, str]) -> None:
    atomic_write(paths["json"], json.dumps({**audit.payload(), "report": paths}, indent=2) + "\n")
    atomic_write(paths["junit"], junit(audit))
    atomic_write(paths["html"], html_report(audit))
    atomic_write(paths["prometheus"], prometheus(audit))


def atomic_write(path: str, text: str) -> None:
    """Write to a temporary file in path's directory, then rename it over path."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".audit-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # node_exporter runs as its own user
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _text(value: object) -> str:
    return visible(value)


# --- Prometheus ----------------------------------------------------------------------------

def _label(value: str) -> str:
    return _text(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus(audit: Audit) -> str:
    lines = ["# HELP ripcord_check_ok 1 when the check passed on the host (or is waived), 0 when "
             "it failed or the host was unreachable.", "# TYPE ripcord_check_ok gauge"]
    for f in audit.findings:
        if f.outcome == "skipped":
            continue
        ok = 1 if f.outcome in ("passed", "waived") else 0
        lines.append(f'ripcord_check_ok{{host="{_label(f.host)}",check="{_label(f.check)}"}} {ok}')
    lines += ["# HELP ripcord_audit_duration_seconds How long the last audit took.",
              "# TYPE ripcord_audit_duration_seconds gauge",
              f"ripcord_audit_duration_seconds {audit.duration_s:.3f}",
              "# HELP ripcord_audit_timestamp_seconds When the last audit started (Unix time).",
              "# TYPE ripcord_audit_timestamp_seconds gauge",
              f"ripcord_audit_timestamp_seconds {audit.started:.3f}"]
    return "\n".join(lines) + "\n"


# --- JUnit XML -----------------------------------------------------------------------------

def junit(audit: Audit) -> str:
    """One testsuite per host, one testcase per check; a failure carries its message and diff."""
    counts = audit.counts()
    root = ET.Element("testsuites", name="ripcord audit", tests=str(counts["checks"]),
                      failures=str(counts["failed"]), errors=str(counts["unreachable"]),
                      time=f"{audit.duration_s:.3f}")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(audit.started))
    for host in audit.hosts:
        mine = [f for f in audit.findings if f.host == host]
        suite = ET.SubElement(root, "testsuite", name=_text(host), tests=str(len(mine)),
                              failures=str(sum(f.outcome == "failed" for f in mine)),
                              errors=str(sum(f.outcome == "unreachable" for f in mine)),
                              skipped=str(sum(f.outcome in ("skipped", "waived") for f in mine)),
                              timestamp=stamp)
        for f in mine:
            case = ET.SubElement(suite, "testcase", classname=_text(host), name=_text(f.check))
            if f.outcome in ("failed", "unreachable"):
                tag = "failure" if f.outcome == "failed" else "error"
                body = ET.SubElement(case, tag, message=_text(f.message), type=f.kind)
                body.text = _text(f.diff or f.message)
            elif f.outcome in ("skipped", "waived"):
                ET.SubElement(case, "skipped", message=_text(f"{f.outcome}: {f.message}"))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --- HTML ----------------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,sans-serif;margin:1rem;color:#222}
h1{font-size:1.3rem}h2{font-size:1.1rem;margin-top:1.5rem}
.bad{color:#b00}.good{color:#070}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .4rem;text-align:left;vertical-align:top}
thead th{position:sticky;top:0;background:#f4f4f4}
tbody th{position:sticky;left:0;background:#fafafa;font-weight:normal;font-family:monospace;
 word-break:break-all;max-width:45vw}
td.passed{background:#e9f7e9}td.failed,td.unreachable{background:#fde8e8}
td.waived{background:#fff6d6}td.skipped,td.none{color:#888}
summary{cursor:pointer}
pre{white-space:pre-wrap;word-break:break-all;font-size:.8rem;background:#f7f7f7;padding:.4rem}
.add{color:#070}.del{color:#b00}
"""


def _e(value: object) -> str:
    return html.escape(_text(value), quote=True)


def _diff(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        cls = "add" if line.startswith("+") and not line.startswith("+++") else \
            "del" if line.startswith("-") and not line.startswith("---") else ""
        lines.append(f'<span class="{cls}">{_e(line)}</span>' if cls else _e(line))
    return "<pre>" + "\n".join(lines) + "</pre>" if lines else ""


def _detail(f) -> str:
    return f'<p class="message">{_e(f.message)}</p>{_diff(f.diff)}'


def html_report(audit: Audit) -> str:
    """A host-by-check matrix (a row a check, a column a host); each failure's message and diff
    one click away in its cell (<details>), and listed first above the matrix."""
    counts = audit.counts()
    ok = not counts["failed"] and not counts["unreachable"]
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(audit.started))
    checks = list(dict.fromkeys(f.check for f in audit.findings))
    cells = {(f.host, f.check): f for f in audit.findings}
    bad = [f for f in audit.findings if f.outcome in ("failed", "unreachable")]
    out = ['<!doctype html><html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>ripcord audit {_e(audit.pattern)}: {'ok' if ok else 'FAILED'}</title>",
           f"<style>{STYLE}</style></head><body>",
           f'<h1>ripcord audit <span class="{"good" if ok else "bad"}">{"ok" if ok else "FAILED"}'
           f"</span></h1>",
           f"<p>--host {_e(audit.pattern)} · {when} · {audit.duration_s:.1f}s · "
           f"{counts['hosts']} hosts · {counts['passed']} passed · {counts['failed']} failed "
           f"({counts['drift']} drift) · {counts['waived']} waived · {counts['unreachable']} "
           "unreachable</p>"]
    if bad:
        out.append(f"<h2>Failures ({len(bad)})</h2>")
        for f in bad:
            out.append(f'<details class="failure"><summary><b>{_e(f.host)}</b> {_e(f.check)}'
                       f"</summary>{_detail(f)}</details>")
    out.append('<h2>Hosts and checks</h2><div class="scroll"><table id="matrix"><thead><tr>'
               "<th>check</th>" + "".join(f"<th>{_e(h)}</th>" for h in audit.hosts)
               + "</tr></thead><tbody>")
    for check in checks:
        row = [f"<tr><th scope=\"row\">{_e(check)}</th>"]
        for host in audit.hosts:
            f = cells.get((host, check))
            if f is None:
                row.append('<td class="none">·</td>')
                continue
            attrs = f'class="{f.outcome}" data-host="{_e(host)}" data-check="{_e(check)}"'
            if f.outcome in ("failed", "unreachable", "waived"):
                row.append(f"<td {attrs}><details><summary>{MARK[f.outcome]} {f.outcome}</summary>"
                           f"{_detail(f)}</details></td>")
            else:
                row.append(f'<td {attrs} title="{_e(f.message)}">{MARK.get(f.outcome, "?")}</td>')
        out.append("".join(row) + "</tr>")
    out.append("</tbody></table></div></body></html>\n")
    return "\n".join(out)
