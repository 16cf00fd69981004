"""The runbooks' procedures: each is a playbook in playbooks/ behind an invoke task.

The playbooks hold the steps, their confirmations and their checks; this module adds what is
about the operator rather than the hosts: the two-person rule, and that the kill switch never
waits for another run's host lock.

The two-person rule holds on every path: `invoke play` of any playbook that acts as a guarded
procedure acts (the same module, with the same command, state, method or action; a templated one
counts as any) needs that procedure's approval, whatever the file is called or wherever it lives.
`play` itself may be listed: then every `invoke play` on those hosts needs an approval.
"""

from __future__ import annotations

from functools import cache
from types import SimpleNamespace
from typing import Any

from rich.console import Console

from ripcord import approvals
from ripcord.errors import InputError
from ripcord.execute import Outcome, run_playbook
from ripcord.inventory import Inventory
from ripcord.journal import operator
from ripcord.paths import data_dir
from ripcord.runner import Options

PLAYBOOKS = data_dir("playbooks")  # the shipped ones: a procedure is never an operator's file
NO_LOCKS = {"halt", "diagnostics"}  # halting is the safe direction: it must not queue behind a stuck
# run; diagnostics only reads
NEVER_GUARDED = {"halt"}  # nor wait for a second person
PREFLIGHT = {"backup-db", "restore-db", "migrate-db"}  # ripcord.modules.backup.preflight
STATE_PREFLIGHT = {"recover-state", "reconcile"}  # ripcord.modules.state.preflight
RELEASE_PREFLIGHT = {"deploy", "rollback", "resume"}  # ripcord.modules.release.preflight
PREFLIGHT_ROTATE = {"rotate"}  # ripcord.modules.rotate.preflight
ANY = "*"  # a templated value: it may be anything at run time

# The argument that says what a task does, for modules that do several things.
WHAT = {"titan_command": "command", "uri": "method", "file": "state", "service": "state",
        "services": "state", "exchange": "action", "nats": "subject", "backup": "action",
        "migrate": "direction", "release": "action"}
READS = {"uri": {"GET", "HEAD", "OPTIONS"}, "exchange": {"open_orders", "positions",
         "dead_man_switch"}, "service": {None},
         "backup": {"create", "verify"}}  # a backup replaces nothing: restore-db's act is restore
# Tasks that change nothing, or whose effect cannot be told from their arguments (command,
# shell: list `play` to guard them); halt is the safe direction.
NOT_ACTS = {"checks", "command", "shell", "halt", "wait_for", "stat", "fetch", "diagnostics"}
SAME_ACT = {"systemd": "service"}
WHAT["reconcile"], READS["reconcile"] = "fix", {False}  # reconcile without --fix reads


def run_procedure(name: str, *, pattern: str, inventory_paths: list[str] | None, options: Options,
                  yes: bool, console: Console, approval: str | None = None,
                  inventory: Inventory | None = None) -> Outcome:
    """Run procedure `name` on the hosts `pattern` selects (approval first where required:
    run_playbook asks guard()); `inventory`, when given, is used instead of reading the files again."""
    options.take_locks = name not in NO_LOCKS
    if name in PREFLIGHT:  # reads the fleet; bad input is exit 2 before anything runs
        from ripcord.inventory import load_operator_inventory
        from ripcord.modules.backup import preflight

        inventory = inventory or load_operator_inventory(inventory_paths)
        preflight(name, inventory, pattern, options.extra_vars)
    if name in RELEASE_PREFLIGHT:  # a split fleet, a missing release: exit 2, nothing changed
        from ripcord.inventory import load_operator_inventory
        from ripcord.modules import release

        inventory = inventory or load_operator_inventory(inventory_paths)
        release.preflight(name, inventory, pattern, options.extra_vars)
    if name in PREFLIGHT_ROTATE:  # no host is read: the inventory says what a rotation touches
        from ripcord.inventory import load_operator_inventory
        from ripcord.modules.rotate import preflight as rotate_preflight

        inventory = inventory or load_operator_inventory(inventory_paths)
        rotate_preflight(name, inventory, pattern, options.extra_vars)
    if name in STATE_PREFLIGHT:  # every engine selected; reconcile: every engine halted
        from ripcord.inventory import load_operator_inventory
        from ripcord.modules import state

        inventory = inventory or load_operator_inventory(inventory_paths)
        state.preflight(name, inventory, pattern, options.extra_vars)
    return run_playbook(str(PLAYBOOKS / f"{name}.yml"), pattern=pattern,
                        inventory_paths=inventory_paths, inventory=inventory, options=options,
                        yes=yes, console=console, reason=options.reason, approval=approval,
                        procedure=name)


def guard(playbook, inventory, pattern: str, options: Options, *, approval: str | None,
          procedure: str | None = None) -> None:
    """The two-person rule for one run, before any host is touched: returns when no approval
    is needed or `approval` fits this run (then it is used up); else ApprovalRequired or
    DeclinedError (exit 4)."""
    if procedure in NEVER_GUARDED:
        return  # the kill switch reads nothing more before it acts
    hosts = inventory.select(pattern)
    reached = sorted(set(hosts) | delegates(playbook, inventory))
    listed = set().union(*(approvals.guarded(inventory, h) for h in reached)) - NEVER_GUARDED
    unknown = listed - set(procedure_names()) - {"play"}
    if unknown:
        raise InputError(f"{approvals.RULE} names {', '.join(sorted(unknown))}: not a procedure",
                         hint=f"known: {', '.join(procedure_names())}, play")
    needed = sorted(p for p in listed if p == procedure or (p == "play" and procedure is None)
                    or (p != "play" and acts_as(playbook, p)))
    if options.check or not needed:
        return
    name = procedure if procedure in needed else ", ".join(needed)
    binding = approvals.Binding(
        procedure=name, pattern=pattern, hosts=hosts, options=bound_options(options),
        playbook=str(playbook.path), playbook_sha256=approvals.digest(playbook_content(playbook)),
        inventory_sha256=approvals.inventory_digest(inventory, hosts))
    store = approvals.Approvals()
    if approval:
        store.use(approval, binding, operator())
        return
    request = store.request(binding, approvals.ttl_s(inventory, hosts), operator(), options.reason)
    raise approvals.ApprovalRequired(
        f"{name} on {pattern} needs a second operator's approval: request {request.id}",
        hint=f"another operator runs `invoke approve {request.id}`, then run this again "
             f"with --approval {request.id}", request_id=request.id)


def bound_options(options: Options) -> dict[str, Any]:
    """The options an approval binds: -e values (the procedures' options) and tag selections."""
    bound = dict(options.extra_vars)
    if options.tags:
        bound["--tags"] = sorted(options.tags)
    if options.skip_tags:
        bound["--skip-tags"] = sorted(options.skip_tags)
    return bound


def delegates(playbook, inventory) -> set[str]:
    """Hosts the playbook's tasks delegate to: their rule counts as the selected hosts' does. A
    target that names no host before the run (a host variable, a typo) counts as every host."""
    from ripcord.templating import Templar

    known = inventory.select("all")
    context = {"groups": {g: inventory.group_hosts(g) for g in inventory.groups}}
    found: set[str] = set()
    for task in all_tasks(playbook):
        if not task.delegate_to:
            continue
        try:
            target = Templar().render(task.delegate_to, context)
        except Exception:  # noqa: BLE001 - any failure to tell the target: assume the worst
            target = None
        if target in ("localhost", "127.0.0.1"):
            continue  # the controller
        if target not in known:
            return set(known)
        found.add(target)
    return found


def procedure_names() -> list[str]:
    return sorted(p.stem for p in PLAYBOOKS.glob("*.yml"))


def _tasks(tasks) -> list:
    found = []
    for task in tasks:
        if task.block is not None:
            found += _tasks(task.block) + _tasks(task.rescue) + _tasks(task.always)
        elif getattr(task, "included", None) is not None:  # include_tasks of a static file
            found += _tasks(task.included)
        elif task.module or getattr(task, "include", None):  # (a templated file: see acts_as)
            found.append(task)
    return found


def all_tasks(playbook) -> list:
    return [t for play in playbook.plays
            for t in _tasks([*play.pre_tasks, *play.tasks, *play.post_tasks, *play.handlers])]


def playbook_content(playbook) -> list:
    """What an approval binds of a playbook: every play's hosts, vars and tasks as loaded."""
    from dataclasses import asdict

    return [{k: v for k, v in asdict(play).items() if k not in ("file", "line")}
            for play in playbook.plays]


def act(task) -> tuple[str, Any] | None:
    """What a task does, as (module, what), or None when it changes nothing a procedure
    guards. Signed commands are one act however they are sent (titan_command, nats, exchange)."""
    from ripcord.modules import REGISTRY
    from ripcord.modules.trading import SUBJECTS

    module = REGISTRY.get(task.module)
    if module is None or module.on_controller:
        return None
    # ansible.builtin.uri is uri; systemd starts and stops services as service does
    task = SimpleNamespace(module=SAME_ACT.get(module.name, module.name), args=task.args)
    if task.module in NOT_ACTS:
        return None
    args = task.args if isinstance(task.args, dict) else {}
    key = WHAT.get(task.module)
    value = args.get(key, module.args[key].default if key in module.args else None) if key else None
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        value = ANY
    if value in READS.get(task.module, ()):
        return None
    if task.module == "uri" and value != ANY:
        value = str(value).upper()
    if task.module == "nats":
        if value != ANY:
            value = next((c for c, s in SUBJECTS.items() if s == value), None)
            if value is None:
                return None  # not one of the engines' commands
        return _command(value, args)
    if task.module == "exchange" and value == "cancel_all":
        return "titan_command", "cancel_all"
    if task.module == "titan_command":
        return _command(value, args)
    return task.module, value


def _command(command: str, args: dict) -> tuple[str, str]:
    """A signed command; a halt's state tells a halt (never guarded) from a resume."""
    if command != "halt":
        return "titan_command", command
    body = args.get("body")
    state = body.get("state", "HALTED") if isinstance(body, dict) else ANY
    if isinstance(state, str) and "{{" in state:
        state = ANY
    return "titan_command", f"halt {state}" if state != ANY else ANY


@cache
def procedure_acts(name: str) -> frozenset[tuple[str, Any]]:
    """What procedure `name`'s own playbook does (its acts), read from playbooks/ as plain YAML
    (our own files: no inventory is needed to say what their tasks do)."""
    import yaml

    from ripcord.modules import REGISTRY

    def tasks(items) -> list[SimpleNamespace]:
        found = []
        for item in items or []:
            if not isinstance(item, dict):
                continue
            found += tasks(item.get("block")) + tasks(item.get("rescue")) + tasks(item.get("always"))
            for module in set(item) & set(REGISTRY):
                args = item[module] if isinstance(item[module], dict) else {}
                found.append(SimpleNamespace(module=module, args=args))
        return found

    plays = yaml.safe_load((PLAYBOOKS / f"{name}.yml").read_text()) or []
    return frozenset(a for play in plays for t in tasks([*play.get("tasks", []),
                                                         *play.get("handlers", [])])
                     if (a := act(t)) and a != ("titan_command", "halt HALTED"))


def acts_as(playbook, name: str) -> bool:
    """Whether the playbook does any of what procedure `name` does (templated: may do anything)."""
    theirs = procedure_acts(name)
    for task in all_tasks(playbook):
        if task.module is None:  # include_tasks of a file named by a template: may be anything
            return True
        mine = act(task)
        if mine and any(mine[0] == m and ANY in (mine[1], v) or mine == (m, v) for m, v in theirs):
            return True
    return False
