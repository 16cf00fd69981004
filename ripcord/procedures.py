"""The runbooks' procedures: each is a playbook in playbooks/ behind an invoke task.

The playbooks hold the steps, their confirmations and their checks; this module adds what is
about the operator rather than the hosts: the two-person rule, and that the kill switch never
waits for another run's host lock.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from ripcord import approvals
from ripcord.execute import Outcome, run_playbook
from ripcord.inventory import load_operator_inventory
from ripcord.journal import operator
from ripcord.runner import Options

PLAYBOOKS = Path(__file__).resolve().parents[1] / "playbooks"
NO_LOCKS = {"halt"}  # halting is the safe direction: it must not queue behind a stuck run


def run_procedure(name: str, *, pattern: str, inventory_paths: list[str] | None, options: Options,
                  yes: bool, console: Console, approval: str | None = None) -> Outcome:
    """Run procedure `name` on the hosts `pattern` selects, approval first where required."""
    inventory = load_operator_inventory(inventory_paths)
    hosts = inventory.select(pattern)  # an empty or broken pattern fails here, untouched
    if not options.check and approvals.required(inventory, hosts, name):
        store = approvals.Approvals()
        if not approval:
            request = store.request(name, pattern, options.extra_vars, operator(), options.reason)
            raise approvals.ApprovalRequired(
                f"{name} on {pattern} needs a second operator's approval: request {request.id}",
                hint=f"another operator runs `invoke approve {request.id}`, then run this again "
                     f"with --approval {request.id}", request_id=request.id)
        store.use(approval, name, pattern, options.extra_vars, operator())
    options.take_locks = name not in NO_LOCKS
    return run_playbook(str(PLAYBOOKS / f"{name}.yml"), pattern=pattern, inventory=inventory,
                        options=options, yes=yes, console=console, reason=options.reason)
