"""Operator configuration, found the way invoke finds its own, so an installed ripcord needs no
checkout: which inventory, who the operator is, where state lives, and the operator's own
playbook and check directories (added beside the shipped ones, never by editing the package).

Precedence, lowest first: ripcord's defaults; the user's file ($XDG_CONFIG_HOME, else
~/.config, /ripcord/ripcord.yaml); the project's ripcord.yaml, the nearest one in the current
directory or a parent; RIPCORD_* environment variables; and last an option given on the command
line. Relative paths in a file are relative to that file's directory. `ripcord config` shows every
value in force and where it came from. A bad file is invalid input naming file:line (exit 2).
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ripcord.errors import InputError
from ripcord.paths import checkout

FILE_NAME = "ripcord.yaml"


@dataclass(frozen=True)
class Key:
    env: str
    kind: str  # text | path | paths
    help: str
    separator: str = os.pathsep  # between paths in the environment variable


KEYS = {
    "inventory": Key("RIPCORD_INVENTORY", "paths", "inventory files or directories when no -i is given",
                     separator=","),
    "operator": Key("RIPCORD_OPERATOR", "text", "who runs ripcord: journal entries, approvals"),
    "state_dir": Key("RIPCORD_STATE_DIR", "path", "journal, approvals, sandbox fleets"),
    "playbook_dirs": Key("RIPCORD_PLAYBOOK_DIRS", "paths", "where `play NAME` looks after the "
                         "current directory (then the shipped playbooks)"),
    "check_dirs": Key("RIPCORD_CHECK_DIRS", "paths", "checks `verify` runs besides the shipped ones"),
}


@dataclass(frozen=True)
class Setting:
    value: Any
    source: str  # "default", "FILE:LINE" or "$RIPCORD_NAME"


def user_file(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ripcord" / FILE_NAME


def project_file(cwd: Path | None = None) -> Path | None:
    """The nearest ripcord.yaml in the current directory or one of its parents."""
    here = Path(cwd or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / FILE_NAME).is_file():
            return directory / FILE_NAME
    return None


def load(cwd: Path | None = None, environ: dict[str, str] | None = None) -> dict[str, Setting]:
    """Every key's value in force and its source."""
    env = os.environ if environ is None else environ
    found = {key: Setting(_default(key, env), "default") for key in KEYS}
    for path in (user_file(env), project_file(cwd)):
        if path is not None and path.is_file():
            found.update(_read(path))
    for key, spec in KEYS.items():
        raw = env.get(spec.env)
        if raw:
            found[key] = Setting(_from_env(spec, raw), f"${spec.env}")
    return found


def value(key: str) -> Any:
    return load()[key].value


def searched(cwd: Path | None = None) -> list[str]:
    """The files looked for, lowest precedence first (for `ripcord config`)."""
    project = project_file(cwd)
    return [str(user_file()), str(project) if project else
            f"{FILE_NAME} in {Path(cwd or Path.cwd()).resolve()} or a parent (none found)"]


def default_inventory() -> list[str]:
    """The inventory when no -i is given: configured, else the checkout's inventory/."""
    configured = value("inventory")
    if configured:
        return [str(p) for p in configured]
    root = checkout()
    if root is None:
        raise InputError("no inventory: ripcord is installed and none is configured",
                         hint=f"give -i FILE, or set inventory: in {FILE_NAME} or RIPCORD_INVENTORY")
    return [str(root / "inventory")]


def _default(key: str, env: dict[str, str]) -> Any:
    if key == "state_dir":  # not /tmp: sshd's StrictModes refuses world-writable parents
        if os.geteuid() == 0:
            return Path("/var/lib/ripcord")
        return Path(env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")) / "ripcord"
    if key == "operator":
        return getpass.getuser()
    return []


def _from_env(spec: Key, raw: str) -> Any:
    if spec.kind == "text":
        return raw
    if spec.kind == "path":
        return Path(raw).expanduser()
    return [Path(p).expanduser() for p in raw.split(spec.separator) if p.strip()]


def _read(path: Path) -> dict[str, Setting]:
    from ripcord.yamlbounds import problem

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read: {getattr(exc, 'strerror', None) or exc}", file=str(path)) from None
    where = problem(text)
    if where:
        raise InputError(where[1], file=str(path), line=where[0])
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise InputError(f"invalid YAML: {exc.problem or exc}", file=str(path),
                         line=mark.line + 1 if mark else None) from None
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise InputError("expected a mapping of settings", file=str(path), line=root.start_mark.line + 1)
    found = {}
    for key_node, value_node in root.value:
        key, line = key_node.value, key_node.start_mark.line + 1
        if key not in KEYS:
            raise InputError(f"unknown setting {key!r}", file=str(path), line=line,
                             hint="known: " + ", ".join(KEYS))
        found[key] = Setting(_value(KEYS[key], value_node, path), f"{path}:{line}")
    return found


def _value(spec: Key, node: yaml.Node, path: Path) -> Any:
    items = node.value if isinstance(node, yaml.SequenceNode) and spec.kind == "paths" else [node]
    texts = []
    for item in items:
        if not isinstance(item, yaml.ScalarNode) or item.tag != "tag:yaml.org,2002:str" or not item.value:
            shape = "a path or a list of paths" if spec.kind == "paths" else "a non-empty string"
            raise InputError(f"expected {shape}", file=str(path), line=item.start_mark.line + 1)
        texts.append(item.value)
    if spec.kind == "text":
        return texts[0]
    paths = [path.parent / Path(t).expanduser() for t in texts]  # an absolute path stays absolute
    return paths[0] if spec.kind == "path" else paths


def find_playbook(name: str) -> str:
    """`play NAME`: the path as given when it exists, else NAME (or NAME.yml) in the configured
    playbook_dirs, then in the shipped playbooks; else as given (its load says it is missing)."""
    from ripcord.paths import data_dir

    if Path(name).exists() or Path(name).is_absolute():
        return name
    for directory in [*value("playbook_dirs"), data_dir("playbooks")]:
        for candidate in (Path(directory) / name, Path(directory) / f"{name}.yml"):
            if candidate.is_file():
                return str(candidate)
    return name
