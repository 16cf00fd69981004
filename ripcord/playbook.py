"""Playbooks as typed objects: plays, tasks, blocks, handlers, verify selectors.

The language is an Ansible subset (docs/playbooks.md). load_playbook() reads a playbook and the
files it includes and validates all of it before the first host is touched; every problem names
file:line and what was expected. What is valid is ripcord.validate's business; this module reads
YAML (with line numbers), follows includes and assembles the objects.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import jinja2
import yaml

from ripcord import validate, yamlbounds
from ripcord.errors import InputError
from ripcord.modules import REGISTRY  # importing the package registers the built-in modules
from ripcord.plays import FACT_NAMES, MAGIC_VARS, RESCUE_VARS, Play, Playbook, Task, VerifySpec
from ripcord.templating import LONE_EXPRESSION, Templar
from ripcord.validate import PlayRefs, Problem, Ref, Use, is_template, shown
from ripcord.yamllines import Map, items_of, load_yaml, plain, strings, with_lines, yaml_problem

if TYPE_CHECKING:
    from ripcord.inventory import Inventory

__all__ = ["MAGIC_VARS", "Play", "Playbook", "PlaybookError", "Problem", "Task", "VerifySpec",
           "load_playbook"]

# -- loading ---------------------------------------------------------------------------------------

NAME_WIDTH = 60  # longest generated task name


class PlaybookError(InputError):
    """Everything wrong with a playbook and its includes: one `file:line: message` a line,
    sorted by file and line."""

    def __init__(self, problems: list[Problem], hint: str | None = None) -> None:
        self.problems = sorted(dict.fromkeys(problems), key=lambda p: (p.file, p.line))
        super().__init__("\n".join(map(str, self.problems)), hint)


def load_playbook(path: str | os.PathLike, *, extra_vars: dict[str, Any] | None = None,
                  inventory: Inventory | None = None) -> Playbook:
    """Read and validate a playbook and everything it includes, before any host is touched.

    With an inventory, host patterns must select hosts, delegate_to must name one, and the
    selected hosts' vars count as defined; without one those checks are skipped (so a playbook
    using host vars only validates with its inventory). Raises PlaybookError with every problem.
    """
    path = os.fspath(path)
    reader = _Reader(extra_vars or {}, inventory)
    plays = reader.playbook(path)
    if reader.problems:
        hint = "nothing was touched: fix the playbook and run again"
        if inventory is None:
            hint += " (host vars were not checked: no inventory given)"
        raise PlaybookError(reader.problems, hint)
    return Playbook(path=path, plays=plays)


def _play_keywords(task: Task, play: dict[str, Any]) -> None:
    """A play's environment, no_log, check_mode and become* reach its tasks (a task's own win)."""
    if isinstance(play.get("environment"), dict) and isinstance(task.environment, dict):
        task.environment = {**play["environment"], **task.environment}
    elif "environment" in play and not task.environment:
        task.environment = play["environment"]
    for key in ("no_log", "check_mode", "become", "become_user", "become_method"):
        if getattr(task, key) is None and key in play:
            setattr(task, key, play[key])
    if play.get("connection") == "local" and not task.delegate_to:
        task.delegate_to = "localhost"


def _summary(module: str | None, args: dict[str, Any]) -> str:
    """A task's name when it has none: its module and arguments, cut to fit a line of output."""
    free_form = REGISTRY[module].free_form if module in REGISTRY else None
    words = [str(v) if k == free_form else f"{k}={v}" for k, v in args.items()]
    text = " ".join(" ".join([module or "task", *words]).split())
    return text if len(text) <= NAME_WIDTH else text[:NAME_WIDTH - 3] + "..."


# -- reading ---------------------------------------------------------------------------------------

_FAILED = object()  # a file that could not be read or parsed (the problem is already recorded)


@dataclass(frozen=True, eq=False)
class _Scope:
    """Where tasks are being read, and what they inherit from their play, blocks and includes."""

    file: str
    refs: PlayRefs
    handlers: bool = False
    local: frozenset[str] = frozenset()  # vars of enclosing blocks and includes
    tags: frozenset[str] = frozenset()
    via: str = ""  # "file:line" of the include (in the play's own file) that led here

    def inside(self, *, local: Iterable[str] = (), tags: frozenset[str] = frozenset()) -> _Scope:
        return replace(self, local=self.local | frozenset(local), tags=self.tags | tags)

    def included(self, file: str, by: str) -> _Scope:
        """The scope of an included file's tasks."""
        return replace(self, file=file, via=self.via or by)


@dataclass(frozen=True)
class _FromInclude:
    """What a playbook include gives each play it imports: vars (over the play's own), conditions
    for the play's tasks, tags, and the variables its own values use."""

    vars: dict[str, Any] = field(default_factory=dict)
    when: tuple[Any, ...] = ()
    tags: frozenset[str] = frozenset()
    uses: tuple[Use, ...] = ()


class _Reader:
    """Reads a playbook and what it includes into typed objects, collecting every problem."""

    def __init__(self, extra_vars: dict[str, Any], inventory: Inventory | None) -> None:
        self.extra_vars = extra_vars
        self.inventory = inventory
        self.known = MAGIC_VARS | set(extra_vars)
        self.templar = Templar()
        self.problems: list[Problem] = []
        self._stack: list[tuple[str, str]] = []  # (real path, shown path) of the files being read
        self._templates_seen: dict[tuple[str, bool], frozenset[str] | str] = {}

    def problem(self, file: str, line: int, message: str) -> None:
        self.problems.append(Problem(file, line, message))

    # -- files -----------------------------------------------------------------------------------
    def playbook(self, path: str) -> list[Play]:
        """The plays of the playbook at path and of every file it includes."""
        with self._reading(path, by=None) as content:
            return [] if content is _FAILED else self._plays(content, path, _FromInclude())

    @contextmanager
    def _reading(self, path: str, *, by: tuple[str, int] | None) -> Iterator[Any]:
        """The parsed content of path (or _FAILED) for the with block, which may include further
        files: a cycle or an unreadable file is a problem at `by`, the include naming it."""
        real = os.path.realpath(path)
        reals = [r for r, _ in self._stack]
        if by and real in reals:
            chain = [shown_path for _, shown_path in self._stack[reals.index(real):]]
            self.problem(*by, f"include cycle: {' -> '.join([*chain, path])}")
            yield _FAILED
            return
        try:
            with open(path, encoding="utf-8") as stream:
                text = stream.read()
        except UnicodeDecodeError as exc:  # where the first bad byte is, in the file itself
            self.problem(path, exc.object[:exc.start].count(b"\n") + 1,
                         f"not UTF-8 text (byte {exc.object[exc.start]:#04x})")
            yield _FAILED
            return
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if by:
                self.problem(*by, f"cannot include {path}: {reason}")
            else:
                self.problem(path, 0, f"cannot read the playbook: {reason}")
            yield _FAILED
            return
        self._stack.append((real, path))
        try:
            yield self._parse(text, path)
        finally:
            self._stack.pop()

    def _parse(self, text: str, path: str) -> Any:
        """The YAML in text; malformed YAML is one problem, where PyYAML found it."""
        bound = yamlbounds.problem(text)  # nesting or aliases no walk over the data could finish
        if bound:
            self.problem(path, *bound)
            return _FAILED
        try:
            content, duplicates = load_yaml(text)
        except yaml.YAMLError as exc:
            self.problem(path, *yaml_problem(exc, text))
            return _FAILED
        for line, message in duplicates:
            self.problem(path, line, message)
        if content is None:
            self.problem(path, 0, "the file is empty (expected a list)")
            return _FAILED
        return content

    @contextmanager
    def _include(self, file: str, data: Map) -> Iterator[tuple[str, Any]]:
        """The (path, content) an `include:` (import_tasks, include_tasks) names, relative to the
        including file. Its name must be known before the run: it is read and validated now."""
        key = next(k for k in validate.INCLUDES if k in data)
        target = data[key]
        if not isinstance(target, str) or not target.strip() or is_template(target):
            self.problem(file, data.value_line(key), f"{key}: expected the path of a YAML file "
                         f"(read before any host is touched, so not a template), got {shown(target)}")
            yield "", _FAILED
            return
        path = os.path.normpath(os.path.join(os.path.dirname(file), target))
        with self._reading(path, by=(file, data.key_line(key))) as content:
            yield path, content

    # -- plays -----------------------------------------------------------------------------------
    def _plays(self, content: Any, file: str, inherited: _FromInclude) -> list[Play]:
        """A playbook file's plays, playbook includes expanded in place."""
        if not isinstance(content, list):
            self.problem(file, getattr(content, "line", 1), "a playbook must be a list of plays "
                         f"(- hosts: ...), got {shown(content)}")
            return []
        plays: list[Play] = []
        for entry, line in with_lines(content, 1):
            if isinstance(entry, dict) and "include" in entry:
                plays += self._include_plays(entry, file, inherited)
            elif isinstance(entry, dict):
                plays.append(self._play(entry, file, inherited))
            else:
                self.problem(file, line, "a play must be a mapping (hosts:, tasks:, ...), "
                             f"got {shown(entry)}")
        return plays

    def _include_plays(self, data: Map, file: str, inherited: _FromInclude) -> list[Play]:
        """`- include: other.yml` between plays: that playbook's plays, with these vars, when
        and tags (Ansible's import_playbook)."""
        self._closed_keys(data, validate.PLAYBOOK_INCLUDE_KEYS, "playbook include", file)
        found = self._convert(data, validate.INCLUDE_SHAPES, file)
        uses = self._values(data, file, frozenset(), {"vars"})
        inner = _FromInclude(vars={**self._vars(data, file), **inherited.vars},
                             when=(*inherited.when, *found.get("when", [])),
                             tags=inherited.tags | found.get("tags", frozenset()),
                             uses=(*inherited.uses, *uses))
        with self._include(file, data) as (path, content):
            return [] if content is _FAILED else self._plays(content, path, inner)

    def _play(self, data: Map, file: str, inherited: _FromInclude) -> Play:
        """One play, read whole, then checked whole (see validate.check_play)."""
        self._closed_keys(data, validate.PLAY_KEYS, "play", file)
        found = self._convert(data, validate.PLAY_SHAPES, file)
        if "hosts" not in data:
            self.problem(file, data.line, "play has no 'hosts' (expected a host pattern, "
                         "e.g. hosts: exec)")
        play_vars = {**self._vars(data, file), **self._vars_files(data, file), **inherited.vars}
        refs = PlayRefs(hosts_line=data.value_line("hosts"), uses=list(inherited.uses))
        if found.get("gather_facts"):
            refs.defines |= FACT_NAMES
        refs.uses += self._values(data, file, frozenset(), {"name", "vars", "environment"})
        hosts = self._hosts(found.get("hosts", ""), play_vars, file, refs.hosts_line)
        scope = _Scope(file, refs, tags=found.get("tags", frozenset()) | inherited.tags)
        sections = {key: self._task_list(data, key, scope) for key in ("pre_tasks", "tasks",
                                                                         "post_tasks")}
        handlers = self._task_list(data, "handlers", _Scope(file, refs, handlers=True))
        for task in [*sections["pre_tasks"], *sections["tasks"], *sections["post_tasks"]]:
            task.when[:0] = inherited.when
        for task in [task for tasks in sections.values() for task in tasks] + handlers:
            _play_keywords(task, found)
        play = Play(
            name=found.get("name") or hosts, hosts=hosts, file=file, line=data.line, vars=play_vars,
            serial=found.get("serial"), max_fail_percentage=found.get("max_fail_percentage"),
            any_errors_fatal=found.get("any_errors_fatal", False), tasks=sections["tasks"],
            pre_tasks=sections["pre_tasks"], post_tasks=sections["post_tasks"],
            gather_facts=found.get("gather_facts", False),
            handlers=handlers, verify=self._verify(data, file))
        self.problems += validate.check_play(play, refs, known=self.known, inventory=self.inventory)
        return play

    def _vars_files(self, data: Map, file: str) -> dict[str, Any]:
        """vars_files: YAML mappings of variables, relative to the playbook, read now (a missing
        or malformed one is a problem at its line); later files win, and they win over vars."""
        value = data.get("vars_files")
        if value is None:
            return {}
        if not isinstance(value, list):
            value = [value]
        found: dict[str, Any] = {}
        for name, line in with_lines(value, data.value_line("vars_files")):
            if not isinstance(name, str) or not name.strip() or is_template(name):
                self.problem(file, line, "vars_files: expected the path of a YAML file (not a "
                             f"template: it is read before any host is touched), got {shown(name)}")
                continue
            path = os.path.normpath(os.path.join(os.path.dirname(file), name))
            with self._reading(path, by=(file, line)) as content:
                if content is _FAILED:
                    continue
                if not isinstance(content, dict):
                    self.problem(path, getattr(content, "line", 1), "a vars file must be a "
                                 f"mapping of variable names to values, got {shown(content)}")
                    continue
                for key in content:
                    if not validate.is_identifier(key):
                        self.problem(path, content.key_line(key), f"{shown(key)} is not a valid "
                                     "variable name")
                found.update(plain(content))
        return found

    def _hosts(self, pattern: str, play_vars: dict[str, Any], file: str, line: int) -> str:
        """The host pattern; a templated one is rendered with the play's vars and extra vars,
        the only ones known before hosts are chosen (as in Ansible)."""
        if not is_template(pattern):
            return pattern
        try:
            rendered = self.templar.render(pattern, {**play_vars, **self.extra_vars})
        except jinja2.UndefinedError as exc:
            self.problem(file, line, f"hosts: {exc.message} (a host pattern may only use the "
                         "play's vars and extra vars)")
            return pattern
        except jinja2.TemplateError as exc:
            self.problem(file, line, f"hosts: template error: {exc.message}")
            return pattern
        if not isinstance(rendered, str) or not rendered.strip():
            self.problem(file, line, f"hosts: {pattern!r} gives {shown(rendered)}, "
                         "not a host pattern")
            return pattern
        return rendered

    def _verify(self, data: Map, file: str) -> list[VerifySpec]:
        """The checks to run on the play's hosts afterwards (see ripcord.verify)."""
        value = data.get("verify")
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(file, data.value_line("verify"),
                         f"verify: expected a list of check selectors, got {shown(value)}")
            return []
        specs = [self._selector(item, line, file) for item, line in with_lines(value, 1)]
        return [spec for spec in specs if spec]

    def _selector(self, item: Any, line: int, file: str) -> VerifySpec | None:
        """One verify entry: a marker expression or node id, or {checks: ..., retry: ...}."""
        if isinstance(item, str) and item.strip():
            return VerifySpec(select=item, line=line)
        if not isinstance(item, dict):
            self.problem(file, line, "verify: expected a marker expression, a node id or "
                         f"{{checks: ..., retry: ...}}, got {shown(item)}")
            return None
        self._closed_keys(item, validate.VERIFY_KEYS, "verify selector", file)
        found = self._convert(item, validate.VERIFY_SHAPES, file)
        if "checks" not in item:
            self.problem(file, line, "verify selector has no 'checks' (expected a marker "
                         "expression or a node id)")
        return VerifySpec(select=found.get("checks", ""), retry_s=found.get("retry"), line=line)

    # -- tasks -----------------------------------------------------------------------------------
    def _task_list(self, data: Map, key: str, scope: _Scope) -> list[Task]:
        """The tasks under data[key] (tasks, handlers, block, rescue, always), includes expanded."""
        return self._tasks(data.get(key), data.value_line(key), key, scope)

    def _tasks(self, value: Any, line: int, what: str, scope: _Scope) -> list[Task]:
        """Each item is an include, a block, or a module task; `what` names the list in messages."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(scope.file, line, f"{what}: expected a list of tasks, got {shown(value)}")
            return []
        tasks: list[Task] = []
        for item, item_line in with_lines(value, line):
            if not isinstance(item, dict):
                self.problem(scope.file, item_line, "a task must be a mapping (name:, a module, "
                             f"...), got {shown(item)}")
            elif any(key in item for key in validate.INCLUDES):
                tasks += self._include_tasks(item, scope)
            elif "hosts" in item and "hosts" not in REGISTRY:
                self.problem(scope.file, item_line, "expected a task, found a play (hosts:): a "
                             "playbook is included between plays, not among tasks")
            elif any(part in item for part in validate.BLOCK_PARTS):
                tasks.append(self._block(item, scope))
            else:
                tasks.append(self._module_task(item, scope))
        return tasks

    def _include_tasks(self, data: Map, scope: _Scope) -> list[Task]:
        """`- include: file.yml` (import_tasks, include_tasks) among tasks: that file's tasks, in
        place, with these vars, when and tags."""
        self._closed_keys(data, validate.INCLUDE_KEYS, "include", scope.file)
        found = self._convert(data, validate.INCLUDE_SHAPES, scope.file)
        include_vars = self._vars(data, scope.file)
        scope.refs.uses += self._values(data, scope.file, scope.local | set(include_vars), {"vars"},
                                        via=scope.via)
        with self._include(scope.file, data) as (path, content):
            if content is _FAILED:
                return []
            inner = scope.inside(local=include_vars, tags=found.get("tags", frozenset()))
            key = next(k for k in validate.INCLUDES if k in data)
            inner = inner.included(path, by=f"{scope.file}:{data.key_line(key)}")
            tasks = self._tasks(content, getattr(content, "line", 1), "an included task file", inner)
        for task in tasks:
            task.vars = {**include_vars, **task.vars}
            task.when[:0] = found.get("when", [])
        return tasks

    def _block(self, data: Map, scope: _Scope) -> Task:
        """block/rescue/always: try the block's tasks; on failure run rescue; always run always."""
        for key in data:
            if key not in validate.BLOCK_KEYWORDS and key not in validate.BLOCK_PARTS:
                self.problem(scope.file, data.key_line(key), validate.not_in_block(key))
        if "block" not in data:
            part = next(p for p in validate.BLOCK_PARTS if p in data)
            self.problem(scope.file, data.key_line(part), f"{part!r} without 'block' (rescue and "
                         "always belong to a block: add block: with the tasks to try)")
        found = self._convert(data, validate.BLOCK_SHAPES, scope.file)
        if found.pop("connection", None) == "local":
            found.setdefault("delegate_to", "localhost")
        block_vars = self._vars(data, scope.file)
        inner = scope.inside(local=block_vars, tags=found.get("tags", frozenset()))
        task = Task(**{"name": "block", **found}, file=scope.file, line=data.line, vars=block_vars,
                    block=self._task_list(data, "block", inner),
                    rescue=self._task_list(data, "rescue", inner.inside(local=RESCUE_VARS)),
                    always=self._task_list(data, "always", inner))
        task.tags |= scope.tags
        self._record(task, data, scope, inner.local)
        return task

    def _module_task(self, data: Map, scope: _Scope) -> Task:
        """A task that runs one module; `listen` is for handlers only."""
        if "local_action" in data:
            data = self._local_action(data, scope.file)
        keywords = validate.TASK_KEYWORDS - (set() if scope.handlers else {"listen"})
        module = self._module_key(data, keywords, scope.file)
        found = self._convert(data, {k: validate.TASK_SHAPES[k] for k in keywords
                                     if k in validate.TASK_SHAPES}, scope.file)
        self._loop(data, found, scope.file)
        if found.pop("connection", None) == "local":
            found.setdefault("delegate_to", "localhost")
        task_vars = self._vars(data, scope.file)
        args = self._args(module, data, scope.file) if module else {}
        if module and REGISTRY[module].fleet:
            for key in ("until", "delegate_to", "run_once", *validate.LOOPS):
                if key in data:
                    self.problem(scope.file, data.key_line(key), f"module {module!r} acts on the "
                                 f"whole batch at once: {key} does not apply to it")
        task = Task(**{"name": _summary(module, args), **found}, file=scope.file, line=data.line,
                    module=module, args=args, vars=task_vars)
        task.tags |= scope.tags
        loop_vars = {task.loop_control.get("loop_var", "item"), *[task.loop_control.get("index_var")]
                     } - {None} if task.loop is not None else set()
        self._record(task, data, scope, scope.local | set(task_vars) | loop_vars, module)
        return task

    def _local_action(self, data: Map, file: str) -> Map:
        """`local_action: MODULE ARGS` or `local_action: {module: M, ...}`: the module as a task
        key, run on the controller (delegate_to: localhost), as Ansible reads it."""
        value, line = data["local_action"], data.value_line("local_action")
        if isinstance(value, str) and value.split():
            module, _, rest = value.strip().partition(" ")
            free = REGISTRY[module].free_form if module in REGISTRY else None
            args: Any = {free: rest.strip()} if free and rest.strip() else {}
        elif isinstance(value, dict) and isinstance(value.get("module"), str):
            module, args = value["module"], {k: v for k, v in value.items() if k != "module"}
        else:
            self.problem(file, line, "local_action: expected `MODULE ARGS` or {module: MODULE, "
                         f"...}}, got {shown(value)}")
            module, args = "", {}
        rebuilt = Map({k: v for k, v in data.items() if k != "local_action"})
        rebuilt.line, rebuilt.key_lines, rebuilt.value_lines = data.line, dict(data.key_lines), \
            dict(data.value_lines)
        if module:
            rebuilt[module] = args
            rebuilt.key_lines[module] = rebuilt.value_lines[module] = line
        rebuilt["delegate_to"] = "localhost"
        rebuilt.key_lines["delegate_to"] = rebuilt.value_lines["delegate_to"] = line
        return rebuilt

    def _loop(self, data: Map, found: dict[str, Any], file: str) -> None:
        """loop, or one of its older spellings (with_items, with_list: the same; with_dict: the
        mapping's items as {key, value}), into found["loop"]."""
        given = [key for key in validate.LOOPS if key in found]
        for extra in given[1:]:
            self.problem(file, data.key_line(extra), f"a task loops once: {given[0]!r} and "
                         f"{extra!r} both given")
        if given and given[0] != "loop":
            value = found.pop(given[0])
            if given[0] == "with_dict" and isinstance(value, dict):
                value = [{"key": k, "value": v} for k, v in value.items()]
            elif given[0] == "with_dict":
                lone = LONE_EXPRESSION.match(value)
                if not lone:
                    self.problem(file, data.value_line("with_dict"), "with_dict: expected a mapping "
                                 "or one {{ expression }} giving one")
                value = f"{{{{ ({lone.group('expr')}) | dict2items }}}}" if lone else []
            found["loop"] = value
        for key in given[1:]:
            found.pop(key, None)
        if "loop_control" in found and not given:
            self.problem(file, data.key_line("loop_control"), "loop_control without a loop")

    def _module_key(self, data: Map, keywords: frozenset[str], file: str) -> str | None:
        """The one module a task runs; a problem for none, several, or a key that is neither a
        module nor a keyword."""
        modules = [key for key in data if key in REGISTRY and key not in keywords]
        others = [key for key in data if key not in REGISTRY and key not in keywords]
        for extra in modules[1:]:
            self.problem(file, data.key_line(extra), f"task has more than one module: "
                         f"{modules[0]!r} and {extra!r} (a task runs exactly one)")
        for key in others:
            self.problem(file, data.key_line(key),
                         validate.unknown_task_key(key, keywords, may_be_module=not modules))
        if not modules and not others:
            self.problem(file, data.line, "task has no module (expected one of: "
                         f"{', '.join(sorted(REGISTRY))}; or block:)")
        return modules[0] if modules else None

    def _args(self, module: str, data: Map, file: str) -> dict[str, Any]:
        """A module's arguments as a mapping (a string fills its free-form argument), checked
        against the module's schema; problems are reported at the task."""
        spec, value = REGISTRY[module], data[module]
        if value is None:
            args: dict[str, Any] = {}
        elif isinstance(value, str) and spec.free_form:
            args = {spec.free_form: value}
        elif isinstance(value, dict):
            args = plain(value)
        else:
            hint = " (key=value strings are not supported)" if isinstance(value, str) else ""
            self.problem(file, data.value_line(module), f"module {module!r}: expected a mapping "
                         f"of arguments, got {shown(value)}{hint}")
            return {}
        for message in spec.check_args(args):
            self.problem(file, data.line, f"module {module!r}: {message}")
        return args

    def _record(self, task: Task, data: Map, scope: _Scope, local: frozenset[str],
                module: str | None = None) -> None:
        """Note what the task defines and refers to, for check_play once the play is read."""
        refs = scope.refs
        if task.register:
            refs.defines.add(task.register)
        if module and REGISTRY[module].open_args:  # set_fact: its arguments are variables
            refs.defines.update(key for key in task.args if isinstance(key, str))
        if module:  # what a module sets for later tasks (service_facts: ansible_facts)
            refs.defines.update(REGISTRY[module].defines)
        if scope.handlers:
            refs.handlers.update([task.name, *task.listen])
        if task.notify:
            refs.notifies += [Ref(name, scope.file, line) for name, line in items_of(data, "notify")]
        if task.delegate_to:
            refs.delegates.append(Ref(task.delegate_to, scope.file, data.value_line("delegate_to")))
        refs.uses += self._values(data, scope.file, local, validate.TEMPLATED, via=scope.via)
        if module:
            refs.uses += self._module_values(module, data, scope, local)

    def _module_values(self, module: str, data: Map, scope: _Scope,
                       local: frozenset[str]) -> list[Use]:
        """Each argument's Jinja2 at its own line; bare-expression arguments (assert's that)
        are checked like `when:`."""
        node, spec, uses = data[module], REGISTRY[module], []
        for key, value in self._args_of(module, data).items():
            arg = spec.args.get(key)
            line = node.value_line(key) if isinstance(node, Map) and key in node \
                else data.value_line(module)
            uses += self._templates(value, line, scope.file, local,
                                    bare=bool(arg and arg.expression), via=scope.via)
        return uses

    @staticmethod
    def _args_of(module: str, data: Map) -> dict[str, Any]:
        value = data[module]
        if isinstance(value, str) and REGISTRY[module].free_form:
            return {REGISTRY[module].free_form: value}
        return value if isinstance(value, dict) else {}

    # -- values ----------------------------------------------------------------------------------
    def _values(self, data: Map, file: str, local: frozenset[str], keys: Iterable[Any], *,
                via: str = "") -> list[Use]:
        """Check the Jinja2 in data's conditions (bare expressions) and its values under keys."""
        uses = []
        for key in data:
            if key in validate.CONDITIONS or key in keys:
                uses += self._templates(data[key], data.value_line(key), file, local,
                                        bare=key in validate.CONDITIONS, via=via)
        return uses

    def _templates(self, value: Any, line: int, file: str, local: frozenset[str], *,
                   bare: bool = False, via: str = "") -> list[Use]:
        """Check the Jinja2 syntax of every string inside value now; return the variables they
        need, which check_play looks up once the whole play is known."""
        uses = []
        for text, text_line in strings(value, line):
            names = self._names_in(text, bare)
            if isinstance(names, str):
                self.problem(file, text_line, names)
            elif names:
                uses.append(Use(names, file, text_line, local, via))
        return uses

    def _names_in(self, text: str, bare: bool) -> frozenset[str] | str:
        """The variables text needs, or what is wrong with its Jinja2; remembered, since a
        playbook repeats the same templates (parsing them is most of the time a load takes)."""
        key = (text, bare)
        if key not in self._templates_seen:
            try:
                found: frozenset[str] | str = frozenset(
                    validate.template_names(self.templar, text, bare=bare))
            except jinja2.TemplateAssertionError as exc:
                found = f"template error: {exc.message}"
            except jinja2.TemplateSyntaxError as exc:
                found = f"template syntax error: {exc.message}"
            self._templates_seen[key] = found
        return self._templates_seen[key]

    def _convert(self, data: Map, shapes: validate.Shapes, file: str) -> dict[str, Any]:
        """data's values under the keys shapes knows, each in its shape; a value of the wrong
        shape is a problem at its line."""
        found = {}
        for key, shape in shapes.items():
            if key in data:
                try:
                    found[key] = plain(shape(data[key]))
                except validate.BadValue as exc:
                    self.problem(file, data.value_line(key), f"{key}: {exc}")
        return found

    def _vars(self, data: Map, file: str) -> dict[str, Any]:
        """A `vars:` mapping, whose keys must be valid variable names."""
        value = data.get("vars")
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(file, data.value_line("vars"), "vars: expected a mapping of variable "
                         f"names to values, got {shown(value)}")
            return {}
        for name in value:
            if not validate.is_identifier(name):
                self.problem(file, value.key_line(name), f"vars: {shown(name)} is not a valid "
                             "variable name (letters, digits and _, not starting with a digit)")
        return plain(value)

    def _closed_keys(self, data: Map, allowed: frozenset[str], where: str, file: str) -> None:
        """A problem for each key of data not in allowed (a play, an include, a verify entry)."""
        for key in data:
            if key not in allowed:
                self.problem(file, data.key_line(key), validate.unknown_key(key, allowed, where))
