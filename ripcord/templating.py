"""Jinja2 for playbook values, as Ansible evaluates them.

StrictUndefined everywhere: a variable that is not defined is an error, never an empty string.
A string that is one lone expression ("{{ ports }}") keeps its native type, as in Ansible.
Values that come from lookups are remembered as secrets so reports and the journal redact them.
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

from ripcord import dotenv

LONE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\{\{|\}\}).)*)\}\}\s*$", re.DOTALL)
REDACTED = "********"


class Secrets:
    """Every secret value seen in a run; redact() hides them in anything shown or stored."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, value: Any) -> Any:
        if isinstance(value, str) and len(value) >= 4:
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
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                 autoescape=False)
        env.filters.update({
            "bool": truthy, "to_json": json.dumps, "from_json": json.loads, "quote": shlex.quote,
            "regex_search": _regex_search,
            "regex_replace": lambda v, p, r="": re.sub(p, r, str(v)),
            "b64encode": lambda v: base64.b64encode(str(v).encode()).decode(),
            "b64decode": lambda v: base64.b64decode(str(v)).decode(),
            "basename": os.path.basename, "dirname": os.path.dirname,
            "ternary": lambda v, a, b: a if v else b,
            "extract": _extract, "zip": lambda a, *more: list(zip(a, *more, strict=False)),
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
        """Render strings inside value (recursively); a lone expression keeps its type."""
        if isinstance(value, str):
            if "{{" not in value and "{%" not in value:
                return value
            lone = LONE_EXPRESSION.match(value)
            if lone:
                return self.evaluate(lone.group("expr"), variables)
            return self.env.from_string(value).render(variables)
        if isinstance(value, dict):
            return {k: self.render(v, variables) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render(v, variables) for v in value]
        return value

    def evaluate(self, expression: str, variables: dict[str, Any]) -> Any:
        """A bare Jinja2 expression (as in `when:`), evaluated to a native value."""
        result = self.env.compile_expression(expression.strip(), undefined_to_none=False)(variables)
        if isinstance(result, jinja2.Undefined):
            result._fail_with_undefined_error()
        return result

    def truth(self, expression: Any, variables: dict[str, Any]) -> bool:
        """A `when:`-style condition: a bare expression, a templated string, or a bool."""
        if isinstance(expression, bool):
            return expression
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
        if not isinstance(value, str):
            return set()
        source = "{{ " + value + " }}" if bare else value
        if not bare and "{{" not in source and "{%" not in source:
            return set()
        return jinja2.meta.find_undeclared_variables(self.env.parse(source)) - set(self.env.globals)


def _templated(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(_templated(v) for v in value.values())
    if isinstance(value, list):
        return any(_templated(v) for v in value)
    return False


def resolve_vars(templar: Templar, values: dict[str, Any]) -> dict[str, Any]:
    """Render variables that refer to other variables (env_file: "{{ titan_home }}/.env").

    Ansible templates variables lazily, when used; here each templated value is rendered up
    front, and one that cannot be (it needs an undefined name) becomes an Undefined that raises
    only if something actually uses it: the same outcome, without laziness.
    """
    for _ in range(5):  # chains of references resolve in a few passes; cycles stay undefined
        pending = {k: v for k, v in values.items() if _templated(v)}
        if not pending:
            break
        for key, value in pending.items():
            try:
                values[key] = templar.render(value, values)
            except jinja2.UndefinedError as exc:
                values[key] = templar.env.undefined(
                    hint=f"variable {key!r} could not be rendered: {exc.message}")
    return values
