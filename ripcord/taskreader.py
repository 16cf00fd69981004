"""Reading a play's tasks: module tasks, blocks, included task files, loops, local actions.

The task half of the playbook reader (playbook.py's _Reader, which mixes it in and owns the
files, the plays and the value checks it calls). Every problem is recorded with file:line; the
Task objects carry what the runner needs, each keyword in its typed shape.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from ripcord import validate
from ripcord.modules import REGISTRY
from ripcord.playcheck import PlayRefs, Ref, Use
from ripcord.plays import RESCUE_VARS, Task
from ripcord.templating import LONE_EXPRESSION
from ripcord.validate import shown
from ripcord.yamllines import Map, items_of, plain, with_lines

NAME_WIDTH = 60  # longest generated task name
FAILED = object()  # a file that could not be read or parsed (the problem is already recorded)


@dataclass(frozen=True, eq=False)
class Scope:
    """Where tasks are being read, and what they inherit from their play, blocks and includes."""

    file: str
    refs: PlayRefs
    handlers: bool = False
    local: frozenset[str] = frozenset()  # vars of enclosing blocks and includes
    tags: frozenset[str] = frozenset()
    via: str = ""  # "file:line" of the include (in the play's own file) that led here

    def inside(self, *, local: Iterable[str] = (), tags: frozenset[str] = frozenset()) -> Scope:
        return replace(self, local=self.local | frozenset(local), tags=self.tags | tags)

    def included(self, file: str, by: str) -> Scope:
        """The scope of an included file's tasks."""
        return replace(self, file=file, via=self.via or by)


def task_file_path(including: str, name: str) -> str:
    """Where a task file an include names is: relative to the including file."""
    return os.path.normpath(os.path.join(os.path.dirname(including), name))


def _summary(module: str | None, args: dict[str, Any]) -> str:
    """A task's name when it has none: its module and arguments, cut to fit a line of output."""
    free_form = REGISTRY[module].free_form if module in REGISTRY else None
    words = [str(v) if k == free_form else f"{k}={v}" for k, v in args.items()]
    text = " ".join(" ".join([module or "task", *words]).split())
    return text if len(text) <= NAME_WIDTH else text[:NAME_WIDTH - 3] + "..."


def _as_mapping(text: str) -> str:
    """`: {a: 1, b: x}` for Ansible's `a=1 b=x`, when it reads as such, else ''."""
    try:
        pairs = [word.partition("=") for word in shlex.split(text)]
    except ValueError:
        return ""
    if not all(key.isidentifier() and eq for key, eq, _ in pairs) or len(text) > NAME_WIDTH:
        return ""
    return ": {" + ", ".join(f"{key}: {value}" for key, _, value in pairs) + "}"


class TaskReader:
    """The _Reader's task half (a mixin: it uses the reader's problem(), _include(), _vars(),
    _convert(), _values(), _templates() and _closed_keys())."""

    # -- tasks -----------------------------------------------------------------------------------
    def _task_list(self, data: Map, key: str, scope: Scope) -> list[Task]:
        """The tasks under data[key] (tasks, handlers, block, rescue, always), includes expanded."""
        return self._tasks(data.get(key), data.value_line(key), key, scope)

    def _tasks(self, value: Any, line: int, what: str, scope: Scope) -> list[Task]:
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
            elif "include_tasks" in item and not scope.handlers:  # a handler's: read in place
                tasks.append(self._dynamic_include(item, scope))
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

    def _include_tasks(self, data: Map, scope: Scope) -> list[Task]:
        """`- include: file.yml` (import_tasks) among tasks: that file's tasks, in place, with
        these vars, when and tags."""
        for key in data:
            if key in validate.LOOPS:
                self.problem(scope.file, data.key_line(key), f"{key} over an import: its tasks "
                             "are read in place, once (loop over include_tasks instead)")
            elif key not in validate.INCLUDE_KEYS:
                self.problem(scope.file, data.key_line(key),
                             validate.unknown_key(key, validate.INCLUDE_KEYS, "include"))
        found = self._convert(data, validate.INCLUDE_SHAPES, scope.file)
        include_vars = self._vars(data, scope.file)
        scope.refs.uses += self._values(data, scope.file, scope.local | set(include_vars), {"vars"},
                                        via=scope.via)
        with self._include(scope.file, data) as (path, content):
            if content is FAILED:
                return []
            inner = scope.inside(local=include_vars, tags=found.get("tags", frozenset()))
            key = next(k for k in validate.INCLUDES if k in data)
            inner = inner.included(path, by=f"{scope.file}:{data.key_line(key)}")
            tasks = self._tasks(content, getattr(content, "line", 1), "an included task file", inner)
        for task in tasks:
            task.vars = {**include_vars, **task.vars}
            task.when[:0] = found.get("when", [])
        return tasks

    def _dynamic_include(self, data: Map, scope: Scope) -> Task:
        """include_tasks: a task file run when the task is reached, per host, as Ansible's: its
        `when` is checked once (per item when it loops), and it may loop (`item` inside the
        file). A static file name is read and validated now; a templated one when the run
        resolves it (ripcord.playbook.load_task_file)."""
        self._closed_keys(data, validate.DYNAMIC_INCLUDE_KEYS, "include_tasks", scope.file)
        found = self._convert(data, validate.DYNAMIC_INCLUDE_SHAPES, scope.file)
        self._loop(data, found, scope.file)
        control = found.get("loop_control", {})
        loop_vars = {control.get("loop_var", "item"), control.get("index_var"), "ansible_loop_var"
                     } - {None} if "loop" in found else set()
        include_vars = self._vars(data, scope.file)
        local = scope.local | set(include_vars) | loop_vars
        scope.refs.uses += self._values(data, scope.file, local, {"vars", "include_tasks",
                                                                   *validate.LOOPS}, via=scope.via)
        target, line = data["include_tasks"], data.value_line("include_tasks")
        if isinstance(target, dict) and set(target) == {"file"}:
            target = target["file"]  # include_tasks: {file: x.yml}
        task = Task(name=found.pop("name", f"include_tasks {target}"), file=scope.file,
                    line=data.line, vars=include_vars, include=target, **found)
        task.tags |= scope.tags
        if not isinstance(target, str) or not target.strip():
            self.problem(scope.file, line, "include_tasks: expected the path of a YAML file (or "
                         f"a template giving one), got {shown(target)}")
        elif not validate.is_template(target):
            by = f"{scope.file}:{data.key_line('include_tasks')}"
            path = task_file_path(scope.file, target)
            task.include = path
            with self._reading(path, by=(scope.file, data.key_line("include_tasks"))) as content:
                inner = scope.inside(local=local, tags=task.tags).included(path, by=by)
                task.included = [] if content is FAILED else \
                    self._tasks(content, getattr(content, "line", 1), "an included task file", inner)
        return task

    def _block(self, data: Map, scope: Scope) -> Task:
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

    def _module_task(self, data: Map, scope: Scope) -> Task:
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
            for key in ("until", "delegate_to", "run_once", "failed_when", "changed_when", *validate.LOOPS):
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
        elif isinstance(value, str) and "=" in value:
            self.problem(file, data.value_line(module), f"module {module!r}: not supported by "
                         f"ripcord: key=value arguments; write a mapping{_as_mapping(value)}")
            return {}
        else:
            self.problem(file, data.value_line(module), f"module {module!r}: expected a mapping "
                         f"of arguments, got {shown(value)}")
            return {}
        for message in spec.check_args(args):
            self.problem(file, data.line, f"module {module!r}: {message}")
        return args

    def _record(self, task: Task, data: Map, scope: Scope, local: frozenset[str],
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

    def _module_values(self, module: str, data: Map, scope: Scope,
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
