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

import importlib

from invoke import Collection

from ripcord import fasthalt  # noqa: F401  first: `halt` publishes before the rest is imported

# Each area's module, and the prefix of its tasks in the namespace ("" for top-level tasks).
AREAS = {"sandbox": "sandbox", "journal": "journal", "incident": "incident", "scenarios": "scenario",
         "playbooks": "", "procedures": "", "releases": "", "approvals": "", "configuration": "",
         "doc": "", "secrets": "", "audit": "", "state": ""}
# The top-level tasks' areas: a command naming one imports that area alone (ripcord/program.py);
# tests/unit/test_program.py keeps this in step with the tasks each area declares.
TOP_LEVEL = {
    **dict.fromkeys(("play", "inventory", "verify"), "playbooks"),
    **dict.fromkeys(("drill", "halt", "resume", "flatten", "cancel-all", "master-arm", "breaker",
                     "isolate", "restart", "recover-crash", "status", "backup-db", "restore-db",
                     "migrate-db"), "procedures"),
    **dict.fromkeys(("deploy", "rollback", "diagnostics"), "releases"),
    "approve": "approvals", "config": "configuration", "doc": "doc", "rotate": "secrets",
    "audit": "audit", "recover-state": "state", "reconcile": "state", "triage": "scenarios",
}
_PREFIXES = {prefix: area for area, prefix in AREAS.items() if prefix}


def area_of(name: str) -> str | None:
    """The area (module of ripcord/tasks/) that declares the task `name`, or None."""
    prefix, dot, _ = name.partition(".")
    return _PREFIXES.get(prefix) if dot else TOP_LEVEL.get(name)


def namespace(areas: list[str] | None = None) -> Collection:
    """The namespace of the given areas (all by default), each area's module imported now."""
    ns = Collection()
    for area in areas or AREAS:
        module = importlib.import_module(f"ripcord.tasks.{area}")
        if AREAS[area]:
            ns.add_collection(module.collection)
        else:
            for name, task in module.collection.tasks.items():
                ns.add_task(task, name=name)
        if area == "scenarios":
            ns.add_task(module.triage)
    return ns


def __getattr__(name: str) -> Collection:
    """`ns`, every task, built on first use (invoke's tasks.py, --list): a command that names its
    tasks imports only their areas."""
    if name != "ns":
        raise AttributeError(name)
    globals()["ns"] = whole = namespace()
    return whole
