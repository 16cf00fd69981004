"""A playbook's typed objects: plays, tasks (and blocks), verify selectors.

Plain data, below both the reader that builds them (playbook.py) and the validator that checks
what they hold (validate.py), so neither imports the other for its types; and how a block's or
an include's keywords reach the tasks inside it (inherit).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

# Variables the runner provides on every host, as Ansible does.
# What a rescue section knows about the failure it handles, as in Ansible.
RESCUE_VARS = frozenset({"ansible_failed_task", "ansible_failed_result"})

# What `gather_facts: true` (the setup module) defines: ansible_facts and its ansible_* names.
FACT_NAMES = frozenset({"ansible_facts", *(f"ansible_{name}" for name in (
    "hostname", "fqdn", "system", "kernel", "architecture", "distribution", "distribution_version",
    "os_family", "processor_vcpus", "memtotal_mb", "memfree_mb"))})

# delegate_to these (when the inventory has no such host): the controller, as Ansible's implicit
# localhost.
LOCALHOST = frozenset({"localhost", "127.0.0.1"})

MAGIC_VARS = frozenset({
    "inventory_hostname", "inventory_hostname_short", "groups", "group_names", "hostvars",
    "play_hosts", "ansible_play_hosts", "ansible_play_batch", "ansible_check_mode",
    "ansible_diff_mode", "playbook_dir", "omit", "ripcord_operator", "ripcord_reason",
})


@dataclass
class Task:
    """A task (module + arguments) or a block (block/rescue/always), with its keywords."""

    name: str
    file: str
    line: int
    module: str | None = None  # None for a block
    args: dict[str, Any] = field(default_factory=dict)  # as written; rendered per host at run time
    when: list[Any] = field(default_factory=list)  # all must hold
    register: str | None = None
    until: Any = None
    retries: int = 3
    delay: float = 5.0
    changed_when: Any = None  # None: the module decides; a list means all must hold
    failed_when: Any = None
    ignore_errors: bool = False
    notify: list[str] = field(default_factory=list)
    listen: list[str] = field(default_factory=list)  # handlers: extra names to be notified by
    tags: frozenset[str] = frozenset()
    run_once: bool = False
    delegate_to: str | None = None
    timeout: float | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    loop: Any = None  # a list, or a template giving one (with_items, with_list, with_dict too)
    loop_control: dict[str, Any] = field(default_factory=dict)  # label, index_var, loop_var, pause
    no_log: bool | None = None  # hide arguments and results everywhere ("censored")
    check_mode: bool | None = None  # None: the run's --check; true/false: this task's own
    environment: dict[str, Any] | str = field(default_factory=dict)  # on the host, never in argv
    become: bool | None = None  # None: the inventory's ansible_become (default: no)
    become_user: str | None = None  # None: ansible_become_user, else root
    become_method: str | None = None  # sudo (sudo -n: never prompting) is the only one
    remote_user: str | None = None  # the SSH login; None: the inventory's ansible_user
    include: str | None = None  # include_tasks: its task file (a template is resolved per host)
    included: list[Task] | None = None  # that file's tasks, read up front when its name is static
    block: list[Task] | None = None
    rescue: list[Task] = field(default_factory=list)
    always: list[Task] = field(default_factory=list)

    @property
    def is_block(self) -> bool:
        return self.block is not None

    @property
    def is_include(self) -> bool:
        return self.include is not None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class VerifySpec:
    """A check selector run after the play on the hosts it touched (see docs/checks.md)."""

    select: str  # a pytest marker expression or a node id
    retry_s: float | None = None  # keep re-running until it passes, up to this long
    line: int = 0


@dataclass
class Play:
    name: str
    hosts: str  # a host pattern
    file: str
    line: int
    vars: dict[str, Any] = field(default_factory=dict)
    serial: int | str | list[int | str] | None = None  # int, "30%", or a ramp list
    max_fail_percentage: float | None = None
    any_errors_fatal: bool = False
    tasks: list[Task] = field(default_factory=list)
    handlers: list[Task] = field(default_factory=list)
    gather_facts: bool = False  # run `setup` first on every host (asked for: not by default)
    pre_tasks: list[Task] = field(default_factory=list)  # handlers flush after each of the three
    post_tasks: list[Task] = field(default_factory=list)
    remote_user: str | None = None  # the SSH login (remote_user, user); None: ansible_user
    verify: list[VerifySpec] = field(default_factory=list)


@dataclass
class Playbook:
    path: str
    plays: list[Play]


def inherit(block: Task, included: list[Task] | None = None) -> Any:
    """Block keywords (when, tags, vars, ...) apply to the tasks inside it. With included: those
    tasks of an include_tasks, which take all of its keywords but `when` (checked once)."""
    def child(task: Task) -> Task:
        when = task.when if included is not None else [*block.when, *task.when]
        return replace(task, when=when, tags=block.tags | task.tags,
                       vars={**block.vars, **task.vars},
                       ignore_errors=task.ignore_errors or block.ignore_errors,
                       timeout=task.timeout or block.timeout,
                       delegate_to=task.delegate_to or block.delegate_to,
                       run_once=task.run_once or block.run_once,
                       no_log=task.no_log if task.no_log is not None else block.no_log,
                       check_mode=task.check_mode if task.check_mode is not None else block.check_mode,
                       **{key: getattr(task, key) if getattr(task, key) is not None
                          else getattr(block, key) for key in ("become", "become_user", "become_method",
                                                               "remote_user")},
                       environment={**block.environment, **task.environment}
                       if isinstance(block.environment, dict) and isinstance(task.environment, dict)
                       else task.environment or block.environment)

    if included is not None:
        return [child(t) for t in included]
    return replace(block, block=[child(t) for t in block.block or []],
                   rescue=[child(t) for t in block.rescue], always=[child(t) for t in block.always])


def every_task(playbook: Playbook) -> list[Task]:
    """Every task and handler of the playbook, blocks' tasks included."""
    def walk(tasks: list[Task]) -> list[Task]:
        return [each for task in tasks for each in
                ([task, *walk(task.block or []), *walk(task.rescue), *walk(task.always),
                  *walk(task.included or [])])]
    return walk([t for play in playbook.plays
                 for t in (*play.pre_tasks, *play.tasks, *play.post_tasks, *play.handlers)])
