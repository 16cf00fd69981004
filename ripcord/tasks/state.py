"""The data corruption runbook's procedures (docs/runbook.md): `recover-state` resets the
engines' JetStream consumer behind a halt and a database snapshot; `reconcile` compares the
ledger with the exchange and, with --fix, aligns the ledger to it."""

from __future__ import annotations

from invoke import Collection

from ripcord.tasks.options import task
from ripcord.tasks.procedures import _help, _procedure


@task(name="recover-state", iterable=["inventory"], help=_help())
def recover_state(c, host=None, reason="", yes=False, approval=None, inventory=None, check=False,
                  verbose=0, json_=False, debug=False):
    """Halt, snapshot the database, delete the consumer, restart execution; verify it is back."""
    _procedure("recover-state", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug, verbose=verbose)


@task(iterable=["inventory"],
      help=_help(fix="align the ledger to the exchange (typed confirmation RECONCILE)"))
def reconcile(c, host=None, fix=False, reason="", yes=False, approval=None, inventory=None,
              check=False, verbose=0, json_=False, debug=False):
    """Ledger against exchange (halted fleet): every mismatch listed, exit 1 when any; --fix aligns."""
    _procedure("reconcile", host=host, inventory=inventory, check=check, yes=yes, reason=reason,
               approval=approval, json_=json_, debug=debug, verbose=verbose,
               extra={"reconcile_fix": bool(fix)})


collection = Collection(recover_state, reconcile)
