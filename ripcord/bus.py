"""Signed commands for the trading bus.

Titan's execution engine accepts a command only with an HMAC-SHA256 signature in the NATS
headers, over the subject, a millisecond timestamp, a one-time nonce and the body, keyed by
TITAN_HMAC_SECRET. Commands older than 30 s or with a reused nonce are rejected.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

SIG_HEADER = "Titan-Signature"
TS_HEADER = "Titan-Timestamp"
NONCE_HEADER = "Titan-Nonce"

HALT_SUBJECT = "titan.cmd.sys.halt.v1"
FLATTEN_SUBJECT = "titan.cmd.risk.flatten"
CANCEL_ALL_SUBJECT = "titan.cmd.exec.cancel_all"
STATE_EVENT_SUBJECT = "titan.evt.exec.state"


def encode(body: dict[str, Any]) -> bytes:
    """The exact bytes that are signed and sent."""
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def sign(subject: str, body: bytes, secret: str, *, timestamp_ms: int | None = None,
         nonce: str | None = None) -> dict[str, str]:
    """NATS headers that authenticate `body` on `subject`."""
    timestamp = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    nonce = nonce or secrets.token_hex(16)
    payload = f"{subject}\n{timestamp}\n{nonce}\n".encode() + body
    signature = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    return {TS_HEADER: timestamp, NONCE_HEADER: nonce, SIG_HEADER: signature}


def fingerprint(secret: str) -> str:
    """What an engine reports as `secret_fingerprint`: safe to print, identifies the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()[:8]
