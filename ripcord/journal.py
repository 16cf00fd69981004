"""The incident timeline: an append-only, hash-chained record of every run.

Each line is one JSON record carrying the hash of the record before it, so an edited or deleted
entry breaks the chain and `verify()` says where. Secrets are redacted before anything is written.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from ripcord.sandbox.plan import state_base

GENESIS = "0" * 64


def default_path() -> Path:
    return Path(os.environ.get("RIPCORD_JOURNAL") or state_base() / "journal.jsonl")


def operator() -> str:
    """Who is running ripcord: RIPCORD_OPERATOR, else the login name."""
    return os.environ.get("RIPCORD_OPERATOR") or getpass.getuser()


def _digest(prev: str, record: dict[str, Any]) -> str:
    body = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev + body).encode()).hexdigest()


class Journal:
    def __init__(self, path: Path | None = None):
        self.path = Path(path or default_path())

    def append(self, record: dict[str, Any]) -> str:
        """Add a record (id, time, operator and controller are filled in); returns its id."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"id": uuid.uuid4().hex[:12], "ts": time.time(), "operator": operator(),
                 "controller": socket.gethostname(), **record}
        with open(self.path, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # concurrent runs append one at a time
            handle.seek(0)
            prev = GENESIS
            for line in handle:
                if line.strip():
                    prev = json.loads(line)["hash"]
            entry["prev"] = prev
            entry["hash"] = _digest(prev, entry)
            handle.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(self.path, 0o600)
        return entry["id"]

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def verify(self) -> list[str]:
        """Problems with the chain (empty when intact): which record was altered or removed."""
        problems = []
        prev = GENESIS
        for number, record in enumerate(self.records(), start=1):
            body = {k: v for k, v in record.items() if k != "hash"}
            if record.get("prev") != prev:
                problems.append(f"record {number} ({record.get('id')}): previous record missing or changed")
            if _digest(record.get("prev", ""), body) != record.get("hash"):
                problems.append(f"record {number} ({record.get('id')}): content altered")
            prev = record.get("hash", "")
        return problems
