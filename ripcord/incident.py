"""Incidents: what the runbooks ask people to keep (severity, roles, notes, status updates, a
timeline) kept by ripcord itself, in the journal.

An incident is a folder in the state directory (incidents/ID: incident.json, the journal's head
after each of its records, the updates rendered ready to paste) and, while it is open, a pointer
(incidents/open) that every ripcord run on this controller reads as it journals: its record then
carries the incident's id. Operator text (titles, notes, messages) is redacted of every secret
known before anything is written: -e values with secret names, the inventory's secrets, the .env
files the controller can read, and what the incident's own runs redacted (kept as salted digests,
never as values). Documents render from templates/ in Jinja2's sandbox with that text as data
(ripcord.postmortem).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets as token
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ripcord.errors import InputError, RipcordError

STATUSES = ("investigating", "identified", "monitoring", "resolved")
ROLES = {"ic": "Incident Commander", "tech": "Technical Lead", "ops": "Operations Lead",
         "comms": "Communications Lead"}
ID = re.compile(r"^inc-\d{8}-\d{6}-[0-9a-f]{4}$")
MIN_SECRET = 4  # shorter "secrets" (a port, a flag) would redact half of every note


def base() -> Path:
    from ripcord.sandbox.plan import state_base

    return state_base() / "incidents"


def open_id() -> str | None:
    """The open incident's id, or None: the pointer every run of this controller reads."""
    try:
        fd = os.open(base() / "open", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with open(fd, encoding="utf-8") as handle:
        found = handle.read().strip()
    return found if ID.match(found) else None


@contextmanager
def _locked():
    """One open or close at a time on this controller."""
    base().mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(base() / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _write(path: Path, text: str) -> None:
    """Write text whole (a temporary file renamed over it), 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


# --- escalation.yml ------------------------------------------------------------------------------

def escalation_file() -> Path:
    from ripcord.paths import data_dir

    return Path(os.environ.get("RIPCORD_ESCALATION") or data_dir("inventory") / "escalation.yml")


SEVERITY_KEYS = {"name": str, "impact": str, "response": str, "respond_within_s": int,
                 "update_every": str, "team": list, "escalation": list, "communication": str,
                 "checklist": list}


def escalation(path: Path | None = None) -> dict[str, Any]:
    """inventory/escalation.yml, checked: severities 1-4 with every key, roles ic/tech/ops/comms.
    The operator's (escalation_file) unless another path is given (the shipped defaults)."""
    path = path or escalation_file()
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", file=str(path)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise InputError(f"invalid YAML: {exc.problem}", file=str(path),
                         line=mark.line + 1 if mark else None) from None

    def fail(message: str, *keys: Any) -> None:
        node, line = root, 1
        for key in keys:  # the line of the innermost key that exists
            found = [v for k, v in getattr(node, "value", []) if isinstance(k, yaml.ScalarNode)
                     and k.value == str(key)] if isinstance(node, yaml.MappingNode) else []
            if not found:
                break
            node, line = found[0], found[0].start_mark.line + 1
        raise InputError(message, file=str(path), line=line)

    if not isinstance(data, dict):
        fail("expected a mapping with severities, roles and contacts")
    severities = data.get("severities")
    if not isinstance(severities, dict) or sorted(severities) != [1, 2, 3, 4]:
        fail("severities: expected exactly 1, 2, 3 and 4", "severities")
    for sev, spec in severities.items():
        if not isinstance(spec, dict):
            fail(f"severity {sev}: expected a mapping", "severities", sev)
        for key, kind in SEVERITY_KEYS.items():
            if not isinstance(spec.get(key), kind):
                fail(f"severity {sev}: {key}: expected a {kind.__name__}", "severities", sev, key)
    roles = data.get("roles")
    if not isinstance(roles, dict) or set(roles) != set(ROLES):
        fail(f"roles: expected exactly {', '.join(ROLES)}", "roles")
    for role, spec in roles.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("title"), str):
            fail(f"role {role}: expected a mapping with a title", "roles", role)
    if not isinstance(data.get("contacts", {}), dict):
        fail("contacts: expected a mapping", "contacts")
    return data


# --- secrets -------------------------------------------------------------------------------------

@dataclass
class Known:
    """Every secret known for redacting operator text: values, and the digests of values the
    incident's runs redacted (their values are never kept)."""

    secrets: Any  # ripcord.templating.Secrets (imported when needed: every run's journal reads this module)
    salt: bytes = b""
    digests: dict[int, set[str]] | None = None
    given: frozenset[str] = frozenset()  # the -e ones: remembered for the incident's later steps

    def redact(self, text: str) -> str:
        from ripcord.templating import REDACTED

        text = self.secrets.redact(text)
        for length in sorted(self.digests or {}, reverse=True):
            i = 0
            while i + length <= len(text):
                if _digest(self.salt, text[i:i + length]) in self.digests[length]:
                    text = text[:i] + REDACTED + text[i + length:]
                    i += len(REDACTED)
                else:
                    i += 1
        return text


def _digest(salt: bytes, value: str) -> str:
    return hmac.new(salt, value.encode(), hashlib.sha256).hexdigest()


def known_secrets(inventory_paths: list[str] | None, extra_vars: dict[str, Any],
                  incident: str | None) -> Known:
    """The secrets a note may hold: -e values with secret names, the inventory's (lookups and
    secret-named variables), the secret-named keys of each host's env_file and the controller's
    titan_hmac_secret_file where this controller can read them, and the incident's runs'."""
    from ripcord import dotenv
    from ripcord.inventory import load_operator_inventory
    from ripcord.runstate import SECRET_NAME
    from ripcord.templating import Secrets, Templar, resolve_vars

    found = Secrets()

    def add(name: str, value: Any) -> None:
        if SECRET_NAME.search(name):
            for leaf in _leaves(value):
                if len(str(leaf)) >= MIN_SECRET:
                    found.add(leaf)

    for name, value in extra_vars.items():
        add(name, value)
    given = frozenset(found.values)
    inventory = load_operator_inventory(inventory_paths)
    files: set[tuple[str, str]] = set()
    for host in inventory.select("all"):
        values = resolve_vars(Templar(found), dict(inventory.host_vars(host)))
        for name, value in values.items():
            if isinstance(value, (str, int, float, list, dict)):
                add(name, value)
        for key in ("env_file", "titan_hmac_secret_file"):
            if isinstance(values.get(key), str):
                files.add((key, values[key]))
    for key, path in sorted(files):
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # on a remote host, not this controller: the run's own redaction covers it
        entries = dotenv.parse(text) if key == "env_file" else {"secret": text.strip()}
        for name, value in entries.items():
            add(name, value)
    known = Known(found, given=given)
    if incident:
        kept = _read_json(base() / incident / "secrets.json") or {}
        known.salt = bytes.fromhex(kept.get("salt", ""))
        known.digests = {int(k): set(v) for k, v in kept.get("digests", {}).items()}
    return known


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value] if isinstance(value, (str, int, float)) and not isinstance(value, bool) else []


def remember_secrets(incident: str, values: set[str]) -> None:
    """Keep salted digests of a run's secrets in the incident's folder, so notes written later
    redact them too (the values themselves are never written)."""
    values = {v for v in values if len(v) >= MIN_SECRET}
    folder = base() / incident
    if not values or not folder.is_dir():
        return
    with _locked():
        kept = _read_json(folder / "secrets.json") or {"salt": token.token_hex(16), "digests": {}}
        salt = bytes.fromhex(kept["salt"])
        for value in values:
            digests = kept["digests"].setdefault(str(len(value)), [])
            digest = _digest(salt, value)
            if digest not in digests:
                digests.append(digest)
        _write(folder / "secrets.json", json.dumps(kept))


def _read_json(path: Path) -> Any:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with open(fd, encoding="utf-8") as handle:
        return json.load(handle)


# --- the incident ------------------------------------------------------------------------------

def load(incident: str | None = None) -> dict[str, Any]:
    """An incident's metadata: the one named, else the open one, else the last opened."""
    if incident is None:
        incident = open_id() or _latest()
        if incident is None:
            raise InputError("no incident yet", hint="open one: invoke incident.open --sev N --title TEXT")
    if not ID.match(incident):
        raise InputError(f"{incident!r} is not an incident id (inc-YYYYMMDD-HHMMSS-xxxx)")
    meta = _read_json(base() / incident / "incident.json")
    if meta is None:
        raise InputError(f"no incident {incident} in {base()}")
    return meta


def _latest() -> str | None:
    ids = sorted(p.name for p in base().glob("inc-*") if ID.match(p.name)) if base().is_dir() else []
    return ids[-1] if ids else None


def save(meta: dict[str, Any]) -> None:
    _write(base() / meta["id"] / "incident.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")


def journal(meta: dict[str, Any], action: str, **fields: Any) -> dict[str, Any]:
    """Journal one of the incident's own steps (its id given, whatever is open); the record."""
    from ripcord.journal import Journal

    record = {"kind": "incident", "action": action, "incident": meta["id"], **fields}
    found = Journal()
    found.append(record)
    return found.last


def open_incident(sev: int, title: str, started: float | None) -> dict[str, Any]:
    """Open an incident (exit 2 while another is open); journaled, then made the open one."""
    with _locked():
        current = open_id()
        if current:
            raise InputError(f"incident {current} is open", hint="close it first: invoke incident.close")
        spec = escalation()["severities"][sev]
        now = time.time()
        meta = {"id": f"inc-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}-{token.token_hex(2)}",
                "sev": sev, "title": title, "status": None, "roles": {}, "closed": None,
                "started": started}
        (base() / meta["id"]).mkdir(mode=0o700, parents=True)
        save(meta)
        record = journal(meta, "open", sev=sev, severity=spec["name"], title=title, started=started,
                         response=spec["response"])
        meta["opened"] = record["ts"]
        save(meta)
        _write(base() / "open", meta["id"] + "\n")  # from now on every run is attached
    return meta


def require_open() -> dict[str, Any]:
    current = open_id()
    if current is None:
        raise InputError("no incident is open", hint="open one: invoke incident.open --sev N --title TEXT")
    return load(current)


def assign(role: str, who: str) -> dict[str, Any]:
    contacts = escalation()["roles"][role]
    with _locked():  # incident.json: one change at a time
        meta = require_open()
        journal(meta, "assign", role=role, title=ROLES[role], who=who)
        meta["roles"][role] = who
        save(meta)
    return contacts


def note(text: str) -> dict[str, Any]:
    meta = require_open()
    return journal(meta, "note", text=text)


def update(status: str, message: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Journal a status change; the record and the metadata (its files written by the caller)."""
    with _locked():
        meta = require_open()
        record = journal(meta, "update", status=status, message=message)
        meta["status"] = status
        save(meta)
    return meta, record


def close() -> dict[str, Any]:
    """Close the open incident: no run is attached from here on, then the close is journaled."""
    with _locked():
        meta = require_open()
        os.unlink(base() / "open")
        record = journal(meta, "close", status=meta.get("status"))
        meta["closed"] = record["ts"]
        save(meta)
    return meta


def heads(incident: str) -> list[dict[str, Any]]:
    """The journal's head after each of the incident's records, as kept in its folder."""
    path = base() / incident / "heads.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def keep_head(incident: str, journal_path: Path, head: dict[str, Any]) -> None:
    """Append the journal's head (seq, hash) to the incident's folder, where a truncation of the
    journal cannot also rewrite it; `journal.verify` checks the chain still reaches it."""
    folder = base() / incident
    if not folder.is_dir():
        return
    fd = os.open(folder / "heads.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                 | os.O_CLOEXEC, 0o600)
    with open(fd, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({**head, "journal": str(Path(journal_path).resolve())}) + "\n")


def kept_heads(journal_path: Path) -> list[dict[str, Any]]:
    """The last head each incident kept for this journal file."""
    if not base().is_dir():
        return []
    where, found = str(Path(journal_path).resolve()), []
    for folder in sorted(base().glob("inc-*")):
        mine = [h for h in heads(folder.name) if h.get("journal") == where]
        if mine:
            found.append({"incident": folder.name, "seq": mine[-1]["seq"], "hash": mine[-1]["hash"]})
    return found


def records(incident: str) -> list[dict[str, Any]]:
    from ripcord.journal import Journal

    return [r for r in Journal().records() if r.get("incident") == incident]


def check_text(name: str, text: str) -> str:
    if not text or not text.strip():
        raise InputError(f"{name}: give some text")
    if len(text) > 4000:
        raise InputError(f"{name}: {len(text)} characters; at most 4000")
    return text


class EditedError(RipcordError):
    """A post-mortem people have edited is never overwritten."""
