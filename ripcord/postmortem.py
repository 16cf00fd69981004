"""An incident's documents, written from its journal records: the timeline, the response times
(MTTD/MTTA/MTTM/MTTR), the runbooks' status updates and the post-mortem.

Everything here is read from the journal, record by record, so the post-mortem says what was
done, by whom and when, rather than what people remember. Templates (templates/*.j2) render in
Jinja2's immutable sandbox; journal and operator text is passed to them as data (Unsafe), never
rendered itself. A post-mortem ripcord wrote is written again only while it is exactly what
ripcord wrote (its hash is kept in the incident's folder): an edited one is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ripcord import incident
from ripcord.report import visible
from ripcord.unsafe import wrap


def when(ts: float, ms: bool = False) -> str:
    """A UTC time; to the millisecond in the timeline, where the response times come from."""
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))
    return text + f".{_ms(ts) % 1000:03d}" if ms else text


def _ms(ts: float) -> int:
    return int(ts * 1000)


def describe(record: dict[str, Any]) -> tuple[str, str]:
    """(what was done, how it ended) for one journal record."""
    kind, action = record.get("kind"), record.get("action")
    if kind == "incident":
        what = {"open": lambda r: f"incident opened: SEV{r.get('sev')} {r.get('title', '')}",
                "assign": lambda r: f"{r.get('title', r.get('role'))}: {r.get('who', '')}",
                "note": lambda r: f"note: {r.get('text', '')}",
                "update": lambda r: f"status {r.get('status')}" + (f": {r['message']}"
                                                                   if r.get("message") else ""),
                "close": lambda r: "incident closed"}.get(action, lambda r: f"incident {action}")
        return what(record), "journaled"
    code = record.get("exit_code")
    result = "ok" if code == 0 else f"failed (exit {code})" if code is not None else "-"
    checks = record.get("checks") or {}
    if checks.get("passed") or checks.get("failed"):
        result += f"; checks {checks.get('passed', 0)} passed, {checks.get('failed', 0)} failed"
    failures = [f"{c.get('id')} on {c.get('host')}" for c in checks.get("results") or []
                if isinstance(c, dict) and c.get("outcome") == "failed"]
    failures += [f"task {t.get('task')!r} {t.get('outcome')} on {t.get('host')}"
                 for t in record.get("tasks") or []
                 if isinstance(t, dict) and t.get("outcome") in ("failed", "unreachable")]
    if failures:
        result += "; " + ", ".join(failures[:3]) + (f" and {len(failures) - 3} more"
                                                     if len(failures) > 3 else "")
    if kind == "play":
        hosts = record.get("hosts") or {}
        changed = sum(1 for h in hosts.values() if isinstance(h, dict) and h.get("changed"))
        result += f"; {len(hosts)} hosts, {changed} changed"
        what = f"{Path(str(record.get('playbook', '?'))).stem} --host {record.get('pattern', '?')}"
        what += " --check" if record.get("check") else ""
        what += f" (reason: {record['reason']})" if record.get("reason") else ""
        return what, result
    if kind == "verify":
        return f"verify {record.get('select', '')} --host {record.get('pattern', '?')}", result
    return f"{kind} {record.get('procedure', '')}".strip(), result


def timeline(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"seq": r.get("seq"), "ts": r.get("ts", 0), "time": when(r.get("ts", 0), ms=True),
             "operator": r.get("operator", "?"), "kind": r.get("kind"),
             "what": describe(r)[0], "result": describe(r)[1]} for r in records]


def moments(records: list[dict[str, Any]], started: float | None) -> dict[str, float | None]:
    """The incident's moments, from its records' times: started (given at open), detected (the
    open), acknowledged (the first record after it: someone acted), mitigated (the first status
    monitoring or resolved), resolved (the first status resolved, else the close)."""
    opened = next((r for r in records if r.get("action") == "open"), None)
    if opened is None:
        raise incident.InputError("the journal holds no open record for this incident")
    after = [r for r in records if r.get("seq", 0) > opened.get("seq", 0)]
    updates = [r for r in after if r.get("kind") == "incident" and r.get("action") == "update"]
    close = next((r["ts"] for r in after if r.get("action") == "close"), None)
    return {"started": started, "detected": opened["ts"],
            "acknowledged": after[0]["ts"] if after else None,
            "mitigated": next((r["ts"] for r in updates if r.get("status") in ("monitoring",
                                                                                 "resolved")), None),
            "resolved": next((r["ts"] for r in updates if r.get("status") == "resolved"), close)}


METRICS = (("MTTD", "time to detect", "started", "detected"),
           ("MTTA", "time to acknowledge", "detected", "acknowledged"),
           ("MTTM", "time to mitigate", "detected", "mitigated"),
           ("MTTR", "time to resolve", "detected", "resolved"))


def metrics(found: dict[str, float | None]) -> list[dict[str, Any]]:
    """Each MTTx: seconds between its two moments (None when one is not known)."""
    rows = []
    for name, meaning, start, end in METRICS:
        a, b = found[start], found[end]  # to the millisecond, as the timeline shows them
        seconds = (_ms(b) - _ms(a)) / 1000 if a is not None and b is not None else None
        rows.append({"name": name, "meaning": meaning, "seconds": seconds,
                     "from": f"{start} {when(a, ms=True)}" if a is not None else f"{start}: not known",
                     "to": f"{end} {when(b, ms=True)}" if b is not None else f"{end}: not known",
                     "text": f"{seconds:.3f} s ({_clock(seconds)})" if seconds is not None else "n/a"})
    return rows


def _clock(seconds: float) -> str:
    whole = int(max(seconds, 0))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def hosts_acted_on(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Hosts the incident's runs reached, with their outcome counts summed."""
    found: dict[str, dict[str, int]] = {}
    for record in records:
        for host, counts in (record.get("hosts") or {}).items():
            if isinstance(counts, dict):
                mine = found.setdefault(host, {})
                for key, value in counts.items():
                    if isinstance(value, int) and value:
                        mine[key] = mine.get(key, 0) + value
    return found


def _cell(text: Any) -> str:
    """A value for one markdown table cell: one line, no pipe that would split it."""
    return visible(" ".join(str(text).split())).replace("|", "\\|")


def render(name: str, **data: Any) -> str:
    """templates/NAME in Jinja2's immutable sandbox; data is passed as Unsafe values."""
    from ripcord.paths import data_dir

    env = ImmutableSandboxedEnvironment(loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
                                        undefined=jinja2.StrictUndefined, autoescape=False,
                                        keep_trailing_newline=True)
    env.filters["cell"] = _cell
    env.filters["line"] = lambda text: visible(" ".join(str(text).split()))
    return env.get_template(name).render(**wrap(data))


def context(meta: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """What every document of the incident shows."""
    spec = incident.escalation()["severities"][meta["sev"]]
    acted = hosts_acted_on(records)
    return {"incident": meta["id"], "sev": meta["sev"], "severity": spec["name"],
            "response": spec["response"], "escalation_path": spec["escalation"], "title": meta["title"],
            "status": meta.get("status") or "investigating", "update_every": spec["update_every"],
            "roles": {incident.ROLES[r]: who for r, who in meta.get("roles", {}).items()},
            "ic": meta.get("roles", {}).get("ic") or "unassigned",
            "hosts": sorted(acted), "acted": acted,
            "status_page": incident.escalation().get("status_page", "(status page)")}


def write_update(meta: dict[str, Any], record: dict[str, Any], eta: str) -> list[Path]:
    """The runbooks' internal and external updates for one status change, in the folder."""
    records = incident.records(meta["id"])
    data = context(meta, records)
    runs = [e for e in timeline(records) if e["kind"] not in ("incident",)]
    data.update(timestamp=when(record["ts"]) + " UTC", status=record["status"],
                message=record.get("message") or "", eta=eta,
                actions=[f"{e['what']}: {e['result']}" for e in runs[-5:]],
                next_update=f"within {data['update_every']}")
    folder = incident.base() / meta["id"] / "updates"
    folder.mkdir(mode=0o700, exist_ok=True)
    written = []
    for audience in ("internal", "external"):
        path = folder / f"{record['seq']:06d}-{record['status']}-{audience}.md"
        incident._write(path, render(f"incident-update-{audience}.md.j2", **data))
        written.append(path)
    return written


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:50].strip("-") or "incident"


def write_postmortem(meta: dict[str, Any], out_dir: Path, services: dict[str, list[str]]) -> Path:
    """Write the post-mortem to out_dir/YYYY-MM-DD-<slug>.md; never over one that was edited."""
    if meta.get("closed") is None:
        raise incident.InputError(f"incident {meta['id']} is still open",
                                  hint="close it first: invoke incident.close")
    records = incident.records(meta["id"])
    found = moments(records, meta.get("started"))
    data = context(meta, records)
    heads = incident.heads(meta["id"])
    data.update(date=time.strftime("%Y-%m-%d", time.gmtime(meta["opened"])),
                opened=when(meta["opened"]), closed=when(meta["closed"]), timeline=timeline(records),
                metrics=metrics(found), services=services,
                duration=_clock(meta["closed"] - meta["opened"]),
                head=heads[-1] if heads else {"seq": "?", "hash": "?"})
    text = render("postmortem.md.j2", **data)
    path = Path(out_dir) / f"{data['date']}-{slug(meta['title'])}.md"
    kept_file = incident.base() / meta["id"] / "postmortem.json"
    kept = incident._read_json(kept_file) or {}
    if path.exists():
        current = hashlib.sha256(path.read_bytes()).hexdigest()
        if kept.get("path") != str(path.resolve()) or kept.get("sha256") != current:
            raise incident.EditedError(f"{path} has been edited since ripcord wrote it (or ripcord "
                                       "did not write it): left as it is",
                                       hint="move it away to have ripcord write it again")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    incident._write(kept_file, json.dumps({"path": str(path.resolve()),
                                           "sha256": hashlib.sha256(text.encode()).hexdigest()}))
    return path
