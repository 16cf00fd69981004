"""`approve`: the second operator of the two-person rule (docs/runbook.md)."""

from __future__ import annotations

from invoke import Collection

from ripcord.cli import run_task
from ripcord.tasks.options import task


@task(help={"request-id": "the id the requester's run printed", "debug": "show tracebacks"})
def approve(c, request_id, debug=False):
    """Approve another operator's request (two-person rule): you cannot approve your own."""
    from rich.markup import escape

    from ripcord.approvals import Approvals
    from ripcord.journal import operator

    def body(out):
        req = Approvals().approve(request_id, operator())
        what = req.binding
        out.print(escape(f"approved {req.id}: {req.procedure} --host {req.pattern} requested by "
                         f"{req.requested_by}; valid for {req.ttl_s / 60:g} minutes, once\n"
                         f"  playbook {what['playbook']}\n  hosts {', '.join(what['hosts'])}\n"
                         f"  options {what['options'] or 'none'}"), highlight=False)

    run_task(body, debug=debug)


collection = Collection(approve)
