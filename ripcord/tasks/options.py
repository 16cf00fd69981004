"""How every task declares its options, so they read as an Ansible user expects everywhere.

Invoke would give each option the short flag of its first free letter, which differs from task to
task and can collide with what Ansible users type (`-d` for --debug, say). Here no short flag is
guessed: only these, on every task that has the option: -i inventory, -e extra vars, -l (and
--limit) the host pattern, -C --check, -v more detail (-vv counts, as Ansible's).
"""

from __future__ import annotations

import inspect
import os

import invoke

SHORT = {"inventory": ("i",), "extra_vars": ("e",), "host": ("l", "limit"), "check": ("C",),
         "verbose": ("v",)}


class Task(invoke.Task):
    """An invoke Task whose options get exactly SHORT's extra names (none for those in no_short)."""

    no_short: frozenset[str] = frozenset()

    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        if name not in self.no_short:
            opts["names"] = [*opts["names"], *SHORT.get(name, ())]
        return opts


def task(*, no_short=(), **kwargs):
    """@task(...) with SHORT's flags and no guessed ones; options in no_short get none."""
    kwargs.setdefault("auto_shortflags", False)

    def make(body):
        if "verbose" in inspect.signature(body).parameters:  # -vv counts
            kwargs["incrementable"] = [*kwargs.get("incrementable", ()), "verbose"]
        made = invoke.task(klass=Task, **kwargs)(body)
        made.no_short = frozenset(no_short)
        return made

    return make


def verbosity(level: int) -> None:
    """-v: every task's message and every passed check shown (the Display reads RIPCORD_VERBOSE)."""
    if level:
        os.environ["RIPCORD_VERBOSE"] = str(level)


def csv(values) -> frozenset[str]:
    return frozenset(v.strip() for item in values or [] for v in item.split(",") if v.strip())


INVENTORY_HELP = "inventory file or directory (repeatable; default: ripcord.yaml's, else inventory/)"
VERBOSE_HELP = "more detail: every task's message, every passed check"
COMMON_HELP = {
    "host": "host pattern (required)",
    "inventory": INVENTORY_HELP,
    "check": "dry run: say what would change, change nothing",
    "reason": "why: given to the engines where they take one, and journaled",
    "verbose": VERBOSE_HELP,
    "json": "one JSON object on stdout", "debug": "show tracebacks",
}
