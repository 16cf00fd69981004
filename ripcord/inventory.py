"""Ansible-format YAML inventories: hosts, groups, merged host vars and host patterns.

ripcord reads the same inventories as Ansible and must see the same fleet, so this module
follows ansible-core 2.19 step by step rather than approximately:

* the YAML inventory plugin: ``all`` / ``hosts`` / ``vars`` / ``children``, nested groups, host
  ranges (``exec-[01:20]``, ``db-[a:c]``, ``[1:10:2]``), ``host:port``, implicit ``all`` and
  ``ungrouped`` (``_Builder`` mirrors ``InventoryData``);
* ``group_vars/`` and ``host_vars/`` beside every inventory source (``<name>``, ``<name>.yml``,
  ``.yaml`` or ``.json``, or a ``<name>/`` directory of such files read in sorted order);
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
import re
import shlex
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from ripcord import yamlbounds
from ripcord.errors import InputError
from ripcord.patterns import parse_address, select_hosts
from ripcord.unsafe import Unsafe
from ripcord.unsafe import mark as _mark_unsafe

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
VARS_EXTENSIONS = (".yml", ".yaml", ".json")
SECTIONS = ("hosts", "vars", "children")
# Files a directory source skips besides non-YAML ones (they live beside the inventories).
SKIPPED_FILES = re.compile(r"(^\.|\.example\.ya?ml$|^topology\.ya?ml$)")
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
# What no host name (nor host pattern) holds: a name is also a directory of fetch's dest and a
# line of the output, so '/', line breaks and other control characters are refused outright.
UNSAFE_NAME = re.compile(r"[\s/\x00-\x1f\x7f]")


# -- reading YAML / JSON with line numbers ---------------------------------------------------------

class _Mapping(dict):
    """A YAML mapping that remembers the 1-based line of each of its keys."""

    key_lines: dict


_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """PyYAML's safe loader with Ansible's tags (``!unsafe``; ``!vault`` is refused) and key
    marks for error messages."""

    def construct_yaml_map(self, node: yaml.MappingNode) -> Iterator[_Mapping]:
        data = _Mapping()
        data.key_lines = {}
        yield data
        data.update(self.construct_mapping(node))  # flattens << merge keys into node.value
        for key_node, _ in node.value:
            data.key_lines[self.construct_object(key_node)] = key_node.start_mark.line + 1

    def construct_unsafe(self, node: yaml.Node) -> Any:
        # Ansible re-resolves the node's implicit tag and constructs it eagerly, marking strings.
        plain = copy.copy(node)
        plain.tag = self.resolve(type(node), node.value, (True, False))
        return _mark_unsafe(self.construct_object(plain, deep=True))

    def construct_vault(self, node: yaml.Node) -> Any:
        raise _Refused(None, None, f"vault-encrypted values ({node.tag}) are not supported: "
                       "reference the secret with a {{ lookup(...) }} template instead",
                       node.start_mark)


class _Refused(yaml.constructor.ConstructorError):
    """Valid YAML that ripcord will not read."""


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_yaml_map)
_Loader.add_constructor("tag:yaml.org,2002:python/dict", _Loader.construct_yaml_map)
_Loader.add_constructor("tag:yaml.org,2002:python/unicode", _Loader.construct_yaml_str)
_Loader.add_constructor("!unsafe", _Loader.construct_unsafe)
_Loader.add_constructor("!vault", _Loader.construct_vault)
_Loader.add_constructor("!vault-encrypted", _Loader.construct_vault)


class _VaultInJSON(ValueError):
    pass


def _json_object(obj: dict) -> Any:
    """Ansible's JSON decoder turns its own serialisations back into tagged values."""
    if len(obj) == 1 and "__ansible_unsafe" in obj:
        return _mark_unsafe(obj["__ansible_unsafe"])
    if len(obj) == 1 and "__ansible_vault" in obj:
        raise _VaultInJSON("vault-encrypted values (__ansible_vault) are not supported: "
                           "reference the secret with a {{ lookup(...) }} template instead")
    return obj


@dataclass
class _Document:
    """One parsed file, and how to find the line of a key in it."""

    path: str
    text: str
    data: Any
    _lines: Any = ...  # the same document parsed by _Loader, for key lines (... = not yet)

    @classmethod
    def read(cls, path: str) -> _Document:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError as e:  # where the first bad byte is
            raise InputError(f"not UTF-8 text (byte {e.object[e.start]:#04x})", file=path,
                             line=e.object[:e.start].count(b"\n") + 1) from None
        except OSError as e:
            raise InputError(f"cannot read {path}: {e}") from None
        yamlbounds.check(text, path)  # nesting or aliases no walk over the data could finish
        try:  # Ansible tries JSON first, then YAML (ansible.parsing.utils.yaml.from_yaml)
            return cls(path, text, json.loads(text, object_hook=_json_object))
        except _VaultInJSON as e:
            raise InputError(str(e), file=path, line=1) from None
        except RecursionError:  # JSON that YAML could not parse to measure
            raise InputError(f"nested more than {yamlbounds.MAX_DEPTH} levels deep", file=path) from None
        except ValueError:
            pass
        try:
            data = yaml.load(text, Loader=_Loader)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            what = e.problem or e.context or "not a YAML document"
            where = f" {e.context}" if e.context and e.problem else ""
            if e.context_mark and mark and e.context_mark.line != mark.line:
                where += f" (begun on line {e.context_mark.line + 1})"
            message = what if isinstance(e, _Refused) else f"invalid YAML: {what}{where}"
            raise InputError(message, file=path, line=mark.line + 1 if mark else None) from None
        except yaml.YAMLError as e:
            raise InputError(f"invalid YAML: {e}", file=path) from None
        return cls(path, text, data, data)

    def top_line(self) -> int:
        """1-based line where the document's content starts (after comments), or 1."""
        try:
            node = yaml.compose(self.text, Loader=_Loader)
        except yaml.YAMLError:
            node = None
        return node.start_mark.line + 1 if node is not None else 1

    def line(self, *keys: Any) -> int:
        """1-based line of the last of `keys` (a path of mapping keys from the top), or 1."""
        if self._lines is ...:  # JSON: the same text read as YAML gives the lines
            try:
                self._lines = yaml.load(self.text, Loader=_Loader)
            except yaml.YAMLError:
                self._lines = None
        node, line = self._lines, 1
        for key in keys:
            if not isinstance(node, _Mapping) or key not in node:
                break
            line, node = node.key_lines.get(key, line), node[key]
        return line


def _type_name(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", int: "integer", float: "number",
            bool: "boolean", type(None): "null"}.get(type(value), type(value).__name__)


# -- host ranges ----------------------------------------------------------------------------------

def expand_host_pattern(name: str) -> tuple[list[str], int | None]:
    """Host names and port of one ``hosts:`` key: ``web-[01:03]:2222`` gives
    ``(['web-01', 'web-02', 'web-03'], 2222)``. Same rules (and quirks) as Ansible's
    ``_expand_hostpattern``; raises ValueError with Ansible's reason for a bad range."""
    parsed = parse_address(name)
    pattern, port = parsed if parsed else (name, None)
    return (_expand_range(pattern) if "[" in pattern else [pattern]), port


def _expand_range(line: str) -> list[str]:
    parts = line.replace("[", "|", 1).replace("]", "|", 1).split("|")
    if len(parts) != 3:
        raise ValueError("unbalanced brackets in host range")
    head, nrange, tail = parts
    bounds = nrange.split(":")
    if len(bounds) not in (2, 3):
        raise ValueError("host range must be begin:end or begin:end:step")
    beg, end = bounds[0] or "0", bounds[1]
    step = int(bounds[2]) if len(bounds) == 3 else 1
    if not end:
        raise ValueError("host range must specify end value")
    width = len(beg) if beg[0] == "0" and len(beg) > 1 else 0
    if width and width != len(end):
        raise ValueError("host range must specify equal-length begin and end formats")
    try:  # str.index finds substrings, so Ansible's alphabetic test is a substring test too
        i_beg, i_end = string.ascii_letters.index(beg), string.ascii_letters.index(end)
    except ValueError:
        seq: Iterable[Any] = range(int(beg), int(end) + 1, step)
    else:
        if i_beg > i_end:
            raise ValueError("host range must have begin <= end")
        seq = string.ascii_letters[i_beg:i_end + 1:step]
    hosts = []
    for item in seq:
        name = f"{head}{str(item).zfill(width)}{tail}"
        hosts.extend(_expand_range(name) if "[" in name else [name])
    return hosts


# -- the inventory model ---------------------------------------------------------------------------

@dataclass(eq=False)
class Group:
    """A group as the inventory files declare it (group_vars/ files are kept apart)."""

    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)  # direct members, in inventory order
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    depth: int = 0  # longest path from ``all``: what Ansible sorts group vars by
    priority: int = 1  # ansible_group_priority, set in an inventory file


class _Builder:
    """Accumulates inventory sources the way Ansible's InventoryData does."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}
        self.host_vars: dict[str, dict[str, Any]] = {}  # inventory order: first seen first
        self.warnings: list[str] = []  # `file:line: what was skipped`, as Ansible warns
        self._members: dict[str, set[str]] = {}  # group -> direct hosts, for speed
        self.add_group("all")
        self.add_group("ungrouped")
        self.add_child("all", "ungrouped")

    # structure ---------------------------------------------------------------------------------
    def add_group(self, name: str) -> str:
        if name not in self.groups:
            self.groups[name] = Group(name)
            self._members[name] = set()
        return name

    def add_host(self, name: str, group: str, port: int | None) -> None:
        if name not in self.host_vars:
            # The port of a host:port key counts only where the host first appears (as in Ansible).
            self.host_vars[name] = {"ansible_port": port} if port else {}
        if name not in self._members[group]:
            self._members[group].add(name)
            self.groups[group].hosts.append(name)

    def ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(self.groups[name].parents)
        while todo:
            g = todo.pop()
            if g not in seen:
                seen.add(g)
                todo.extend(self.groups[g].parents)
        return seen

    def add_child(self, parent: str, child: str) -> None:
        p, c = self.groups[parent], self.groups[child]
        if child in p.children:
            return
        if child == parent or child in self.ancestors(parent):
            raise ValueError(f"making {child!r} a child of {parent!r} creates a cycle")
        p.children.append(child)
        if parent not in c.parents:
            c.parents.append(parent)
        self._deepen(p)

    def _deepen(self, group: Group) -> None:
        for name in group.children:
            child = self.groups[name]
            if child.depth < group.depth + 1:
                child.depth = group.depth + 1
                self._deepen(child)

    def reconcile(self) -> None:
        """Ansible's reconcile_inventory: orphan groups go under ``all``; hosts in no group but
        ``all`` go to ``ungrouped``, hosts in another group leave it."""
        for g in list(self.groups.values()):
            if g.name != "all" and not g.parents:
                self.add_child("all", g.name)
        ungrouped = self.groups["ungrouped"]
        membership = self.memberships()
        for host in self.host_vars:
            mine = membership[host]
            if "ungrouped" in mine:
                if mine - {"all", "ungrouped"} and host in self._members["ungrouped"]:
                    ungrouped.hosts.remove(host)
                    self._members["ungrouped"].discard(host)
            elif mine <= {"all"}:
                if host in self.groups:
                    # Ansible's add_child looks up groups before hosts: an ungrouped host named
                    # like a group puts that *group* under ungrouped (the host stays out).
                    try:
                        self.add_child("ungrouped", host)
                    except ValueError as e:
                        raise InputError(f"ungrouped host {host!r} shares its name with a group, "
                                         f"and {e}") from None
                    membership = self.memberships()
                else:
                    self.add_host(host, "ungrouped", None)

    def memberships(self) -> dict[str, set[str]]:
        """Every group each host belongs to, directly or through a child group."""
        closure = {g: self.ancestors(g) | {g} for g in self.groups}
        out: dict[str, set[str]] = {h: set() for h in self.host_vars}
        for g in self.groups.values():
            for h in g.hosts:
                out[h] |= closure[g.name]
        return out

    # reading one inventory file (ansible.plugins.inventory.yaml) --------------------------------
    def parse(self, doc: _Document) -> None:
        data = doc.data
        if data is None or data == {} or data == "" or data is False:
            raise InputError("inventory file is empty: expected a mapping of group names "
                             "(usually starting with 'all:')", file=doc.path, line=1)
        if not isinstance(data, dict):
            raise InputError(f"expected a mapping of group names at the top level, got a "
                             f"{_type_name(data)}", file=doc.path, line=doc.top_line())
        if data.get("plugin"):
            raise InputError("inventory plugin configurations are not supported: ripcord reads "
                             "YAML inventories (all / hosts / vars / children)",
                             file=doc.path, line=doc.line("plugin"))
        for name, body in data.items():
            if not self._skipped(doc, name, body):
                self._parse_group(doc, (name,), name, body)

    def _skipped(self, doc: _Document, name: Any, body: Any) -> bool:
        """A top-level key that is no group, such as `x-common: &common {...}` holding an anchor
        for `<<: *common` merges: Ansible's yaml plugin skips it with a warning (a mapping still
        makes an empty group), and so does ripcord. Inside a group, a stray key stays an error."""
        if not isinstance(name, str) or not name or body is None:
            return False
        where = f"{doc.path}:{doc.line(name)}"
        if not isinstance(body, dict):
            self.warnings.append(f"{where}: skipping top-level key {name!r}: a {_type_name(body)} "
                                 "is not a group definition (as ansible-inventory does)")
            return True
        if not body or set(body) & set(SECTIONS):
            return False
        self.add_group(name)
        self.warnings.append(f"{where}: top-level key {name!r} has no hosts, vars or children: "
                             f"an empty group, its keys ({', '.join(map(str, body))}) skipped "
                             "(as ansible-inventory does)")
        return True

    def _parse_group(self, doc: _Document, path: tuple, name: Any, body: Any) -> str:
        fail = _Failer(doc, path)
        if not isinstance(name, str) or not name:
            raise fail(f"group name must be a non-empty string, got {_type_name(name)} {name!r}")
        if body is not None and not isinstance(body, dict):
            raise fail(f"group {name!r} must be a mapping with hosts, vars or children "
                       f"(or empty), got a {_type_name(body)}")
        self.add_group(name)
        for key, value in (body or {}).items():
            where = fail.at(key)
            if key not in SECTIONS:
                raise where(f"unknown key {key!r} in group {name!r}: expected hosts, vars "
                            "or children")
            if isinstance(value, str):  # Ansible accepts a single name: `hosts: web-1`
                value = {value: None}
            if value is None:
                continue
            if not isinstance(value, dict):
                wanted = {"hosts": "host names", "vars": "variables", "children": "group names"}
                raise where(f"'{key}' of group {name!r} must be a mapping of {wanted[key]}, "
                            f"got a {_type_name(value)}")
            if key == "vars":
                for var, val in value.items():
                    self._set_group_var(where.at(var), name, var, val)
            elif key == "children":
                for child, child_body in value.items():
                    child = self._parse_group(doc, (*path, key, child), child, child_body)
                    try:
                        self.add_child(name, child)
                    except ValueError as e:
                        raise where.at(child)(str(e)) from None
            else:
                for host_key, host_vars in value.items():
                    self._parse_hosts(where.at(host_key), name, host_key, host_vars)
        return name

    def _set_group_var(self, fail: _Failer, group: str, var: Any, value: Any) -> None:
        if var == "ansible_group_priority":
            try:
                self.groups[group].priority = int(value)
            except (TypeError, ValueError):
                raise fail(f"ansible_group_priority of group {group!r} must be an integer, "
                           f"got {value!r}") from None
        else:
            self.groups[group].vars[var] = _plain(value)

    def _parse_hosts(self, fail: _Failer, group: str, key: Any, host_vars: Any) -> None:
        if not isinstance(key, str) or not key:
            raise fail(f"host name in group {group!r} must be a non-empty string, got "
                       f"{_type_name(key)} {key!r} (quote numbers)")
        host_vars = host_vars or {}  # Ansible reads any empty value as no vars
        if not isinstance(host_vars, dict):
            raise fail(f"host {key!r} in group {group!r} must map to a mapping of variables "
                       f"(or nothing), got a {_type_name(host_vars)}")
        if UNSAFE_NAME.search(key):  # a name becomes a path (fetch's dest/<host>/) and a log line
            raise fail(f"host name {key!r} in group {group!r} holds whitespace, a control "
                       "character or '/'")
        try:
            names, port = expand_host_pattern(key)
        except ValueError as e:
            raise fail(f"invalid host range {key!r}: {e}") from None
        for name in names:
            self.add_host(name, group, port)
            if name in self.groups:
                # Ansible's InventoryData.set_variable looks up groups before hosts: the vars of
                # a host named like an existing group are set on that group.
                for var, value in host_vars.items():
                    self._set_group_var(fail.at(var), name, var, value)
            else:
                self.host_vars[name].update(_plain(host_vars))


class _Failer:
    """Builds InputErrors that point at a key path in one document."""

    def __init__(self, doc: _Document, path: tuple) -> None:
        self.doc, self.path = doc, path

    def at(self, key: Any) -> _Failer:
        return _Failer(self.doc, (*self.path, key))

    def __call__(self, message: str) -> InputError:
        return InputError(message, file=self.doc.path, line=self.doc.line(*self.path))


def _plain(value: Any) -> Any:
    """A deep copy with plain dicts (no line marks), keeping Unsafe strings."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# -- sources and vars files -----------------------------------------------------------------------

def expand_sources(sources: Iterable[str | os.PathLike]) -> list[tuple[str, list[str]]]:
    """Each source with the inventory files it stands for.

    A directory means every ``.yml``/``.yaml`` file in it, in name order, except hidden files,
    ``*.example.yml``/``*.example.yaml`` and ``topology.yml`` (``group_vars/`` and ``host_vars/``
    are directories, so never files of it); a file means itself.
    """
    out = []
    for source in sources:
        path = os.path.abspath(os.fspath(source))
        if os.path.isdir(path):
            files = [os.path.join(path, n) for n in sorted(os.listdir(path))
                     if n.endswith((".yml", ".yaml")) and not SKIPPED_FILES.search(n)
                     and os.path.isfile(os.path.join(path, n))]
            out.append((path, files))
        elif os.path.isfile(path):
            if os.path.splitext(path)[1] not in ("", *VARS_EXTENSIONS):
                raise InputError(f"{source}: not a YAML inventory (expected .yml, .yaml or "
                                 ".json, or a directory of them)")
            out.append((path, [path]))
        else:
            raise InputError(f"inventory source not found: {source}",
                             hint="pass a YAML inventory file or a directory of them")
    return out


def _vars_files(directory: str, name: str) -> list[str]:
    """Ansible's DataLoader.find_vars_files: the first of ``name``, ``name.yml``, ``name.yaml``,
    ``name.json`` that exists; a directory yields its files recursively, in sorted order."""
    base = os.path.join(directory, name)
    for candidate in (base, *(base + ext for ext in VARS_EXTENSIONS)):
        if os.path.isdir(candidate):
            return _dir_vars_files(candidate)
        if os.path.exists(candidate):
            return [candidate]
    return []


def _dir_vars_files(directory: str) -> list[str]:
    found = []
    for entry in sorted(os.listdir(directory)):
        if entry.startswith(".") or entry.endswith("~"):
            continue
        full, ext = os.path.join(directory, entry), os.path.splitext(entry)[1]
        if os.path.isdir(full) and not ext:
            found.extend(_dir_vars_files(full))
        elif os.path.isfile(full) and (not ext or ext in VARS_EXTENSIONS):
            found.append(full)
    return found


def _load_vars_file(path: str) -> dict[str, Any]:
    doc = _Document.read(path)
    if not doc.data:  # Ansible skips empty files (and any other empty value)
        return {}
    if not isinstance(doc.data, dict):
        raise InputError(f"vars file must be a mapping of variable names to values, got a "
                         f"{_type_name(doc.data)}", file=path, line=doc.top_line())
    return _plain(doc.data)


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
                             hint="an inventory directory must hold .yml or .yaml files")
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


def load_operator_inventory(paths: Iterable[str | os.PathLike] | None = None) -> Inventory:
    """The operator's inventory: the given files or directories, else the configured ones
    (ripcord.yaml, RIPCORD_INVENTORY), else every file in the checkout's inventory/."""
    import sys

    from ripcord.config import default_inventory

    paths = list(paths or [])
    inventory = Inventory.load(paths or default_inventory())
    for warning in inventory.warnings:  # stderr: stdout may be reserved for --json
        print(f"warning: {warning}", file=sys.stderr)
    return inventory
