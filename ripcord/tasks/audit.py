"""`audit`: the nightly drift and health audit (ripcord/audit.py), its reports written for people,
CI and Prometheus. Read-only: changes nothing on a host, takes no host lock."""

from __future__ import annotations

from invoke import Collection

from ripcord.cli import finish, run_task
from ripcord.errors import InputError
from ripcord.tasks.options import INVENTORY_HELP, task


@task(iterable=["inventory"],
      help={"host": "host pattern to audit (required)",
            "report-dir": "where the reports go (default: <state dir>/audit)",
            "inventory": INVENTORY_HELP, "json": "one JSON object on stdout",
            "debug": "show tracebacks"})
def audit(c, host=None, report_dir=None, inventory=None, json_=False, debug=False):
    """Drift (configs rendered from templates/ vs the hosts; last_known_good.json) and the whole
    check suite; writes HTML, JSON, JUnit XML and a Prometheus textfile; exits 1 on any failure."""

    from ripcord.audit import run_audit

    def body(out):
        if not host:
            raise InputError("--host PATTERN is required", hint="e.g. --host sandbox")
        outcome = run_audit(pattern=host, inventory_paths=inventory, report_dir=report_dir,
                            console=out)
        finish(outcome, json_)

    run_task(body, json_mode=json_, debug=debug)


collection = Collection(audit)
