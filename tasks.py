"""The operator's interface in the checkout: `invoke TASK` (`invoke --list` shows them all).

The tasks live in ripcord/tasks/, by area (sandbox, playbooks, procedures, approvals,
configuration); the installed `ripcord` command runs the same namespace, so `invoke halt --host
prod` here and `ripcord halt --host prod` anywhere are one interface. docs/runbook.md says what
each procedure does; docs/exit-codes.md what its exit code means.
"""

from ripcord.tasks import ns  # noqa: F401  (invoke loads the collection named ns)
