"""Checks that need a whole play: are its variables defined, its handlers there, its hosts real?

ripcord.playbook checks each value's shape where it is written, and records in a PlayRefs what
the values refer to. These checks run once the play is read, since a variable may be registered
by a later task and a handler is usually written after the task that notifies it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import jinja2
from jinja2 import nodes

from ripcord.errors import InputError

if TYPE_CHECKING:
    from ripcord.inventory import Inventory
    from ripcord.playbook import Play
    from ripcord.templating import Templar

# Jinja2 tests and filters that make a missing variable safe to use (`x is defined`, `x | default`).
GUARD_TESTS = frozenset({"defined", "undefined"})
GUARD_FILTERS = frozenset({"default", "d"})


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a playbook, and where (line 0: the file as a whole)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Use:
    """The variables one value needs, where it is written, and the task-level vars in scope."""

    names: frozenset[str]
    file: str
    line: int
    local: frozenset[str] = frozenset()  # vars of the task, its blocks and includes


@dataclass(frozen=True)
class Ref:
    """A name that must exist elsewhere (a handler, a host), and where it is written."""

    name: str
    file: str
    line: int


@dataclass
class PlayRefs:
    """What a play's values refer to, collected while it is read, checked by check_play()."""

    hosts_line: int
    uses: list[Use] = field(default_factory=list)
    defines: set[str] = field(default_factory=set)  # register names and set_fact keys
    handlers: set[str] = field(default_factory=set)  # handler names and listen names
    notifies: list[Ref] = field(default_factory=list)
    delegates: list[Ref] = field(default_factory=list)


# -- templates -------------------------------------------------------------------------------------

def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def template_names(templar: Templar, text: str, *, bare: bool = False) -> set[str]:
    """Top-level variables text needs defined; names guarded by `is defined` or `default` are
    optional. A bare expression (as in `when:`) may also be written as a "{{ }}" template.

    Raises jinja2.TemplateSyntaxError when malformed, TemplateAssertionError for a filter or
    test that does not exist (which Jinja2 itself would only notice when rendering).
    """
    bare = bare and not is_template(text)
    names = templar.names_used(text, bare=bare)
    if not is_template(text) and not bare:
        return names
    tree = templar.env.parse("{{ " + text + " }}" if bare else text)
    _check_callables(templar.env, tree)
    return names - _guarded(tree)


def _check_callables(env: jinja2.Environment, tree: nodes.Template) -> None:
    for kind, node_type, known in (("filter", nodes.Filter, env.filters),
                                   ("test", nodes.Test, env.tests)):
        for node in tree.find_all(node_type):
            if node.name not in known:
                raise jinja2.TemplateAssertionError(
                    f"unknown {kind} {node.name!r}{_suggest(node.name, known)}", node.lineno)


def _guarded(tree: nodes.Template) -> set[str]:
    """Variables tested directly with `is defined`/`is undefined` or given a `default`."""
    guards = [node.node for node in tree.find_all((nodes.Test, nodes.Filter))
              if node.name in (GUARD_TESTS if isinstance(node, nodes.Test) else GUARD_FILTERS)]
    return {node.name for node in guards if isinstance(node, nodes.Name)}


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# -- the play as a whole ---------------------------------------------------------------------------

def check_play(play: Play, refs: PlayRefs, *, known: Iterable[str],
               inventory: Inventory | None) -> list[Problem]:
    """Problems only visible with the whole play read. `known`: names defined outside the play
    (magic variables, extra vars)."""
    problems: list[Problem] = []
    hosts = _selected_hosts(play, refs, inventory, problems)
    defined = set(known) | set(play.vars) | refs.defines
    for host in hosts:
        defined.update(inventory.host_vars(host))  # type: ignore[union-attr]
    where = ", the inventory" if inventory is not None else ""
    unknown = "" if inventory is not None else "; no inventory given"
    for use in refs.uses:
        for name in sorted(use.names - defined - use.local):
            hint = _suggest(name, defined | use.local) or (
                f" (not set by vars, extra vars{where}, or a register or set_fact in this play"
                f"{unknown})")
            problems.append(Problem(use.file, use.line, f"undefined variable {name!r}{hint}"))
    problems.extend(_unknown_handlers(refs))
    if inventory is not None:
        problems.extend(_unknown_delegates(refs, inventory))
    return problems


def _selected_hosts(play: Play, refs: PlayRefs, inventory: Inventory | None,
                    problems: list[Problem]) -> list[str]:
    """The hosts whose vars the play may use: those its pattern selects ([] without an
    inventory). When the pattern is broken, every host, so that one mistake is reported once
    rather than again as each host variable the play uses."""
    if inventory is None:
        return []
    if not play.hosts or is_template(play.hosts):
        return list(inventory.hosts)
    try:
        return inventory.select(play.hosts)
    except InputError as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        problems.append(Problem(play.file, refs.hosts_line, f"{exc.message}{hint}"))
        return list(inventory.hosts)


def _unknown_handlers(refs: PlayRefs) -> list[Problem]:
    problems = []
    listed = ", ".join(repr(h) for h in sorted(refs.handlers))
    for ref in refs.notifies:
        if ref.name not in refs.handlers and not is_template(ref.name):
            hint = _suggest(ref.name, refs.handlers) or (
                f" (this play's handlers: {listed})" if listed else " (this play has no handlers)")
            problems.append(Problem(ref.file, ref.line, f"notify {ref.name!r} names no handler{hint}"))
    return problems


def _unknown_delegates(refs: PlayRefs, inventory: Inventory) -> list[Problem]:
    return [Problem(ref.file, ref.line, f"delegate_to {ref.name!r} is not a host in the inventory"
                    f"{_suggest(ref.name, inventory.hosts)}")
            for ref in refs.delegates
            if ref.name not in inventory.hosts and not is_template(ref.name)]
