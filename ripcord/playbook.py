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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jinja2
import yaml

from ripcord import validate, yamlbounds
from ripcord.errors import InputError
from ripcord.playcheck import PlayRefs, Use, check_play, check_refs
from ripcord.plays import FACT_NAMES, MAGIC_VARS, Play, Playbook, Task, VerifySpec
from ripcord.taskreader import FAILED, Scope, TaskReader
from ripcord.templating import Templar
from ripcord.validate import Problem, is_template, shown
from ripcord.yamllines import Map, load_yaml, plain, strings, with_lines, yaml_problem

if TYPE_CHECKING:
    from ripcord.inventory import Inventory

__all__ = ["MAGIC_VARS", "Play", "Playbook", "PlaybookError", "Problem", "Task", "VerifySpec",
           "load_playbook"]

# -- loading ---------------------------------------------------------------------------------------



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


def load_task_file(path: str, *, by: tuple[str, int], known: Iterable[str],
                   handlers: Iterable[str]) -> list[Task]:
    """The tasks of a file an include_tasks names by a template, read when the run resolves the
    name, and validated as the playbook was (`known`: the variables defined at that point;
    `handlers`: the play's). Raises PlaybookError naming the file and the include (`by`)."""
    reader = _Reader({}, None)
    refs = PlayRefs(hosts_line=0, handlers=set(handlers))
    where = f"{by[0]}:{by[1]}"
    tasks: list[Task] = []
    with reader._reading(path, by=by) as content:
        if content is not FAILED:
            tasks = reader._tasks(content, getattr(content, "line", 1), "an included task file",
                                  Scope(path, refs, via=where))
    reader.problems += check_refs(refs, set(known) | refs.defines)
    if reader.problems:
        raise PlaybookError(reader.problems, f"included from {where}: its tasks did not run")
    return tasks


def _play_keywords(task: Task, play: dict[str, Any]) -> None:
    """A play's environment, no_log, check_mode and become* reach its tasks (a task's own win)."""
    if isinstance(play.get("environment"), dict) and isinstance(task.environment, dict):
        task.environment = {**play["environment"], **task.environment}
    elif "environment" in play and not task.environment:
        task.environment = play["environment"]
    for key in ("no_log", "check_mode", "become", "become_user", "become_method", "remote_user"):
        if getattr(task, key) is None and key in play:
            setattr(task, key, play[key])
    if play.get("connection") == "local" and not task.delegate_to:
        task.delegate_to = "localhost"


# -- reading ---------------------------------------------------------------------------------------



@dataclass(frozen=True)
class _FromInclude:
    """What a playbook include gives each play it imports: vars (over the play's own), conditions
    for the play's tasks, tags, and the variables its own values use."""

    vars: dict[str, Any] = field(default_factory=dict)
    when: tuple[Any, ...] = ()
    tags: frozenset[str] = frozenset()
    uses: tuple[Use, ...] = ()


class _Reader(TaskReader):
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
            return [] if content is FAILED else self._plays(content, path, _FromInclude())

    @contextmanager
    def _reading(self, path: str, *, by: tuple[str, int] | None) -> Iterator[Any]:
        """The parsed content of path (or FAILED) for the with block, which may include further
        files: a cycle or an unreadable file is a problem at `by`, the include naming it."""
        real = os.path.realpath(path)
        reals = [r for r, _ in self._stack]
        if by and real in reals:
            chain = [shown_path for _, shown_path in self._stack[reals.index(real):]]
            self.problem(*by, f"include cycle: {' -> '.join([*chain, path])}")
            yield FAILED
            return
        try:
            with open(path, encoding="utf-8") as stream:
                text = stream.read()
        except UnicodeDecodeError as exc:  # where the first bad byte is, in the file itself
            self.problem(path, exc.object[:exc.start].count(b"\n") + 1,
                         f"not UTF-8 text (byte {exc.object[exc.start]:#04x})")
            yield FAILED
            return
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if by:
                self.problem(*by, f"cannot include {path}: {reason}")
            else:
                self.problem(path, 0, f"cannot read the playbook: {reason}")
            yield FAILED
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
            return FAILED
        try:
            content, duplicates = load_yaml(text)
        except yaml.YAMLError as exc:
            self.problem(path, *yaml_problem(exc, text))
            return FAILED
        for line, message in duplicates:
            self.problem(path, line, message)
        if content is None:
            self.problem(path, 0, "the file is empty (expected a list)")
            return FAILED
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
            yield "", FAILED
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
            return [] if content is FAILED else self._plays(content, path, inner)

    def _play(self, data: Map, file: str, inherited: _FromInclude) -> Play:
        """One play, read whole, then checked whole (see playcheck.check_play)."""
        self._closed_keys(data, validate.PLAY_KEYS, "play", file)
        found = self._convert(data, validate.PLAY_SHAPES, file)
        if "user" in found:  # remote_user's old spelling
            if "remote_user" in found:
                self.problem(file, data.key_line("user"), "user is remote_user's old spelling: "
                             "give one of them")
            found.setdefault("remote_user", found.pop("user"))
        if "hosts" not in data:
            self.problem(file, data.line, "play has no 'hosts' (expected a host pattern, "
                         "e.g. hosts: exec)")
        play_vars = {**self._vars(data, file), **self._vars_files(data, file), **inherited.vars}
        refs = PlayRefs(hosts_line=data.value_line("hosts"), uses=list(inherited.uses))
        if found.get("gather_facts"):
            refs.defines |= FACT_NAMES
        refs.uses += self._values(data, file, frozenset(), {"name", "vars", "environment",
                                                             "remote_user", "user"})
        hosts = self._hosts(found.get("hosts", ""), play_vars, file, refs.hosts_line)
        scope = Scope(file, refs, tags=found.get("tags", frozenset()) | inherited.tags)
        sections = {key: self._task_list(data, key, scope) for key in ("pre_tasks", "tasks",
                                                                         "post_tasks")}
        handlers = self._task_list(data, "handlers", Scope(file, refs, handlers=True))
        for task in [*sections["pre_tasks"], *sections["tasks"], *sections["post_tasks"]]:
            task.when[:0] = inherited.when
        for task in [task for tasks in sections.values() for task in tasks] + handlers:
            _play_keywords(task, found)
        play = Play(
            name=found.get("name") or hosts, hosts=hosts, file=file, line=data.line, vars=play_vars,
            serial=found.get("serial"), max_fail_percentage=found.get("max_fail_percentage"),
            any_errors_fatal=found.get("any_errors_fatal", False), tasks=sections["tasks"],
            pre_tasks=sections["pre_tasks"], post_tasks=sections["post_tasks"],
            gather_facts=found.get("gather_facts", False), remote_user=found.get("remote_user"),
            handlers=handlers, verify=self._verify(data, file))
        self.problems += check_play(play, refs, known=self.known, inventory=self.inventory)
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
                if content is FAILED:
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
