"""Reading inventory sources as Ansible's YAML inventory plugin does: files and directories,
YAML or JSON with line numbers (for file:line errors), `!unsafe` and refused `!vault`, host
ranges, the group tree (``_Builder`` mirrors ``InventoryData``) and the group_vars/ and
host_vars/ files beside each source. ripcord.inventory resolves what is read here: merged vars,
patterns, connection settings, ansible-inventory's outputs.
"""

from __future__ import annotations

import copy
import json
import os
import re
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from ripcord import yamlbounds
from ripcord.errors import InputError
from ripcord.patterns import parse_address
from ripcord.unsafe import mark as _mark_unsafe

VARS_EXTENSIONS = (".yml", ".yaml", ".json")
SECTIONS = ("hosts", "vars", "children")
# Files a directory source skips besides non-YAML ones (they live beside the inventories).
SKIPPED_FILES = re.compile(r"(^\.|\.example\.ya?ml$|^(topology|escalation)\.ya?ml$)")
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
    ``*.example.yml``/``*.example.yaml``, ``topology.yml`` and ``escalation.yml`` (``group_vars/``
    and ``host_vars/`` are directories, so never files of it); a file means itself.
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
