"""How every task declares its options, so they read as an Ansible user expects everywhere.

Invoke would give each option the short flag of its first free letter, which differs from task to
task and can collide with what Ansible users type (`-d` for --debug, say). Here no short flag is
guessed: only these, on every task that has the option: -i inventory, -e extra vars, -l (and
--limit) the host pattern, -C --check, -v more detail (-vv counts, as Ansible's).
"""

from __future__ import annotations

import functools
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
    """@task(...) with SHORT's flags and no guessed ones; options in no_short get none. Every task
    also takes --operator: who runs it (journal, approvals), over RIPCORD_OPERATOR and ripcord.yaml."""
    kwargs.setdefault("auto_shortflags", False)

    def make(body):
        if "verbose" in inspect.signature(body).parameters:  # -vv counts
            kwargs["incrementable"] = [*kwargs.get("incrementable", ()), "verbose"]
        if "operator" not in inspect.signature(body).parameters:
            body = with_operator(body)
            kwargs["help"] = {**kwargs.get("help", {}), "operator": OPERATOR_HELP}
        made = invoke.task(klass=Task, **kwargs)(body)
        made.no_short = frozenset(no_short)
        return made

    return make


OPERATOR_HELP = "who is running this (journal, approvals); default: $RIPCORD_OPERATOR, else the login name"


def with_operator(body):
    """body with an --operator option that sets the operator for this run (config reads it as
    the RIPCORD_OPERATOR it puts in the environment: the command line wins)."""
    @functools.wraps(body)
    def run(c, *args, operator=None, **options):
        if operator is not None:
            if not operator.strip() or not operator.isprintable() or len(operator) > 100:
                raise invoke.Exit(f"error: --operator {operator[:100]!r}: give a name (printable, "
                                  "at most 100 characters)", code=2)
            os.environ["RIPCORD_OPERATOR"] = operator
        return body(c, *args, **options)

    signature = inspect.signature(body)
    run.__signature__ = signature.replace(parameters=[
        *signature.parameters.values(), inspect.Parameter("operator", inspect.Parameter.KEYWORD_ONLY,
                                                          default=None)])
    return run


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
