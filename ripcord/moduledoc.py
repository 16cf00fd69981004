"""A module's documentation page (`ripcord doc MODULE`), built from the code so it cannot drift.

The arguments come from the module's `Arg` declarations (name, type, required, default, choices,
secret, help); the rest from its class docstring, whose first paragraph is the summary (best one
line) and whose sections, each a line starting with its name, say the rest:

    Changed: when the task reports changed.
    Check mode: what it does under --check.
    Example:
        - name: a task, as a playbook's tasks list holds it
          module: {...}

The example is a YAML list of tasks; a unit test runs every module's example through the
playbook validator, so an example that stops being valid fails the tests, not an operator.
"""

from __future__ import annotations

import difflib
import inspect
import re
import textwrap
from dataclasses import dataclass
from typing import Any

from ripcord.errors import InputError
from ripcord.modules.base import ANY, REFUSED, REGISTRY, Arg, Module, canonical

SECTIONS = ("Changed", "Check mode", "Example")
_HEADER = re.compile(rf"^({'|'.join(SECTIONS)}):[ \t]*(.*)$")
_TYPE_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "list",
               dict: "mapping"}


@dataclass(frozen=True)
class Page:
    name: str
    summary: str
    description: str
    changed: str
    check: str
    example: str
    args: dict[str, Arg]
    free_form: str | None
    where: str  # controller, host, or the batch at once


def modules() -> list[str]:
    """Every module a playbook may name (ripcord's own, not the refused Ansible ones)."""
    return list(REGISTRY)


def page(name: str) -> Page:
    """The page of module `name`; an unknown name is invalid input naming the close matches."""
    known = canonical(name)
    if known in REFUSED:
        raise InputError(f"{name!r} is not a ripcord module: {REFUSED[known]}")
    if known not in modules():
        close = difflib.get_close_matches(name, modules(), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}?" if close else "`ripcord doc` lists them all"
        raise InputError(f"no module named {name!r}; {hint}")
    cls = REGISTRY[known]
    parts = sections(cls)
    summary, description = _summary(parts[""])
    return Page(name=cls.name, summary=summary, description=description,
                changed=parts.get("Changed", ""), check=parts.get("Check mode", ""),
                example=parts.get("Example", ""),
                args=dict(cls.args), free_form=cls.free_form, where=_where(cls))


def sections(cls: type[Module]) -> dict[str, str]:
    """The class docstring split into its summary/description ("") and its named sections."""
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    found: dict[str, list[str]] = {"": []}
    current = ""
    for line in doc.splitlines():
        header = _HEADER.match(line)
        if header:
            current = header.group(1)
            found[current] = [header.group(2)] if header.group(2) else []
        else:
            found[current].append(line)
    out = {}
    for key, lines in found.items():
        if key == "Example":
            out[key] = textwrap.dedent("\n".join(lines)).strip("\n") + "\n"
        else:
            out[key] = " ".join(" ".join(lines).split()) if key else "\n".join(lines).strip()
    return out


def _summary(description: str) -> tuple[str, str]:
    """The first paragraph (as one line) and the rest."""
    first, _, rest = description.partition("\n\n")
    return " ".join(first.split()), rest.strip()


def _where(cls: type[Module]) -> str:
    if cls.on_controller:
        return "on the controller (touches no host)"
    if cls.fleet:
        return "once for the whole batch of hosts"
    return "on each host, over SSH"


def type_name(spec: Arg) -> str:
    if spec.type is ANY:
        return "any"
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def arg_line(name: str, spec: Arg, free_form: str | None) -> str:
    """One argument, as the page lists it: name, type and what constrains it."""
    facts = [type_name(spec)]
    if spec.required:
        facts.append("required")
    if spec.default is not None:
        facts.append(f"default: {_shown(spec.default)}")
    if spec.choices:
        facts.append(f"one of: {', '.join(map(str, spec.choices))}")
    if spec.secret:
        facts.append("secret (never shown)")
    if name == free_form:
        facts.append(f"free form (`MODULE: {name.upper()}`)")
    return f"{name}: {'; '.join(facts)}"


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "{}" if value == {} else str(value)


def listing() -> list[tuple[str, str]]:
    """(name, summary) for every module."""
    return [(name, page(name).summary) for name in modules()]


def text(p: Page) -> str:
    """The page as plain text (the task escapes it for the terminal)."""
    lines = [f"{p.name}: {p.summary}", ""]
    if p.description:
        lines += [p.description, ""]
    lines += [f"Runs {p.where}.", "", "ARGUMENTS"]
    if not p.args:
        lines.append("  none" if p.name != "set_fact" else "  any NAME: VALUE (each becomes a variable)")
    for name, spec in sorted(p.args.items()):
        lines.append(f"  {arg_line(name, spec, p.free_form)}")
        if spec.help:
            lines.append(f"      {spec.help}")
    lines += ["", "CHANGED", f"  {p.changed}", "", "CHECK MODE (--check)", f"  {p.check}", "",
              "EXAMPLE", textwrap.indent(p.example.rstrip("\n"), "  ")]
    return "\n".join(lines) + "\n"


def as_json(p: Page) -> dict[str, Any]:
    return {"name": p.name, "summary": p.summary, "description": p.description, "runs": p.where,
            "args": {name: {"type": type_name(s), "required": s.required, "default": s.default,
                            "choices": list(s.choices), "secret": s.secret, "help": s.help,
                            "free_form": name == p.free_form}
                     for name, s in sorted(p.args.items())},
            "changed": p.changed, "check_mode": p.check, "example": p.example}
