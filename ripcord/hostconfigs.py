"""The configs ripcord owns on its hosts, rendered from templates/ with the inventory's variables.

One renderer for both sides of drift: the sandbox provisions its hosts' .env, supervisord.conf,
nats.conf and redis.conf through it, and `invoke audit` renders the same templates with the same
variables to say what each host should hold. A host's inventory variable `ripcord_configs` lists
them: `{template: NAME.j2, dest: /path/on/host}`; a template named `*.env.j2` is a .env file,
compared key by key. Templates render in ripcord's sandboxed Jinja2 environment (ripcord.templating),
with StrictUndefined: a variable the inventory lacks is an error naming the template.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from ripcord import dotenv
from ripcord.errors import InputError
from ripcord.paths import data_dir

SECRET_MARK = "@@secret:"  # what an audit's secrets render as: "@@secret:NAME@@", never a value


class SecretNames(Mapping):
    """The `secrets` an audit renders with: each secret's name in a mark, so the audit knows which
    keys hold secrets and which secret each is, without ever holding one."""

    def __getitem__(self, name: str) -> str:
        return f"{SECRET_MARK}{name}@@"

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0


def secret_name(value: str) -> str | None:
    """The secret a rendered value marks (SecretNames), or None for a plain value."""
    if value.startswith(SECRET_MARK) and value.endswith("@@"):
        return value[len(SECRET_MARK):-2]
    return None


def templates_dir() -> Path:
    return data_dir("templates")


_ENV: jinja2.Environment | None = None


def _environment() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        from ripcord.templating import Templar

        _ENV = Templar().env  # the sandboxed, StrictUndefined environment playbooks render in
        _ENV.filters["dotenv"] = lambda value: dotenv.quote(str(value))
    return _ENV


def render(name: str, variables: dict[str, Any]) -> str:
    """templates/NAME rendered with variables; a missing template or variable is invalid input."""
    path = templates_dir() / name
    if Path(name).name != name or not path.is_file():
        raise InputError(f"no template {name!r} in {templates_dir()}",
                         hint="ripcord_configs' template: names a file in templates/")
    try:
        return _environment().from_string(path.read_text()).render(variables)
    except jinja2.TemplateSyntaxError as exc:
        raise InputError(exc.message or str(exc), file=str(path), line=exc.lineno) from None
    except jinja2.TemplateError as exc:
        raise InputError(f"cannot render: {exc.message or exc}", file=str(path), line=_line(exc),
                         hint="the host's inventory lacks a variable this template uses") from None


def _line(exc: BaseException) -> int | None:
    """The template line an error was raised at (Jinja2 keeps it in the traceback's frames)."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def is_dotenv(template: str) -> bool:
    return template.endswith(".env.j2")


def configs(hostvars: dict[str, Any], host: str) -> list[dict[str, str]]:
    """A host's `ripcord_configs`, checked: each a template name and an absolute dest path."""
    entries = hostvars.get("ripcord_configs") or []
    if not isinstance(entries, list):
        raise InputError(f"{host}: ripcord_configs must be a list of {{template, dest}}")
    found = []
    for number, entry in enumerate(entries, start=1):
        if not (isinstance(entry, dict) and isinstance(entry.get("template"), str)
                and isinstance(entry.get("dest"), str) and entry["dest"].startswith("/")):
            raise InputError(f"{host}: ripcord_configs entry {number} needs template: NAME.j2 "
                             "and dest: /absolute/path")
        found.append({"template": entry["template"], "dest": entry["dest"]})
    return found
