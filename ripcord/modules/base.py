"""The module contract: what a task's module declares, receives and returns.

A module says which arguments it takes (so a playbook is validated before any host is
touched), and its run() brings one host to the state asked for, honestly reporting `changed`.
Under --check it changes nothing and reports what it would change. Run twice, the second run
reports changed=False (idempotence, as Molecule tests it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ripcord.connection import Connection
    from ripcord.errors import UnreachableError
    from ripcord.templating import Secrets, Templar

ANY = object()  # an Arg type that accepts any value


@dataclass(frozen=True)
class Arg:
    """One module argument: its type(s), whether it is required, its default and choices."""

    type: Any = str  # a type, a tuple of types, or ANY
    required: bool = False
    default: Any = None
    choices: tuple = ()
    secret: bool = False  # never shown: redacted in output, the journal and errors
    expression: bool = False  # a bare Jinja2 expression (assert's that), checked as `when:` is
    help: str = ""

    def problem(self, value: Any) -> str | None:
        """Why value is not acceptable, or None. Templated strings are checked after rendering."""
        if self.type is ANY or value is None:
            return None
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        if isinstance(value, bool) and bool not in types:
            return f"expected {_names(types)}, got a boolean"
        if float in types and isinstance(value, int):
            return None
        if not isinstance(value, types):
            return f"expected {_names(types)}, got {type(value).__name__}"
        if self.choices and value not in self.choices:
            return f"expected one of {', '.join(map(str, self.choices))}, got {value!r}"
        return None


def _names(types: tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             list: "a list", dict: "a mapping"}
    return " or ".join(names.get(t, t.__name__) for t in types)


@dataclass
class Result:
    """What a module did on one host. `data` is module-specific (rc, stdout, status, json...)."""

    changed: bool = False
    failed: bool = False
    skipped: bool = False
    msg: str = ""
    diff: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def registered(self) -> dict[str, Any]:
        """The value `register:` stores, in Ansible's shape."""
        return {**self.data, "changed": self.changed, "failed": self.failed,
                "skipped": self.skipped, "msg": self.msg}


@dataclass
class TaskContext:
    """Everything a module may use on one host for one task."""

    host: str
    vars: dict[str, Any]  # the host's variables, rendered where used; read-only
    conn: Connection | None  # None for modules that run on the controller only
    check: bool = False
    diff: bool = False
    timeout: float | None = None
    templar: Templar | None = None
    secrets: Secrets | None = None
    confirm: Callable[[str, str | None], bool] | None = None  # (prompt, typed word) -> yes?
    playbook_dir: str = "."
    unreachable: str | None = None  # ssh_optional modules: why conn is None (the connect error)
    environment: dict[str, str] = field(default_factory=dict)  # the task's, for every command
    become: str | None = None  # the user every command runs as, through sudo -n

    def run(self, command: str, **kwargs):
        """Run a command on the host, bounded by the task's timeout."""
        assert self.conn is not None, "this module runs on the controller"
        if self.environment:
            kwargs.setdefault("env", self.environment)
        if self.become:
            kwargs.setdefault("become", self.become)
        return self.conn.run(command, timeout=kwargs.pop("timeout", self.timeout), **kwargs)


class Module:
    """Base class: subclasses set name and args and implement run()."""

    name: ClassVar[str]
    args: ClassVar[dict[str, Arg]] = {}
    free_form: ClassVar[str | None] = None  # the argument a bare string fills (command: "ls")
    on_controller: ClassVar[bool] = False  # needs no connection to the host
    open_args: ClassVar[bool] = False  # takes any argument names (set_fact)
    once: ClassVar[bool] = False  # runs once per batch, for every host (confirm asks once)
    fleet: ClassVar[bool] = False  # run_fleet() acts on every host of the batch at once
    ssh_optional: ClassVar[bool] = False  # fleet: also gets SSH-unreachable hosts (conn None)
    defines: ClassVar[frozenset[str]] = frozenset()  # variables a run sets (service_facts: ansible_facts)

    @classmethod
    def check_args(cls, args: dict[str, Any]) -> list[str]:
        """Problems with the arguments as written (before rendering): unknown, missing, wrong type.

        Values that are templates ("{{ x }}") are not type-checked here.
        """
        problems = [f"unknown argument {key!r} (expected: {', '.join(sorted(cls.args)) or 'none'})"
                    for key in args if key not in cls.args]
        for key, spec in cls.args.items():
            if spec.required and key not in args:
                problems.append(f"missing required argument {key!r}")
            elif key in args and not _is_template(args[key]):
                problem = spec.problem(args[key])
                if problem:
                    problems.append(f"argument {key!r}: {problem}")
        problems.extend(cls.check_combination(args))
        return problems

    @classmethod
    def check_combination(cls, args: dict[str, Any]) -> list[str]:
        """Cross-argument rules (e.g. copy needs content or src); override where needed."""
        return []

    @classmethod
    def with_defaults(cls, args: dict[str, Any]) -> dict[str, Any]:
        return {**{k: s.default for k, s in cls.args.items() if s.default is not None}, **args}

    def run(self, ctx: TaskContext, args: dict[str, Any]) -> Result:
        raise NotImplementedError

    def run_fleet(self, contexts: dict[str, TaskContext], args: dict[str, Any]
                  ) -> dict[str, Result | UnreachableError]:
        """Fleet modules: one call for the whole batch, a result (or UnreachableError) per host."""
        raise NotImplementedError


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


# Where each built-in module lives. Module files are imported when a playbook first names one
# of their modules, so a run pays only for what it uses (importing them all costs ~50 ms).
LOCATIONS = {
    "command": "command", "shell": "command",
    "assert": "logic", "fail": "logic", "set_fact": "logic", "debug": "logic", "confirm": "logic",
    "file": "files", "copy": "files", "template": "files", "env": "envfile",
    "stat": "filestat", "fetch": "filestat", "wait_for": "waiting", "uri": "waiting",
    "service": "service", "services": "service", "restart": "service", "nats": "bus", "jetstream": "bus",
    "postgres": "data", "redis": "data", "halt": "killswitch",
    "titan_command": "trading", "exchange": "trading", "checks": "trading",
    "backup": "backup", "migrate": "backup", "release": "release", "diagnostics": "diagnostics",
    "lineinfile": "lineinfile", "pause": "ansiblecompat", "ping": "ansiblecompat",
    "systemd": "ansiblecompat", "service_facts": "ansiblecompat", "setup": "facts", "meta": "ansiblecompat",
    "reconcile": "state", "rotate": "rotate",
}

# Ansible's builtin modules that ripcord has too: `ansible.builtin.copy` (or `ansible.legacy.`)
# is ripcord's copy. ripcord's own modules (titan_command, halt ...) take no such prefix.
ANSIBLE_PREFIXES = ("ansible.builtin.", "ansible.legacy.")
ANSIBLE_NAMES = frozenset({
    "command", "shell", "assert", "fail", "set_fact", "debug", "file", "copy", "template", "stat",
    "fetch", "wait_for", "uri", "service", "lineinfile", "pause", "ping", "systemd",
    "service_facts", "meta"})
ANSIBLE_ALIASES = {"systemd_service": "systemd"}  # Ansible's newer name for systemd
# Ansible modules refused with the reason (the playbook is invalid input, exit 2).
PACKAGE_MANAGERS = ("apt", "apt_key", "apt_repository", "yum", "yum_repository", "dnf", "dnf5",
                    "package", "pip")
CONFIGURATION = ("user", "group", "cron", "mount", "sysctl", "hostname", "git", "get_url",
                 "unarchive")
REFUSED = {
    **dict.fromkeys(PACKAGE_MANAGERS, "package managers: ripcord remediates incidents; install "
                                      "packages with your configuration management"),
    **dict.fromkeys(CONFIGURATION, "configuration management: ripcord remediates incidents; "
                                   "configure hosts with your configuration management"),
    **dict.fromkeys(("blockinfile", "replace"), "this file edit: use lineinfile for a line, "
                                                "template or copy for the whole file"),
    "reboot": "rebooting hosts: ripcord restarts services (service, systemd, restart), never machines",
    "wait_for_connection": "waiting for a rebooted host: ripcord never reboots machines",
    "find": "find; use `shell: find PATH -name ... -mtime +N` with register, then loop file over "
            "its stdout_lines",
    "async_status": "async jobs; give the task a timeout instead",
}


def canonical(name: str) -> str:
    """The module a task's key names: ansible.builtin.X and Ansible's aliases resolved."""
    for prefix in ANSIBLE_PREFIXES:
        if name.startswith(prefix):
            bare = ANSIBLE_ALIASES.get(name[len(prefix):], name[len(prefix):])
            return bare if bare in ANSIBLE_NAMES or bare in REFUSED else name
    return ANSIBLE_ALIASES.get(name, name)


class Refused(Module):
    """An Ansible module ripcord will not run: validation says why (never run)."""

    reason: ClassVar[str]
    free_form = "name"  # `apt: name=nginx` as written is refused for its module, not its form

    @classmethod
    def check_args(cls, args: dict[str, Any]) -> list[str]:
        return [f"not supported by ripcord: {cls.reason}"]

    def run(self, ctx: TaskContext, args: dict[str, Any]) -> Result:
        return Result(failed=True, msg=f"not supported by ripcord: {self.reason}")


class _Registry(MutableMapping):
    """Module name -> class; built-in modules are imported on first lookup."""

    def __init__(self, locations: dict[str, str]):
        self.classes: dict[str, type[Module]] = {}
        self.locations = dict(locations)

    def __getitem__(self, name: str) -> type[Module]:
        name = canonical(name) if isinstance(name, str) else name
        if name in REFUSED and name not in self.classes:
            return type(f"Refused_{name}", (Refused,), {"name": name, "reason": REFUSED[name]})
        if name not in self.classes and name in self.locations:
            importlib.import_module(f"ripcord.modules.{self.locations[name]}")
        return self.classes[name]

    def __setitem__(self, name: str, cls: type[Module]) -> None:
        self.classes[name] = cls

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self.classes.pop(name, None)
        self.locations.pop(name, None)

    def __contains__(self, name: object) -> bool:
        """Also ansible.builtin.X and the refused modules; iterating lists only ripcord's own."""
        name = canonical(name) if isinstance(name, str) else name
        return name in self.classes or name in self.locations or name in REFUSED

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(self.classes) | set(self.locations)))

    def __len__(self) -> int:
        return len(set(self.classes) | set(self.locations))


REGISTRY = _Registry(LOCATIONS)


def register(cls: type[Module]) -> type[Module]:
    """Class decorator: make a module available to playbooks under its name."""
    if cls.name in REGISTRY.classes:
        raise ValueError(f"module {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls
