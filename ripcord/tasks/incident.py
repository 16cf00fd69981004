"""`incident.*`: open an incident, assign the runbooks' roles, take notes, post status updates,
show it, close it and write its post-mortem (ripcord.incident, ripcord.postmortem).

While an incident is open, every ripcord run on this controller is journaled as part of it.
Titles, notes, names and messages are redacted of every known secret before they are written
(the inventory's, the .env files this controller can read, -e values with secret names, and
what the incident's runs redacted).
"""

from __future__ import annotations

import time
from pathlib import Path

from invoke import Collection

from ripcord.cli import emit_json, run_task
from ripcord.errors import InputError
from ripcord.report import inert  # operator and host text: controls shown, markup literal
from ripcord.tasks.options import INVENTORY_HELP, task

COMMON = {"inventory": INVENTORY_HELP + " (its secrets are redacted from the text)",
          "extra-vars": "-e key=value: values with secret names are redacted from the text too",
          "json": "one JSON object on stdout", "debug": "show tracebacks"}


def _emit(task_name, meta, **more):
    """The --json object: the incident as it now is and the journal's head it keeps."""
    from ripcord import incident

    heads = incident.heads(meta["id"])
    emit_json({"ok": True, "task": task_name, "incident": meta,
               "journal_head": {k: heads[-1][k] for k in ("seq", "hash")} if heads else None, **more})


def _known(inventory, extra_vars):
    """The secrets this step's text is redacted of (ripcord.incident.known_secrets)."""
    from ripcord import incident
    from ripcord.execute import parse_extra_vars

    return incident.known_secrets(inventory, parse_extra_vars(extra_vars or []), incident.open_id())


def _remember(known):
    """The -e secrets given to this step, kept (as digests) for the incident's later steps."""
    from ripcord import incident

    if incident.open_id():
        incident.remember_secrets(incident.open_id(), set(known.given))


@task(name="open", iterable=["inventory", "extra_vars"],
      help={"sev": "severity 1 (critical) .. 4 (low): inventory/escalation.yml",
            "title": "what is happening, in a line",
            "started": "when the problem began (for MTTD): an ISO time (UTC), epoch seconds or an "
                       "age (10m); default: now", **COMMON})
def open_(c, sev=None, title=None, started=None, inventory=None, extra_vars=None, json_=False, debug=False):
    """Open an incident: its id, response time, escalation path and first-response checklist."""
    from ripcord import incident
    from ripcord.tasks.journal import _since

    def body(out):
        if str(sev) not in ("1", "2", "3", "4"):
            raise InputError(f"--sev {sev!r}: give 1 (critical), 2, 3 or 4 (low)")
        text = incident.check_text("--title", title or "")
        start = _since(started) if started else None
        spec = incident.escalation()  # a bad escalation.yml is exit 2 before anything is written
        known = _known(inventory, extra_vars)
        meta = incident.open_incident(int(sev), known.redact(text), start)
        _remember(known)
        level = spec["severities"][int(sev)]
        out.print(inert(f"opened {meta['id']}: SEV{sev} ({level['name']}) {meta['title']}"),
                  highlight=False, soft_wrap=True)
        due = time.strftime("%H:%M:%S", time.gmtime(meta["opened"] + level["respond_within_s"]))
        out.print(inert(f"respond: {level['response']} (by {due} UTC); team: "
                         f"{', '.join(level['team'])}; {level['communication']}"),
                  highlight=False, soft_wrap=True)
        path = [f"{spec['contacts'].get(c, {}).get('who', c)}"
                + (f" {spec['contacts'][c]['phone']}" if spec["contacts"].get(c, {}).get("phone")
                   else "") for c in level["escalation"]]
        out.print(inert("escalation: " + " -> ".join(path)), highlight=False, soft_wrap=True)
        out.print("initial response checklist:")
        for item in level["checklist"]:
            out.print(inert(f"  [ ] {item}"), highlight=False, soft_wrap=True)
        out.print("every ripcord run on this controller is now journaled as part of it")
        if json_:
            _emit("incident.open", meta, checklist=level["checklist"])

    run_task(body, json_mode=json_, debug=debug)


@task(iterable=["inventory", "extra_vars"],
      help={"role": "ic | tech | ops | comms", "who": "the person's name", **COMMON})
def assign(c, role=None, who=None, inventory=None, extra_vars=None, json_=False, debug=False):
    """Assign one of the runbooks' response roles in the open incident."""
    from ripcord import incident

    def body(out):
        if role not in incident.ROLES:
            raise InputError(f"--role {role!r}: give one of {', '.join(incident.ROLES)}")
        known = _known(inventory, extra_vars)
        name = known.redact(incident.check_text("--who", who or ""))
        contacts = incident.assign(role, name)
        _remember(known)
        if json_:
            _emit("incident.assign", incident.load(), role=role, who=name, contacts=contacts)
        out.print(inert(f"{incident.ROLES[role]}: {name}"), highlight=False)
        for kind in ("primary", "backup"):
            if isinstance(contacts.get(kind), dict):
                entry = contacts[kind]
                out.print(inert(f"  {kind}: {entry.get('who', '')} {entry.get('phone', '')}"),
                          highlight=False)

    run_task(body, json_mode=json_, debug=debug)


@task(iterable=["inventory", "extra_vars"], help={"text": "the note", **COMMON})
def note(c, text, inventory=None, extra_vars=None, json_=False, debug=False):
    """Add a note to the open incident's timeline (secrets redacted)."""
    from ripcord import incident

    def body(out):
        known = _known(inventory, extra_vars)
        record = incident.note(known.redact(incident.check_text("the note", text)))
        _remember(known)
        if json_:
            _emit("incident.note", incident.load(), record=record)
        out.print(inert(f"noted (journal record {record['seq']}): {record['text']}"), highlight=False)

    run_task(body, json_mode=json_, debug=debug)


@task(iterable=["inventory", "extra_vars"],
      help={"status": "investigating | identified | monitoring | resolved",
            "message": "what to tell people (both updates)",
            "eta": "estimated resolution (default: Unknown)", **COMMON})
def update(c, status=None, message="", eta="Unknown", inventory=None, extra_vars=None, json_=False,
           debug=False):
    """Post a status update: journaled; the runbooks' internal and external updates written,
    ready to paste."""
    from ripcord import incident, postmortem

    def body(out):
        if status not in incident.STATUSES:
            raise InputError(f"--status {status!r}: give one of {', '.join(incident.STATUSES)}")
        known = _known(inventory, extra_vars)
        meta, record = incident.update(status, known.redact(message or ""))
        _remember(known)
        written = postmortem.write_update(meta, record, known.redact(eta or "Unknown"))
        if json_:
            _emit("incident.update", meta, record=record, files=[str(p) for p in written])
        for path in written:
            out.rule(inert(str(path)), style="dim")
            out.print(inert(path.read_text(encoding="utf-8")), highlight=False)

    run_task(body, json_mode=json_, debug=debug)


@task(help={"id": "which incident (default: the open one, else the last opened)",
            "json": "one JSON object", "debug": "show tracebacks"})
def show(c, id_=None, json_=False, debug=False):
    """The incident so far, on one screen: severity, roles, status, updates, the last records."""
    from ripcord import incident, postmortem

    def body(out):
        meta = incident.load(id_)
        records = incident.records(meta["id"])
        heads = incident.heads(meta["id"])
        if json_:
            _emit("incident.show", meta, open=incident.open_id() == meta["id"], records=records)
            return
        spec = incident.escalation()["severities"][meta["sev"]]
        state = "closed " + postmortem.when(meta["closed"]) if meta.get("closed") else "OPEN"
        lines = [f"{meta['id']}  SEV{meta['sev']} ({spec['name']}, respond {spec['response']})  {state}",
                 f"title: {meta['title']}",
                 f"opened {postmortem.when(meta.get('opened', 0))} UTC; status {meta.get('status') or '-'}",
                 "roles: " + (", ".join(f"{incident.ROLES[r]} {w}" for r, w in meta["roles"].items())
                              or "none assigned")]
        updates = [r for r in records if r.get("action") == "update"]
        if updates:
            lines.append(f"updates: {len(updates)}, the last {postmortem.when(updates[-1]['ts'])} UTC; "
                         f"next due within {spec['update_every']}")
        lines += [f"records: {len(records)}"
                  + (f"; journal head {heads[-1]['seq']}:{heads[-1]['hash'][:12]}" if heads else "")]
        for entry in postmortem.timeline(records)[-15:]:
            lines.append(f"  {entry['seq']:>5} {entry['time'][11:19]} {entry['operator']:<10} "
                         f"{entry['what']} -> {entry['result']}")
        for line in lines:
            out.print(inert(line), highlight=False, soft_wrap=True)

    run_task(body, json_mode=json_, debug=debug)


@task(help={"json": "one JSON object on stdout", "debug": "show tracebacks"})
def close(c, json_=False, debug=False):
    """Close the open incident: runs are no longer attached to it."""
    from ripcord import incident

    def body(out):
        meta = incident.close()
        if json_:
            _emit("incident.close", meta)
        out.print(f"closed {meta['id']}; write the post-mortem: invoke incident.postmortem")

    run_task(body, json_mode=json_, debug=debug)


@task(iterable=["inventory"],
      help={"id": "which incident (default: the open one, else the last opened)",
            "dir": "where post-mortems go (default: docs/incidents in the current directory)",
            "inventory": INVENTORY_HELP + " (the services of the hosts acted on)",
            "json": "one JSON object on stdout", "debug": "show tracebacks"})
def postmortem(c, id_=None, dir_="docs/incidents", inventory=None, json_=False, debug=False):
    """Write the post-mortem from the journal: timeline, MTTD/MTTA/MTTM/MTTR, hosts and services,
    and the sections people fill in. Never overwrites one that has been edited."""
    from ripcord import incident
    from ripcord import postmortem as pm
    from ripcord.inventory import load_operator_inventory

    def body(out):
        meta = incident.load(id_)
        inv = load_operator_inventory(inventory)
        acted = pm.hosts_acted_on(incident.records(meta["id"]))
        services = {h: list(inv.host_vars(h).get("services") or []) for h in sorted(acted)
                    if h in inv.select("all")}
        path = pm.write_postmortem(meta, Path(dir_), services)
        if json_:
            _emit("incident.postmortem", meta, path=str(path))
        out.print(f"wrote {path}: fill in the summary, root cause, 5 whys, lessons and action items")

    run_task(body, json_mode=json_, debug=debug)


collection = Collection("incident", open_, assign, note, update, show, close, postmortem)
