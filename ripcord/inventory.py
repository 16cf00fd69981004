"""Ansible-format YAML inventories: hosts, groups, merged host vars and host patterns.

ripcord reads the same inventories as Ansible and must see the same fleet, so this module
follows ansible-core 2.19 step by step rather than approximately:

* the YAML inventory plugin: ``all`` / ``hosts`` / ``vars`` / ``children``, nested groups, host
  ranges (``exec-[01:20]``, ``db-[a:c]``, ``[1:10:2]``), ``host:port``, implicit ``all`` and
  ``ungrouped``, and ``group_vars/`` and ``host_vars/`` beside every inventory source: reading
  them is ripcord.inventory_sources' job, resolving what was read is this module's;
* the variable precedence of ``VariableManager.get_vars`` (see :meth:`Inventory.host_vars`);
* the output of ``ansible-inventory --list``, ``--host`` and ``--graph``.

Values are never templated: ``{{ ... }}`` strings reach the engine untouched, and a value tagged
``!unsafe`` becomes an :class:`Unsafe` string that must never be templated at all. Anything
malformed is an :class:`InputError` naming the file and 1-based line, before a host is touched.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ripcord.errors import InputError
from ripcord.inventory_sources import (
    UNSAFE_NAME,
    Group,
    _Builder,
    _Document,
    _load_vars_file,
    _vars_files,
    expand_host_pattern,
    expand_sources,
)
from ripcord.patterns import select_hosts
from ripcord.unsafe import Unsafe

__all__ = ["ConnectionSpec", "Group", "Inventory", "Unsafe", "dumps", "expand_host_pattern",
           "expand_sources"]

# Names ansible-inventory never shows: Ansible's magic and internal variables
# (ansible.constants.INTERNAL_STATIC_VARS), which the engine sets itself at run time.
INTERNAL_VARS = frozenset({
    "ansible_async_path", "ansible_collection_name", "ansible_config_file",
    "ansible_dependent_role_names", "ansible_diff_mode", "ansible_facts", "ansible_forks",
    "ansible_inventory_sources", "ansible_limit", "ansible_play_batch", "ansible_play_hosts",
    "ansible_play_hosts_all", "ansible_play_role_names", "ansible_playbook_python",
    "ansible_role_name", "ansible_role_names", "ansible_run_tags", "ansible_skip_tags",
    "ansible_verbosity", "ansible_version", "inventory_dir", "inventory_file",
    "inventory_hostname", "inventory_hostname_short", "groups", "group_names", "hostvars",
    "playbook_dir", "play_hosts", "role_name", "role_names", "role_path", "role_uuid",
})
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


# -- output helpers --------------------------------------------------------------------------------

def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return str(key)
    if key is True or key is False or key is None:
        return json.dumps(key)
    if isinstance(key, (int, float)):
        return json.dumps(key)
    return str(key)


def _jsonable(value: Any, wrap_unsafe: bool) -> Any:
    """`value` as ansible-inventory serialises it (its "inventory_legacy" JSON profile)."""
    if isinstance(value, Unsafe):
        return {"__ansible_unsafe": str(value)} if wrap_unsafe else str(value)
    if isinstance(value, dict):
        return {_json_key(k): _jsonable(v, wrap_unsafe) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v, wrap_unsafe) for v in value]
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def dumps(data: Any) -> str:
    """JSON text exactly as ansible-inventory prints it (sorted keys, 4-space indent, UTF-8)."""
    return json.dumps(data, sort_keys=True, indent=4, ensure_ascii=False)


# -- connection settings ---------------------------------------------------------------------------

def _last_set(hostvars: dict[str, Any], *names: str) -> Any:
    """Ansible's rule for aliased connection vars: the last name in the list that is set wins."""
    value = None
    for name in names:
        if hostvars.get(name) is not None:
            value = hostvars[name]
    return value


def _jump_from_ssh_args(args: str) -> str | None:
    """The ProxyJump destination in ssh arguments (``-J x``, ``-o ProxyJump=x``), if any."""
    tokens = shlex.split(args)
    for i, tok in enumerate(tokens):
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok == "-J":
            return nxt or None
        if tok.startswith("-J"):
            return tok[2:]
        option = nxt if tok == "-o" else tok[2:] if tok.startswith("-o") else ""
        key, _, value = option.replace("=", " ", 1).partition(" ")
        if key.lower() == "proxyjump" and value.strip():
            return None if value.strip().lower() == "none" else value.strip()
    return None


@dataclass(frozen=True)
class ConnectionSpec:
    """Where and how to reach one host over SSH, from its (merged, rendered) host vars."""

    host: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    jump: str | None = None  # [user@]host[:port] of a bastion, as for ssh -J
    connect_timeout: float = 10.0
    known_hosts: str = field(default_factory=lambda: os.path.expanduser(DEFAULT_KNOWN_HOSTS))

    @classmethod
    def from_vars(cls, name: str, hostvars: dict[str, Any]) -> ConnectionSpec:
        """Read ansible_host / ansible_port / ansible_user / ansible_ssh_private_key_file /
        ansible_timeout / ansible_ssh_common_args (ProxyJump) / ripcord_jump_host /
        ripcord_known_hosts. Give it rendered vars: a ``{{ }}`` template where a number is
        needed is an InputError."""

        def number(var: str, value: Any, kind: type) -> Any:
            try:
                return kind(value)
            except (TypeError, ValueError):
                hint = ("render the host's vars before asking for its connection"
                        if "{{" in str(value) else None)
                raise InputError(f"host {name!r}: {var} must be a number, got {value!r}",
                                 hint=hint) from None

        port = _last_set(hostvars, "ansible_port", "ansible_ssh_port")
        timeout = _last_set(hostvars, "ansible_timeout", "ansible_ssh_timeout")
        user = _last_set(hostvars, "ansible_user", "ansible_ssh_user")
        key = _last_set(hostvars, "ansible_private_key_file", "ansible_ssh_private_key_file")
        known = hostvars.get("ripcord_known_hosts") or DEFAULT_KNOWN_HOSTS
        jump = hostvars.get("ripcord_jump_host")
        if not jump:
            for var in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
                if hostvars.get(var):
                    try:
                        jump = _jump_from_ssh_args(str(hostvars[var]))
                    except ValueError as e:
                        raise InputError(f"host {name!r}: cannot parse {var}: {e}") from None
                    if jump:
                        break
        return cls(
            host=str(_last_set(hostvars, "ansible_host", "ansible_ssh_host") or name),
            port=22 if port is None else number("ansible_port", port, int),
            user=None if user is None else str(user),
            key_file=None if key is None else os.path.expanduser(str(key)),
            jump=str(jump) if jump else None,
            connect_timeout=10.0 if timeout is None else number("ansible_timeout", timeout, float),
            known_hosts=os.path.expanduser(str(known)),
        )


# -- the inventory ---------------------------------------------------------------------------------

class Inventory:
    """Hosts, groups and vars from one or more Ansible YAML inventory sources."""

    def __init__(self, builder: _Builder, vars_dirs: list[str], sources: list[str]) -> None:
        self._groups = builder.groups
        self._inventory_host_vars = builder.host_vars
        self._membership = builder.memberships()
        self._vars_dirs = vars_dirs
        self.sources = sources  # the inventory files read, in order
        self.warnings = builder.warnings  # what was skipped, as ansible-inventory warns
        self.hosts: list[str] = list(builder.host_vars)  # inventory order: first seen first
        # group_vars/ and host_vars/ files, read once (and now, so errors come before any run)
        self._gv = {(d, g): self._read_vars(d, "group_vars", g) for d in dict.fromkeys(vars_dirs)
                    for g in self._groups}
        self._hv = {(d, h): self._read_vars(d, "host_vars", h) for d in dict.fromkeys(vars_dirs)
                    for h in self.hosts}
        self._group_hosts: dict[str, list[str]] | None = None

    @classmethod
    def load(cls, sources: Iterable[str | os.PathLike] | str | os.PathLike) -> Inventory:
        """Read inventory files and directories (see :func:`expand_sources`), merged in order as
        Ansible merges several ``-i`` sources."""
        if isinstance(sources, (str, os.PathLike)):
            sources = [sources]
        expanded = expand_sources(sources)
        if not expanded:
            raise InputError("no inventory sources given")
        if not any(files for _, files in expanded):
            raise InputError("no inventory files in " + ", ".join(src for src, _ in expanded),
                             hint="give -i FILE (or set inventory: in ripcord.yaml); an inventory "
                                  "directory must hold .yml or .yaml files (`invoke sandbox.up` "
                                  "writes the sandbox's)")
        builder = _Builder()
        files = []
        for _, paths in expanded:
            for path in paths:
                builder.parse(_Document.read(path))
                files.append(path)
        builder.reconcile()
        # Vars files sit beside each source: the directory itself, or the file's directory.
        vars_dirs = [src if os.path.isdir(src) else os.path.dirname(src) for src, _ in expanded]
        return cls(builder, vars_dirs, files)

    @staticmethod
    def _read_vars(directory: str, kind: str, name: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        if name.startswith(os.path.sep):
            return merged  # Ansible skips chroot-like names such as /srv/jail
        for path in _vars_files(os.path.join(directory, kind), name):
            merged.update(_load_vars_file(path))
        return merged

    # -- groups ----------------------------------------------------------------------------------
    @property
    def groups(self) -> dict[str, Group]:
        """Every group by name, in the order the groups were first seen (``all``, ``ungrouped``
        first). Group.vars holds the inventory-file vars only; see :meth:`group_vars`."""
        return self._groups

    def groups_of(self, host: str) -> list[str]:
        """The groups `host` belongs to, directly or through children, sorted by name."""
        self._known(host)
        return sorted(self._membership[host])

    def group_hosts(self, group: str) -> list[str]:
        """Hosts of `group` and all its descendants, in Ansible's order (Group.get_hosts)."""
        if self._group_hosts is None:
            self._group_hosts = {g: self._walk_hosts(g) for g in self._groups}
        if group not in self._group_hosts:
            raise self._unknown_group(group)
        return list(self._group_hosts[group])

    def _walk_hosts(self, name: str) -> list[str]:
        # Ansible walks the group, its children, then each further generation. Within a
        # generation it iterates a Python set, whose order changes from run to run; here the
        # generation is taken in declaration order, which is what that set order would be if
        # it were stable.
        order = [name, *self._groups[name].children]
        seen: set[str] = set()
        generation = list(dict.fromkeys(self._groups[name].children))
        while generation:
            seen.update(generation)
            following = []
            for g in generation:
                for child in self._groups[g].children:
                    following.append(child)
                    if child not in seen:
                        order.append(child)
            generation = [g for g in dict.fromkeys(following) if g not in seen]
        return list(dict.fromkeys(h for g in order for h in self._groups[g].hosts))

    def group_vars(self, group: str) -> dict[str, Any]:
        """A group's own vars as ansible-inventory shows them (``--graph --vars``): inventory
        file vars, then its group_vars/ files, plus ansible_group_priority when not 1."""
        if group not in self._groups:
            raise self._unknown_group(group)
        g = self._groups[group]
        merged = dict(g.vars)
        for d in self._vars_dirs:
            merged.update(self._gv[(d, group)])
        if g.priority != 1:
            merged["ansible_group_priority"] = g.priority
        return copy.deepcopy(_drop_internal(merged))

    # -- hosts -----------------------------------------------------------------------------------
    def host_vars(self, host: str) -> dict[str, Any]:
        """The merged vars of `host`, as ``ansible-inventory --host`` resolves them.

        Lowest to highest (Ansible's default VARIABLE_PRECEDENCE, then host vars):
        ``all``'s inventory vars; every other group's inventory vars, groups sorted by
        (depth, ansible_group_priority, name); group_vars/all; group_vars/<group> in that same
        order; the host's inventory vars; host_vars/<host>. Each vars-file level is read per
        source directory, in source order. Keys are replaced, never deep-merged. Templates are
        left as written.
        """
        self._known(host)
        groups = sorted((self._groups[g] for g in self._membership[host] if g != "all"),
                        key=lambda g: (g.depth, g.priority, g.name))
        merged = dict(self._groups["all"].vars)
        for g in groups:
            merged.update(g.vars)
        for d in self._vars_dirs:
            merged.update(self._gv[(d, "all")])
        for d in self._vars_dirs:
            for g in groups:
                merged.update(self._gv[(d, g.name)])
        merged.update(self._inventory_host_vars[host])
        for d in self._vars_dirs:
            merged.update(self._hv[(d, host)])
        return copy.deepcopy(_drop_internal(merged))

    def connection_for(self, host: str) -> ConnectionSpec:
        """How to reach `host`, from its merged vars (unrendered: see ConnectionSpec.from_vars)."""
        return ConnectionSpec.from_vars(host, self.host_vars(host))

    def select(self, pattern: str, *, strict: bool = False) -> list[str]:
        """Hosts matching an Ansible host pattern, in Ansible's order (see ripcord.patterns).
        Raises InputError when nothing matches or the pattern is malformed; with `strict`, also
        when any one term matches nothing."""
        if UNSAFE_NAME.search(pattern.replace(" ", "")):  # spaces may pad a pattern's terms
            raise InputError(f"host pattern {pattern!r} holds a control character or '/'",
                             hint="a pattern names hosts and groups: e.g. exec, exec-1, 'exec:!exec-2'")
        if self._group_hosts is None:
            self.group_hosts("all")
        assert self._group_hosts is not None
        return select_hosts(pattern, self.hosts, self._group_hosts, strict=strict)

    # -- ansible-inventory views -----------------------------------------------------------------
    def to_list_json(self) -> dict[str, Any]:
        """The data of ``ansible-inventory --list`` (print it with :func:`dumps`)."""
        seen: set[str] = set()

        def fmt(group: Group) -> dict[str, Any]:
            entry: dict[str, Any] = {}
            out = {group.name: entry}
            if group.name != "all":
                entry["hosts"] = list(group.hosts)
            entry["children"] = list(group.children)
            for child in group.children:
                if child not in seen:
                    out.update(fmt(self._groups[child]))
                    seen.add(child)
            for key in ("hosts", "children"):
                if not entry.get(key, True):
                    del entry[key]
            if not entry:
                del out[group.name]
            return out

        result = fmt(self._groups["all"])
        hostvars = {}
        for host in self.hosts:
            merged = self.host_vars(host)
            if merged:
                hostvars[host] = _jsonable(merged, wrap_unsafe=True)
        result["_meta"] = {"hostvars": hostvars, "profile": "inventory_legacy"}
        return result

    def to_host_json(self, host: str) -> dict[str, Any]:
        """The data of ``ansible-inventory --host HOST``. Like Ansible, `host` may be any pattern
        that selects exactly one host."""
        if host not in self._inventory_host_vars:
            matched = self.select(host)
            if len(matched) != 1:
                raise InputError(f"--host needs a single host; {host!r} matched "
                                 f"{len(matched)}: {', '.join(matched)}")
            host = matched[0]
        return _jsonable(self.host_vars(host), wrap_unsafe=False)

    def graph(self, group: str = "all", show_vars: bool = False) -> str:
        """The text of ``ansible-inventory --graph [GROUP] [--vars]`` (without the final newline)."""
        if group not in self._groups:
            raise self._unknown_group(group, "--graph takes a group name")

        def name(text: str, depth: int) -> str:
            return "  |" * depth + "--" + text if depth else text

        def show(values: dict[str, Any], depth: int) -> list[str]:
            return [name(f"{{{k} = {v}}}", depth) for k, v in sorted(values.items())]

        def walk(g: Group, depth: int) -> list[str]:
            lines = [name(f"@{g.name}:", depth)]
            for child in g.children:
                lines.extend(walk(self._groups[child], depth + 1))
            if g.name != "all":
                for host in g.hosts:
                    lines.append(name(host, depth + 1))
                    if show_vars:
                        lines.extend(show(self.host_vars(host), depth + 2))
            if show_vars:
                lines.extend(show(self.group_vars(g.name), depth + 1))
            return lines

        return "\n".join(walk(self._groups[group], 0))

    # -- errors ----------------------------------------------------------------------------------
    def _known(self, host: str) -> None:
        if host not in self._inventory_host_vars:
            raise InputError(f"unknown host {host!r}",
                             hint=f"the inventory has {len(self.hosts)} hosts; "
                                  "`invoke inventory --graph` lists them")

    def _unknown_group(self, group: str, what: str = "unknown group") -> InputError:
        return InputError(f"{what}: {group!r} is not a group",
                          hint="known groups: " + ", ".join(sorted(self._groups)))


def _drop_internal(merged: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in merged.items() if k not in INTERNAL_VARS}


_HANDED_OVER: tuple[list[str], Inventory] | None = None


def hand_over(paths: list[str], inventory: Inventory) -> None:
    """An inventory read before the command's own read (ripcord/fasthalt.py's, a tenth of a
    second before): the command's load_operator_inventory of the same paths takes it, once,
    instead of reading the files again. Both then act on one view of the fleet."""
    global _HANDED_OVER
    _HANDED_OVER = ([str(p) for p in paths], inventory)


def load_operator_inventory(paths: Iterable[str | os.PathLike] | None = None) -> Inventory:
    """The operator's inventory: the given files or directories, else the configured ones
    (ripcord.yaml, RIPCORD_INVENTORY), else every file in the checkout's inventory/."""
    import sys

    from ripcord.config import default_inventory

    global _HANDED_OVER
    wanted = [str(p) for p in (list(paths or []) or default_inventory())]
    handed, _HANDED_OVER = _HANDED_OVER, None
    inventory = handed[1] if handed and handed[0] == wanted else Inventory.load(wanted)
    for warning in inventory.warnings:  # stderr: stdout may be reserved for --json
        print(f"warning: {warning}", file=sys.stderr)
    return inventory
