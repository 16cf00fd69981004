"""Jinja2 for playbook values, as Ansible evaluates them.

StrictUndefined everywhere: a variable that is not defined is an error, never an empty string.
A string that is one lone expression ("{{ ports }}") keeps its native type, as in Ansible.
Values that come from lookups are remembered as secrets so reports and the journal redact them.

Templates are code and data is not: templates render in Jinja2's immutable sandbox (no
attribute starting with `_`, no mutation of what they are given), and `Unsafe` strings (host
output, operator text, `!unsafe`) are returned as they are, never rendered. Each value a playbook
or inventory authored is rendered once; what comes out is final, whatever text it holds.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ripcord import dotenv
from ripcord.unsafe import Unsafe

LONE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)
REDACTED = "********"


class Secrets:
    """Every secret value seen in a run; redact() hides them in anything shown or stored."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, value: Any) -> Any:
        """Remember value (a string or number, any length but empty) as a secret; returns it."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.values.add(str(value))
        elif isinstance(value, str) and value:
            self.values.add(value)
        return value

    def redact(self, data: Any) -> Any:
        if isinstance(data, str):
            for secret in sorted(self.values, key=len, reverse=True):
                data = data.replace(secret, REDACTED)
            return data
        if isinstance(data, dict):
            return {k: self.redact(v) for k, v in data.items()}
        if isinstance(data, (list, tuple)):
            return [self.redact(v) for v in data]
        return data


def truthy(value: Any) -> bool:
    """Ansible's bool: yes/on/1/true/y/t (any case) are true, other strings false."""
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "on", "1", "true", "y", "t")
    return bool(value)


def _regex_search(value: str, pattern: str, *groups: str) -> Any:
    match = re.search(pattern, str(value))
    if not match:
        return None
    return [match.group(g.lstrip("\\")) for g in groups] if groups else match.group(0)


def _extract(key: Any, container: Any, morekeys: Any = None) -> Any:
    """Ansible's extract: container[key], then down morekeys (one key or a list of keys)."""
    value = container[key]
    for more in (morekeys if isinstance(morekeys, list) else [morekeys] if morekeys is not None
                 else []):
        value = value[more]
    return value


def _result_test(key: str, expected: bool = True):
    def test(result: Any) -> bool:
        return isinstance(result, dict) and bool(result.get(key)) is expected
    return test


class Templar:
    """Renders playbook values against a host's variables."""

    def __init__(self, secrets: Secrets | None = None):
        self.secrets = secrets or Secrets()
        env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined,
                                            keep_trailing_newline=True, autoescape=False)
        env.filters.update({
            "bool": truthy, "to_json": json.dumps, "from_json": json.loads, "quote": shlex.quote,
            "regex_search": _regex_search,
            "regex_replace": lambda v, p, r="": re.sub(p, r, str(v)),
            "b64encode": lambda v: base64.b64encode(str(v).encode()).decode(),
            "b64decode": lambda v: base64.b64decode(str(v)).decode(),
            "basename": os.path.basename, "dirname": os.path.dirname,
            "ternary": lambda v, a, b: a if v else b,
            "extract": _extract, "zip": lambda a, *more: list(zip(a, *more, strict=False)),
            "dict2items": lambda d: [{"key": k, "value": v} for k, v in d.items()],
            "items2dict": lambda items: {i["key"]: i["value"] for i in items},
        })
        env.tests.update({
            "failed": _result_test("failed"), "succeeded": _result_test("failed", False),
            "success": _result_test("failed", False), "changed": _result_test("changed"),
            "skipped": _result_test("skipped"),
            "match": lambda v, p: re.match(p, str(v)) is not None,
            "search": lambda v, p: re.search(p, str(v)) is not None,
        })
        env.globals["lookup"] = self.lookup
        self.env = env
        self._compiled: dict[str, jinja2.Template] = {}
        self._expressions: dict[str, Any] = {}
        self._names: dict[str, frozenset[str]] = {}

    def lookup(self, kind: str, *terms: str, file: str | None = None, default: Any = None) -> Any:
        """Controller-side lookups. Their values are secrets unless proven otherwise."""
        if kind == "env":
            value = os.environ.get(terms[0], default)
            if value is None:
                raise jinja2.UndefinedError(f"environment variable {terms[0]} is not set")
        elif kind == "dotenv":
            if not file:
                raise jinja2.UndefinedError("lookup('dotenv', KEY, file=PATH) needs file=")
            try:
                value = dotenv.read(file).get(terms[0], default)
            except OSError as exc:
                raise jinja2.UndefinedError(f"cannot read {file}: {exc.strerror}") from None
            if value is None:
                raise jinja2.UndefinedError(f"{terms[0]} is not set in {file}")
        else:
            raise jinja2.UndefinedError(f"unknown lookup {kind!r} (known: env, dotenv)")
        return self.secrets.add(value)

    def render(self, value: Any, variables: dict[str, Any]) -> Any:
        """Render strings inside value (recursively); a lone expression keeps its type.

        Unsafe strings are data: returned as they are, never rendered.
        """
        if isinstance(value, str):
            if isinstance(value, Unsafe) or ("{{" not in value and "{%" not in value):
                return value
            lone = LONE_EXPRESSION.match(value)
            if lone:
                return self.evaluate(lone.group("expr"), variables)
            template = self._compiled.get(value)
            if template is None:
                template = self._compiled[value] = self.env.from_string(value)
            return template.render(variables)
        if isinstance(value, dict):
            return {k: self.render(v, variables) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render(v, variables) for v in value]
        return value

    def evaluate(self, expression: str, variables: dict[str, Any]) -> Any:
        """A bare Jinja2 expression (as in `when:`), evaluated to a native value."""
        compiled = self._expressions.get(expression)
        if compiled is None:
            compiled = self._expressions[expression] = self.env.compile_expression(
                expression.strip(), undefined_to_none=False)
        result = compiled(variables)
        if isinstance(result, jinja2.Undefined):
            result._fail_with_undefined_error()
        return result

    def truth(self, expression: Any, variables: dict[str, Any]) -> bool:
        """A `when:`-style condition: a bare expression, a templated string, or a bool."""
        if isinstance(expression, bool):
            return expression
        if isinstance(expression, Unsafe):  # data: its truth as a string, never evaluated
            return truthy(expression)
        if isinstance(expression, str) and "{{" in expression:
            return truthy(self.render(expression, variables))
        return truthy(self.evaluate(str(expression), variables))

    def names_used(self, value: Any, *, bare: bool = False) -> set[str]:
        """Top-level variable names a value refers to (for validation before any host is touched).

        Raises jinja2.TemplateSyntaxError on a malformed template.
        """
        if isinstance(value, dict):
            return set().union(*(self.names_used(v, bare=bare) for v in value.values()))
        if isinstance(value, list):
            return set().union(*(self.names_used(v, bare=bare) for v in value))
        if not isinstance(value, str) or isinstance(value, Unsafe):
            return set()
        source = "{{ " + value + " }}" if bare else value
        if not bare and "{{" not in source and "{%" not in source:
            return set()
        names = self._names.get(source)
        if names is None:
            names = self._names[source] = frozenset(
                jinja2.meta.find_undeclared_variables(self.env.parse(source)) - set(self.env.globals))
        return set(names)


def _templated(value: Any) -> bool:
    if isinstance(value, str):
        return ("{{" in value or "{%" in value) and not isinstance(value, Unsafe)
    if isinstance(value, dict):
        return any(_templated(v) for v in value.values())
    if isinstance(value, list):
        return any(_templated(v) for v in value)
    return False


def resolve_vars(templar: Templar, values: dict[str, Any]) -> dict[str, Any]:
    """Render variables that refer to other variables (env_file: "{{ titan_home }}/.env").

    Each templated value is rendered exactly once, after the variables it names (depth first),
    and what comes out is final: a value whose text holds "{{" (a host's output, say) is never
    rendered again. Ansible templates variables lazily, when used; a value that cannot be
    rendered here (an undefined name, a cycle, a template error) becomes an Undefined that
    raises only if something actually uses it: the same outcome, without laziness.
    """
    pending = {k for k, v in values.items() if _templated(v)}
    if not pending:
        return values
    rendering: list[str] = []

    def resolve(key: str) -> None:
        if key not in pending:
            return
        if key in rendering:
            raise jinja2.UndefinedError(f"{' -> '.join([*rendering, key])} refer to each other")
        rendering.append(key)
        try:
            for name in sorted(templar.names_used(values[key]) & pending):
                resolve(name)
            values[key] = templar.render(values[key], values)
        except jinja2.TemplateError as exc:
            values[key] = templar.env.undefined(
                hint=f"variable {key!r} could not be rendered: {exc.message or exc}")
        finally:
            rendering.pop()
            pending.discard(key)

    for key in sorted(pending):
        resolve(key)
    return values
