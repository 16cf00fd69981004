"""The incident timeline: an append-only, hash-chained record of every run.

Each line is one JSON record carrying the hash of the record before it, so an edited or deleted
entry breaks the chain and `verify()` says where. Secrets are redacted before anything is written.
The file is created 0600 (by open itself, never readable by others for a moment) and is never
opened through a symlink. A corrupt line never stops a run from being journaled: append() chains
the new record to the last good one, names the bad lines in a one-line warning on stderr and in
the record's `journal_problems`, and verify() reports them by line number.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ripcord import __version__
from ripcord.sandbox.plan import state_base

GENESIS = "0" * 64


def default_path() -> Path:
    return Path(os.environ.get("RIPCORD_JOURNAL") or state_base() / "journal.jsonl")


def operator() -> str:
    """Who is running ripcord: config's operator (ripcord.yaml, RIPCORD_OPERATOR), else the login name."""
    from ripcord.config import value

    return value("operator")


def _digest(prev: str, record: dict[str, Any]) -> str:
    body = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev + body).encode()).hexdigest()


class Journal:
    def __init__(self, path: Path | None = None):
        self.path = Path(path or default_path())
        self.head: dict[str, Any] | None = None  # after append(): {seq, hash} of the chain's end
        self.last: dict[str, Any] | None = None  # after append(): the record as written

    def append(self, record: dict[str, Any], secrets: set[str] | None = None) -> str:
        """Add a record (id, time, operator, controller and version filled in); returns its id.

        While an incident is open (ripcord.incident), the record carries its id, the incident's
        folder keeps the chain's new head, and `secrets` (the run's, already redacted from the
        record) are remembered there as digests, for the incident's notes to redact."""
        from ripcord import incident
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        entry = {"id": uuid.uuid4().hex[:12], "ts": time.time(), "operator": operator(),
                 "controller": socket.gethostname(), "ripcord_version": __version__, **record}
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with open(fd, "a+b") as handle:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)  # a file made by an older ripcord
            fcntl.flock(handle, fcntl.LOCK_EX)  # concurrent runs append one at a time
            last, bad = _tail(handle)
            prev = last["hash"] if last else GENESIS
            if bad:
                entry["journal_problems"] = [f"{bad} line{'s' if bad > 1 else ''} before this "
                                             "record: not a journal record"]
                sys.stderr.write(f"warning: {self.path}: the last {bad} line(s) are not journal "
                                 "records (corrupt); this run's record is chained to the last good "
                                 "one (`invoke journal.verify` names them)\n")
            if "incident" not in entry and incident.open_id():  # under the lock: see close()
                entry["incident"] = incident.open_id()
            entry["seq"] = _seq(last, handle) + 1
            entry["prev"] = prev
            entry["hash"] = _digest(prev, entry)
            handle.write((json.dumps(entry, sort_keys=True, default=str) + "\n").encode())
            handle.flush()
            os.fsync(handle.fileno())
            self.head = {"seq": entry["seq"], "hash": entry["hash"]}
            if entry.get("incident"):
                incident.keep_head(entry["incident"], self.path, self.head)
        if entry.get("incident") and secrets:
            incident.remember_secrets(entry["incident"], secrets)
        self.last = entry
        return entry["id"]

    def _lines(self) -> list[tuple[int, dict[str, Any] | None]]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        with open(fd, "rb") as handle:
            return list(_scan(handle.read()))

    def records(self) -> list[dict[str, Any]]:
        """The good records, in order (corrupt lines left out: verify() names them)."""
        return [record for _, record in self._lines() if record is not None]

    def verify(self, head: dict[str, Any] | None = None) -> list[str]:
        """Problems with the chain (empty when intact): which record was altered, inserted or
        removed, which line is not a record at all. `head` ({seq, hash}, as a run's --json and an
        incident's folder keep it) also finds the last records deleted: the chain must reach it."""
        problems = []
        prev, seq, seen = GENESIS, 0, False
        for number, record in self._lines():
            if record is None:
                problems.append(f"line {number}: not a journal record (corrupt)")
                continue
            body = {k: v for k, v in record.items() if k != "hash"}
            if record.get("prev") != prev:
                problems.append(f"line {number} ({record.get('id')}): previous record missing or changed")
            if _digest(record.get("prev", ""), body) != record.get("hash"):
                problems.append(f"line {number} ({record.get('id')}): content altered")
            seq = record["seq"] if isinstance(record.get("seq"), int) else seq + 1
            if head and seq == head.get("seq"):
                seen = True
                if record.get("hash") != head.get("hash"):
                    problems.append(f"line {number} ({record.get('id')}): not the record the "
                                    f"head names (seq {seq})")
            prev = record.get("hash", "")
        if head and not seen:
            problems.append(f"the chain ends at seq {seq}, before the head's seq {head.get('seq')}: "
                            "the last records were deleted")
        return problems


TAIL_BLOCK = 64 * 1024


def _tail(handle) -> tuple[dict[str, Any] | None, int]:
    """The file's last good record and how many bad lines follow it, reading backwards from the
    end one block at a time: an append costs the same on a journal of any length."""
    end = handle.seek(0, os.SEEK_END)
    position, buffered, bad = end, b"", 0
    while position > 0:
        step = min(TAIL_BLOCK, position)
        position -= step
        handle.seek(position)
        buffered = handle.read(step) + buffered
        lines = buffered.split(b"\n")
        buffered = lines[0] if position > 0 else b""  # maybe a partial line: wait for more
        for raw in reversed(lines[1:] if position > 0 else lines):
            if not raw.strip():
                continue
            record = _record(raw)
            if record is not None:
                return record, bad
            bad += 1
    return None, bad


def _seq(last: dict[str, Any] | None, handle) -> int:
    """The last record's sequence number (0 for an empty journal). A journal written before
    records were numbered is counted once."""
    if last is None:
        return 0
    if isinstance(last.get("seq"), int):
        return last["seq"]
    handle.seek(0)
    return sum(1 for _, record in _scan(handle.read()) if record is not None)


def _scan(data: bytes):
    """(line number, record) for each non-blank line; record None when the line is not one."""
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if raw.strip():
            yield number, _record(raw)


def _record(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
    except ValueError:  # includes a line that is not UTF-8
        return None
    return record if isinstance(record, dict) and isinstance(record.get("hash"), str) else None
