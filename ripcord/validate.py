"""What a valid playbook is: the keys each part takes and the shape of each value, the words
for a key that does not belong, and the Jinja2 a value may hold.

ripcord.playbook reads the YAML and asks this module about each value where it is written; the
checks that need the whole play read are ripcord.playcheck's. Messages say what was expected:
an operator reads them at the worst moment.
"""

from __future__ import annotations

import difflib
import keyword
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2 import nodes

from ripcord.modules import REGISTRY  # importing the package registers the built-in modules
from ripcord.unsafe import Unsafe

if TYPE_CHECKING:
    from ripcord.templating import Templar

# -- the language's keys (Ansible's spelling) -------------------------------------------------------
PLAY_KEYS = frozenset({"name", "hosts", "vars", "serial", "max_fail_percentage", "any_errors_fatal",
                       "tasks", "handlers", "verify", "gather_facts", "tags", "pre_tasks",
                       "post_tasks", "vars_files", "environment", "no_log", "check_mode",
                       "become", "become_user", "become_method", "connection", "remote_user",
                       "user"})  # user: remote_user's old spelling (in a task, a module)
LOOPS = ("loop", "with_items", "with_list", "with_dict")  # with_*: Ansible's older spellings
TASK_KEYWORDS = frozenset({"name", "when", "register", "until", "retries", "delay", "changed_when",
                           "failed_when", "ignore_errors", "notify", "listen", "tags", "run_once",
                           "delegate_to", "timeout", "vars", *LOOPS, "loop_control", "no_log",
                           "check_mode", "environment", "become", "become_user", "become_method",
                           "connection", "local_action", "remote_user"})
BLOCK_PARTS = ("block", "rescue", "always")
BLOCK_KEYWORDS = frozenset({"name", "when", "tags", "vars", "ignore_errors", "run_once",
                            "delegate_to", "timeout", "notify", "no_log", "check_mode",
                            "environment", "become", "become_user", "become_method", "connection",
                            "remote_user"})
INCLUDES = ("include", "import_tasks", "include_tasks")  # read up front when the file name is static
INCLUDE_KEYS = frozenset({*INCLUDES, "name", "vars", "when", "tags"})
DYNAMIC_INCLUDE_KEYS = frozenset({"include_tasks", "name", "vars", "when", "tags", *LOOPS,
                                  "loop_control"})  # include_tasks: looped, `when` checked once
LOOP_CONTROL_KEYS = frozenset({"label", "index_var", "loop_var", "pause"})
# Ansible's keywords ripcord does not support, and what to do instead.
NOT_SUPPORTED = {
    "roles": "use include_tasks (or import_tasks) of a task file",
    "import_role": "use import_tasks of a task file", "include_role": "use include_tasks of a task file",
    "import_playbook": "use `- include: other.yml` between plays",
    "apply": "set the keywords on a block in the task file",
    "async": "give the task a timeout instead", "poll": "give the task a timeout instead",
    "strategy": "ripcord runs the linear strategy", "throttle": "use serial or --forks",
    "collections": "modules are ripcord's own", "module_defaults": "give each task its arguments",
    "with_fileglob": "use loop with a list", "with_sequence": "use loop: \"{{ range(...) | list }}\"",
    "with_nested": "use loop with product()", "with_subelements": "use loop with subelements",
    "with_together": "use loop with zip",
    "delegate_facts": "facts stay with the host that gathered them", "debugger": "use --debug",
    "order": "hosts run in inventory order",
    "port": "set ansible_port in the inventory", "diff": "pass --diff",
}
PLAYBOOK_INCLUDE_KEYS = frozenset({"include", "vars", "when", "tags"})
VERIFY_KEYS = frozenset({"checks", "retry"})
CONDITIONS = frozenset({"when", "until", "changed_when", "failed_when"})  # bare expressions
TEMPLATED = frozenset({"name", "vars", "delegate_to", "notify", "listen", *LOOPS, "environment",
                       "loop_control", "remote_user"})  # "{{ }}" templates
# Jinja2 tests and filters that make a missing variable safe to use (`x is defined`, `x | default`).
GUARD_TESTS = frozenset({"defined", "undefined"})
GUARD_FILTERS = frozenset({"default", "d"})
SUGGESTION_CUTOFF = 0.75  # difflib similarity: close enough to be the likely typo


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a playbook, and where (line 0: the file as a whole)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


# -- value shapes: each returns the value as the typed objects hold it, or raises BadValue --------

class BadValue(ValueError):
    """A value of the wrong shape; the message says what was expected."""


def shown(value: Any) -> str:
    """A value as a message shows it: briefly, in YAML's words."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_identifier(value: Any) -> bool:
    return isinstance(value, str) and value.isidentifier() and not keyword.iskeyword(value)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadValue(f"expected true or false, got {shown(value)}")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadValue(f"expected a non-empty string, got {shown(value)}")
    return value


def identifier(value: Any) -> str:
    if not is_identifier(value):
        raise BadValue("expected a variable name (letters, digits and _, not starting with a "
                       f"digit), got {shown(value)}")
    return value


def expression(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadValue(f"expected an expression, got {shown(value)}")
    return value


def conditions(value: Any) -> list[Any]:
    """`when:` as a list, all of which must hold."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, (str, bool)) or item == "":
            raise BadValue(f"expected an expression, true/false, or a list of them, got {shown(item)}")
    return list(items)


def condition(value: Any) -> Any:
    """changed_when/failed_when: kept as written (one condition, or a list that must all hold)."""
    conditions(value)
    return list(value) if isinstance(value, list) else value


def names(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, str) and item.strip() for item in items):
        raise BadValue(f"expected a name or a list of names, got {shown(value)}")
    return list(items)


def tags(value: Any) -> frozenset[str]:
    items = value.split(",") if isinstance(value, str) else value  # "a,b" is two tags, as in Ansible
    if not isinstance(items, list) or not all(isinstance(t, (str, int)) for t in items):
        raise BadValue(f"expected a tag or a list of tags, got {shown(value)}")
    return frozenset(str(t).strip() for t in items if str(t).strip())


def count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadValue(f"expected a whole number, 0 or more, got {shown(value)}")
    return value


def delay(value: Any) -> float:
    if not is_number(value) or value < 0:
        raise BadValue(f"expected a number of seconds, 0 or more, got {shown(value)}")
    return float(value)


def timeout(value: Any) -> float:
    if not is_number(value) or value <= 0:
        raise BadValue(f"expected a positive number of seconds, got {shown(value)}")
    return float(value)


def percentage(value: Any) -> float:
    if not is_number(value) or not 0 <= value <= 100:
        raise BadValue(f"expected a number from 0 to 100, got {shown(value)}")
    return float(value)


SERIAL_PERCENT = re.compile(r"^\s*(\d+)\s*%\s*$")
SERIAL_EXPECTED = ("expected a positive number of hosts, a percentage from 1% to 100%, or a "
                   "non-empty list of those")


def serial(value: Any) -> int | str | list[int | str]:
    """A batch size: a number of hosts, "N%" of the play's hosts, or a ramp (a list of those)."""
    if value == []:
        raise BadValue(f"{SERIAL_EXPECTED}, got an empty list")
    if isinstance(value, list):
        return [_serial_step(step) for step in value]
    return _serial_step(value)


def _serial_step(step: Any) -> int | str:
    percent = SERIAL_PERCENT.match(step) if isinstance(step, str) else None
    if percent and 1 <= int(percent[1]) <= 100:
        return f"{int(percent[1])}%"
    number = int(step) if isinstance(step, str) and step.strip().isdigit() else step
    if not isinstance(number, int) or isinstance(number, bool) or number <= 0:
        raise BadValue(f"{SERIAL_EXPECTED}, got {shown(step)}")
    return number


DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)\s*$")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def duration(value: Any) -> float:
    """Seconds, from a number of seconds or "30s", "2m", "1h"."""
    if is_number(value) and value > 0:
        return float(value)
    match = DURATION.match(value) if isinstance(value, str) else None
    if match and float(match[1]) > 0:
        return float(match[1]) * DURATION_UNITS[match[2]]
    raise BadValue(f"expected a duration such as 30s or 2m, or a number of seconds, got {shown(value)}")


def loop_items(value: Any) -> Any:
    """loop / with_items: a list, or a template that renders to one at run time."""
    if isinstance(value, list) or (isinstance(value, str) and is_template(value)):
        return value
    raise BadValue(f"expected a list, or a template giving one, got {shown(value)}")


def loop_mapping(value: Any) -> Any:
    """with_dict: a mapping (its items become {key, value}), or a template giving one."""
    if isinstance(value, dict) or (isinstance(value, str) and is_template(value)):
        return value
    raise BadValue(f"expected a mapping, or a template giving one, got {shown(value)}")


def loop_control(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadValue(f"expected a mapping (label, index_var, loop_var, pause), got {shown(value)}")
    for key in value:
        if key not in LOOP_CONTROL_KEYS:
            raise BadValue(unknown_key(key, LOOP_CONTROL_KEYS, "loop_control"))
    for key in ("index_var", "loop_var"):
        if key in value:
            identifier(value[key])
    if "pause" in value:
        delay(value["pause"])
    return dict(value)


def become_method(value: Any) -> str:
    if value != "sudo":
        raise BadValue(f"only sudo (run as `sudo -n`: ripcord never prompts), got {shown(value)}")
    return value


def login_user(value: Any) -> str:
    """remote_user: the SSH login name (or a template giving one), never `user@host`."""
    if isinstance(value, str) and (is_template(value) or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*\$?", value)):
        return value
    raise BadValue(f"expected a login user name, got {shown(value)}")


def connection(value: Any) -> str:
    """ssh (every host, the default) or local: the task runs on the controller (delegate_to:
    localhost), with the host's variables."""
    if value not in ("ssh", "local"):
        raise BadValue(f"expected ssh or local (ripcord reaches hosts over SSH), got {shown(value)}")
    return value


def environment(value: Any) -> Any:
    """A mapping of environment variable names to values (or a template giving one)."""
    if isinstance(value, str) and is_template(value):
        return value
    if not isinstance(value, dict):
        raise BadValue(f"expected a mapping of variable names to values, got {shown(value)}")
    for name in value:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise BadValue(f"{shown(name)} is not an environment variable name")
    return dict(value)


Shapes = dict[str, Callable[[Any], Any]]
PLAY_SHAPES: Shapes = {"name": text, "hosts": text, "serial": serial,
                       "max_fail_percentage": percentage, "any_errors_fatal": boolean,
                       "gather_facts": boolean, "tags": tags, "environment": environment,
                       "no_log": boolean, "check_mode": boolean, "become": boolean,
                       "become_user": text, "become_method": become_method,
                       "connection": connection, "remote_user": login_user, "user": login_user}
TASK_SHAPES: Shapes = {"name": text, "when": conditions, "register": identifier,
                       "until": expression, "retries": count, "delay": delay,
                       "changed_when": condition, "failed_when": condition, "ignore_errors": boolean,
                       "notify": names, "listen": names, "tags": tags, "run_once": boolean,
                       "delegate_to": text, "timeout": timeout, "loop": loop_items,
                       "with_items": loop_items, "with_list": loop_items, "with_dict": loop_mapping,
                       "loop_control": loop_control, "no_log": boolean, "check_mode": boolean,
                       "environment": environment, "become": boolean, "become_user": text,
                       "become_method": become_method, "connection": connection,
                       "remote_user": login_user,
                       }  # vars: a mapping, read apart; local_action: a module, read apart
BLOCK_SHAPES: Shapes = {key: TASK_SHAPES[key] for key in BLOCK_KEYWORDS - {"vars"}}
INCLUDE_SHAPES: Shapes = {"name": text, "when": conditions, "tags": tags}
DYNAMIC_INCLUDE_SHAPES: Shapes = {**INCLUDE_SHAPES,
                                  **{key: TASK_SHAPES[key] for key in (*LOOPS, "loop_control")}}
VERIFY_SHAPES: Shapes = {"checks": text, "retry": duration}


# -- keys that do not belong -----------------------------------------------------------------------

def suggest(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean X?)' for the likely typo, or ''."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=SUGGESTION_CUTOFF)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key(key: Any, allowed: Iterable[str], where: str) -> str:
    if key in NOT_SUPPORTED:
        return not_supported(key)
    return f"unknown key {shown(key)} in {where} (expected one of: {', '.join(sorted(allowed))})"


def not_supported(key: Any) -> str:
    """Ansible's spelling that ripcord refuses, said so, with what to do instead."""
    instead = NOT_SUPPORTED[key]
    return f"not supported by ripcord: {key}" + (f"; {instead}" if instead else "")


def unknown_task_key(key: Any, keywords: frozenset[str], may_be_module: bool) -> str:
    """Why a task key is wrong: a misspelt module or keyword, or listen outside handlers."""
    name = str(key)
    if key == "listen":
        return "'listen' applies only to handlers (tasks notify handlers by name)"
    if key in NOT_SUPPORTED:
        return not_supported(key)
    if may_be_module and not suggest(name, keywords):
        return f"unknown module {shown(key)}" + (
            suggest(name, REGISTRY) or f" (known modules: {', '.join(sorted(REGISTRY))})")
    return f"unknown key {shown(key)} in task" + (
        suggest(name, keywords | set(REGISTRY))
        or f" (expected a module or one of: {', '.join(sorted(keywords))})")


def not_in_block(key: Any) -> str:
    if key in REGISTRY:
        return f"a block cannot also run a module: move {key!r} into a task inside the block"
    if key in TASK_KEYWORDS:
        return f"{key!r} does not apply to a block (set it on the tasks inside)"
    return unknown_key(key, BLOCK_KEYWORDS | set(BLOCK_PARTS), "block")


# -- templates -------------------------------------------------------------------------------------

def is_template(value: str) -> bool:
    """A string the templar renders: one with Jinja2 markers that is not data (`Unsafe`)."""
    return ("{{" in value or "{%" in value) and not isinstance(value, Unsafe)


def template_names(templar: Templar, value: str, *, bare: bool = False) -> set[str]:
    """Top-level variables value needs defined; those guarded by `is defined` or `default` are
    optional. A bare expression (as in `when:`) may also be written as a "{{ }}" template.

    Raises jinja2.TemplateSyntaxError when malformed, and TemplateAssertionError for a filter or
    test that does not exist (which Jinja2 would otherwise only notice when rendering).
    """
    bare = bare and not is_template(value)
    if not bare and not is_template(value):
        return set()
    try:
        tree = templar.env.parse("{{ " + value + " }}" if bare else value)
    except jinja2.TemplateSyntaxError as exc:
        if not bare:
            raise
        # speak of the expression as written, not of the "{{ }}" put around it
        message = (exc.message or "").replace("'end of print statement'", "end of expression")
        raise jinja2.TemplateSyntaxError(message, exc.lineno) from None
    _check_callables(templar.env, tree)
    _check_internals(tree)
    return templar.names_used(value, bare=bare) - _guarded(tree)


def _check_internals(tree: nodes.Template) -> None:
    """`x.__class__`, `x['__globals__']`: Python's internals, which the sandbox refuses at run
    time anyway; named here so such a playbook is invalid input before any host is touched."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        if isinstance(node, nodes.Filter):  # x | attr('__class__')
            name = node.args[0].value if node.name == "attr" and node.args and \
                isinstance(node.args[0], nodes.Const) else None
        else:
            name = node.attr if isinstance(node, nodes.Getattr) else \
                node.arg.value if isinstance(node.arg, nodes.Const) else None
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.TemplateAssertionError(
                f"{name!r} reaches for Python's internals: templates render in a sandbox",
                node.lineno)


def _check_callables(env: jinja2.Environment, tree: nodes.Template) -> None:
    for kind, node_type, known in (("filter", nodes.Filter, env.filters),
                                   ("test", nodes.Test, env.tests)):
        for node in tree.find_all(node_type):
            if node.name not in known:
                raise jinja2.TemplateAssertionError(
                    f"unknown {kind} {node.name!r}{suggest(node.name, known)}", node.lineno)


def _guarded(tree: nodes.Template) -> set[str]:
    """Variables tested directly with `is defined`/`is undefined` or given a `default`."""
    guards = [node.node for node in tree.find_all((nodes.Test, nodes.Filter))
              if node.name in (GUARD_TESTS if isinstance(node, nodes.Test) else GUARD_FILTERS)]
    return {node.name for node in guards if isinstance(node, nodes.Name)}
