"""`play`, `inventory`, `verify`: playbooks, the inventory and the checks, as Ansible users know them."""

from __future__ import annotations

from invoke import Collection

from ripcord.cli import emit_json, finish, run_task
from ripcord.errors import InputError
from ripcord.tasks.options import INVENTORY_HELP, VERBOSE_HELP, csv, task, verbosity


@task(iterable=["extra_vars", "tags", "skip_tags", "inventory"],
      help={"host": "host pattern to run on (required): limits every play's hosts",
            "inventory": INVENTORY_HELP,
            "check": "dry run: report what would change, change nothing",
            "diff": "show file changes as diffs",
            "tags": "only tasks with these tags (comma-separated or repeated)",
            "skip-tags": "skip tasks with these tags",
            "extra-vars": "key=value or a JSON/YAML mapping; highest precedence (repeatable)",
            "forks": "hosts worked on at once (default 20)",
            "yes": "answer yes to every confirmation",
            "reason": "why: recorded in the journal",
            "approval": "the id of an approval another operator granted (two-person rule)",
            "verbose": VERBOSE_HELP, "json": "one JSON object on stdout", "debug": "show tracebacks"})
def play(c, playbook, host=None, inventory=None, check=False, diff=False, tags=None,
         skip_tags=None, extra_vars=None, forks=20, yes=False, reason="", approval=None,
         verbose=0, json_=False, debug=False):
    """Run a playbook on the hosts a pattern selects (validated before anything is touched).

    PLAYBOOK is a path, else a name looked for in ripcord.yaml's playbook_dirs, then the shipped
    playbooks."""

    from ripcord.approvals import ApprovalRequired
    from ripcord.config import find_playbook
    from ripcord.execute import parse_extra_vars, run_playbook
    from ripcord.runner import Options

    def body(out):
        if not host:
            raise InputError("--host PATTERN is required", hint="e.g. --host sandbox or --host exec-1")
        try:
            fork_count = int(forks)
        except ValueError:
            raise InputError(f"--forks must be a whole number, not {forks!r}") from None
        verbosity(verbose)
        options = Options(check=check, diff=diff, tags=csv(tags), skip_tags=csv(skip_tags),
                          extra_vars=parse_extra_vars(extra_vars or []), forks=max(1, fork_count))
        try:
            outcome = run_playbook(find_playbook(playbook), pattern=host, inventory_paths=inventory,
                                   options=options, yes=yes, console=out, reason=reason,
                                   approval=approval)
        except ApprovalRequired as exc:
            if json_:
                emit_json({"ok": False, "task": "play", "approval_required": exc.request_id})
            raise
        finish(outcome, json_)

    run_task(body, json_mode=json_, debug=debug)


@task(name="inventory", iterable=["inventory"], no_short={"host"},
      help={"list": "every group and host, as `ansible-inventory --list`",
            "host": "one host's merged variables, as `ansible-inventory --host`",
            "graph": "the group tree (optionally from one group), as `ansible-inventory --graph`",
            "vars": "with --graph: show variables too",
            "inventory": INVENTORY_HELP})
def inventory_(c, list_=False, host=None, graph=False, group="all", vars_=False, inventory=None):
    """Show what ripcord resolved from the inventory, in ansible-inventory's shapes."""
    from ripcord.inventory import dumps, load_operator_inventory

    def body(out):
        inv = load_operator_inventory(inventory)
        if host:
            print(dumps(inv.to_host_json(host)))
        elif graph:
            print(inv.graph(group, show_vars=vars_))
        elif list_:
            print(dumps(inv.to_list_json()))
        else:
            raise InputError("say what to show: --list, --host NAME or --graph")

    run_task(body)


@task(iterable=["inventory"],
      help={"host": "host pattern to verify (required)",
            "checks": "a marker expression (`halt and not resume`) or node ids; default: all",
            "junit": "also write JUnit XML here, for a CI server",
            "inventory": INVENTORY_HELP, "verbose": VERBOSE_HELP,
            "json": "one JSON object on stdout", "debug": "show tracebacks"})
def verify(c, host=None, checks="", junit=None, inventory=None, verbose=0, json_=False, debug=False):
    """Run the checks (checks/) on the hosts a pattern selects; changes nothing.

    Besides the shipped checks, those in ripcord.yaml's check_dirs (or RIPCORD_CHECK_DIRS)."""

    from ripcord.execute import run_verify

    def body(out):
        if not host:
            raise InputError("--host PATTERN is required", hint="e.g. --host sandbox")
        verbosity(verbose)
        outcome = run_verify(pattern=host, select=checks, inventory_paths=inventory, junit=junit,
                             console=out)
        finish(outcome, json_)

    run_task(body, json_mode=json_, debug=debug)


collection = Collection(play, inventory_, verify)
