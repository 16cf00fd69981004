"""Secrets: `rotate`, the runbooks' secret rotation (docs/runbook.md#rotate): a new HMAC secret,
database password or exchange key on every host, its readers restarted and verified, or the
previous one back everywhere."""

from __future__ import annotations

from invoke import Collection

from ripcord.tasks.options import task
from ripcord.tasks.procedures import _help, _procedure


@task(iterable=["inventory"], help=_help(secret="hmac, db or exchange (required)"))
def rotate(c, secret=None, host=None, reason="", yes=False, approval=None, inventory=None,
           check=False, verbose=0, json_=False, debug=False):
    """Rotate a secret: new value in every .env, readers restarted host by host and verified."""
    kind = str(secret or "").strip().lower()
    _procedure("rotate", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug, verbose=verbose,
               extra={"rotate_kind": kind},
               problem=None if kind in ("hmac", "db", "exchange")
               else "--secret hmac|db|exchange is required")


collection = Collection(rotate)
