"""Releases and diagnostics (docs/runbook.md): `deploy --version V` and `rollback` switch
titan_home/current host by host in dependency order, verified, never leaving the fleet split;
`diagnostics` collects the runbooks' evidence from every selected host into one redacted tar.gz."""

from __future__ import annotations

from invoke import Collection

from ripcord.tasks.options import COMMON_HELP, task
from ripcord.tasks.procedures import _help, _procedure


@task(iterable=["inventory"], help=_help(version="the release: a directory under titan_home/releases"))
def deploy(c, version=None, host=None, reason="", yes=False, approval=None, inventory=None,
           check=False, verbose=0, json_=False, debug=False):
    """Deploy a release host by host (halted fleet); a host that fails is rolled back at once."""
    _procedure("deploy", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug, verbose=verbose,
               extra={"deploy_version": version or ""},
               problem=None if version else "--version V is required (a release under titan_home/releases)")


@task(iterable=["inventory"], help=_help())
def rollback(c, host=None, reason="", yes=False, approval=None, inventory=None, check=False,
             verbose=0, json_=False, debug=False):
    """Put back the release in titan_home/state/last_known_good.json, as a deploy does."""
    _procedure("rollback", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug, verbose=verbose)


@task(iterable=["inventory"], help={**COMMON_HELP, "lines": "log lines per service (default 200)"})
def diagnostics(c, host=None, lines=200, reason="", inventory=None, check=False, verbose=0,
                json_=False, debug=False):
    """Collect logs, service state, system, sockets, database, NATS and releases into one
    redacted tar.gz in the state directory; read-only, no host lock."""
    problem = None if str(lines).isdigit() and int(lines) > 0 else \
        f"--lines must be a positive whole number, not {lines!r}"
    _procedure("diagnostics", host=host, inventory=inventory, check=check, yes=True, reason=reason,
               approval=None, json_=json_, debug=debug, verbose=verbose,
               extra={"diagnostics_lines": int(lines) if problem is None else 0}, problem=problem)


collection = Collection(deploy, rollback, diagnostics)
