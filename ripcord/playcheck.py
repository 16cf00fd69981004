"""The checks that need a whole play read: are its variables defined, its handlers there, its
hosts and delegates real? The reader records in a PlayRefs what the play's values refer to as it
reads them (a variable may be registered by a later task, a handler is usually written after the
task that notifies it), and check_play() looks them up once the play is read. What each value
must look like where it is written is ripcord.validate's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ripcord.errors import InputError
from ripcord.plays import LOCALHOST
from ripcord.validate import Problem, is_template, suggest

if TYPE_CHECKING:
    from ripcord.inventory import Inventory
    from ripcord.plays import Play


@dataclass(frozen=True)
class Use:
    """The variables one value needs, where it is written, and the task-level vars in scope."""

    names: frozenset[str]
    file: str
    line: int
    local: frozenset[str] = frozenset()  # vars of the task, its blocks and includes
    via: str = ""  # "file:line" of the include that brought it into the play, if any


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


def check_play(play: Play, refs: PlayRefs, *, known: Iterable[str],
               inventory: Inventory | None) -> list[Problem]:
    """Problems only visible with the whole play read. `known`: names defined outside the play
    (magic variables, extra vars)."""
    problems: list[Problem] = []
    defined = set(known) | set(play.vars) | refs.defines
    for host in _hosts_with_vars(play, refs, inventory, problems):
        defined.update(inventory.host_vars(host))  # type: ignore[union-attr]
    if inventory is not None and play.hosts.strip() in LOCALHOST:
        defined.update([*inventory.group_vars("all"), "ansible_connection"])
    problems += check_refs(refs, defined, inventory is not None)
    if inventory is not None:
        problems += _unknown_delegates(refs, inventory)
    return problems


def check_refs(refs: PlayRefs, defined: set[str], with_inventory: bool = True) -> list[Problem]:
    """Variables used but not defined, and notifications of handlers that do not exist."""
    return _undefined(refs, defined, with_inventory) + _unknown_handlers(refs)


def _hosts_with_vars(play: Play, refs: PlayRefs, inventory: Inventory | None,
                     problems: list[Problem]) -> list[str]:
    """The hosts whose vars the play may use: those its pattern selects ([] without an
    inventory). When the pattern is broken, every host, so that one mistake is reported once
    rather than again for each host variable the play uses."""
    if inventory is None:
        return []
    if not play.hosts or is_template(play.hosts):
        return list(inventory.hosts)
    if play.hosts.strip() in LOCALHOST and play.hosts.strip() not in inventory.hosts:
        return []  # the implicit localhost (check_play adds the `all` group's vars)
    try:
        return inventory.select(play.hosts)
    except InputError as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        problems.append(Problem(play.file, refs.hosts_line, f"{exc.message}{hint}"))
        return list(inventory.hosts)


def _undefined(refs: PlayRefs, defined: set[str], with_inventory: bool) -> list[Problem]:
    sources = "vars, extra vars, the inventory" if with_inventory else "vars, extra vars"
    caveat = "" if with_inventory else "; no inventory given"
    problems = []
    for use in refs.uses:
        for name in sorted(use.names - defined - use.local):
            hint = suggest(name, defined | use.local) or (
                f" (not set by {sources}, a register or a set_fact in this play{caveat})")
            via = f", as included from {use.via}" if use.via else ""
            problems.append(Problem(use.file, use.line, f"undefined variable {name!r}{hint}{via}"))
    return problems


def _unknown_handlers(refs: PlayRefs) -> list[Problem]:
    listed = ", ".join(repr(h) for h in sorted(refs.handlers))
    hint = f" (this play's handlers: {listed})" if listed else " (this play has no handlers)"
    return [Problem(ref.file, ref.line, f"notify {ref.name!r} names no handler"
                    f"{suggest(ref.name, refs.handlers) or hint}")
            for ref in refs.notifies
            if ref.name not in refs.handlers and not is_template(ref.name)]


def _unknown_delegates(refs: PlayRefs, inventory: Inventory) -> list[Problem]:
    return [Problem(ref.file, ref.line, f"delegate_to {ref.name!r} is not a host in the inventory"
                    f"{suggest(ref.name, inventory.hosts)}")
            for ref in refs.delegates
            if ref.name not in inventory.hosts and not is_template(ref.name)
            and ref.name not in LOCALHOST]  # the controller itself, as Ansible's implicit localhost
