"""Every task ripcord has, grouped by area, in the one namespace that both `invoke` in the
checkout (tasks.py) and the installed `ripcord` command (ripcord.program) run:

    sandbox.up | sandbox.down | sandbox.status     the local fleet             (tasks/sandbox.py)
    play | inventory | verify                      playbooks, inventory, checks (tasks/playbooks.py)
    halt | resume | flatten | cancel-all | master-arm | breaker | isolate | restart |
    recover-crash | status | drill |
    backup-db | restore-db | migrate-db            the runbooks' procedures    (tasks/procedures.py)
    recover-state | reconcile                      data corruption runbook     (tasks/state.py)
    rotate                                         secret rotation             (tasks/secrets.py)
    audit                                          drift and health audit      (tasks/audit.py)
    approve                                        the two-person rule         (tasks/approvals.py)
    config                                         the configuration in force  (tasks/configuration.py)
    doc [MODULE]                                   the modules' documentation  (tasks/doc.py)
    deploy | rollback | diagnostics                releases, evidence          (tasks/releases.py)
    journal.show | journal.verify                  the record of every run     (tasks/journal.py)
    scenario.list | .show | .run | .docs | triage  the failure scenarios       (tasks/scenarios.py)
    incident.open | .assign | .note | .update |
    .show | .close | .postmortem                   incidents, from the journal (tasks/incident.py)

Exit codes (docs/exit-codes.md): 0 ok, 1 failed, 2 invalid input, 3 unreachable, 4 declined.
"""

from __future__ import annotations

from invoke import Collection

from ripcord import fasthalt  # noqa: F401  first: `halt` publishes before the rest is imported
from ripcord.tasks import (
    approvals,
    configuration,
    doc,
    incident,
    journal,
    playbooks,
    procedures,
    releases,
    sandbox,
    scenarios,
    secrets,
)


def _namespace() -> Collection:
    ns = Collection()
    ns.add_collection(sandbox.collection)
    ns.add_collection(journal.collection)
    ns.add_collection(incident.collection)
    ns.add_collection(scenarios.collection)
    ns.add_task(scenarios.triage)
    for area in (playbooks, procedures, releases, approvals, configuration, doc, secrets):
        for name, task in area.collection.tasks.items():
            ns.add_task(task, name=name)
    from ripcord.tasks.audit import audit  # the nightly audit (tasks/audit.py)

    ns.add_task(audit)
    from ripcord.tasks import state  # recover-state, reconcile

    for name, task in state.collection.tasks.items():
        ns.add_task(task, name=name)
    return ns


ns = _namespace()
