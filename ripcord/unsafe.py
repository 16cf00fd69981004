"""Values that are data, never code: Ansible's "unsafe" strings.

Whatever a host returns (command output, registered results, facts, health answers), whatever an
operator types (--reason, -e values, notes) and whatever a playbook or inventory tags `!unsafe`
is held as an `Unsafe` string. The templar returns such a string as it is and never renders it,
so a host that prints `{{ lipsum.__globals__ ... }}` is showing text, not running code on the
controller. This module sits below templating, playbook and inventory, which all use it.
"""

from __future__ import annotations

from typing import Any


class Unsafe(str):
    """A string that must never be rendered as a template."""

    __slots__ = ()


def wrap(value: Any) -> Any:
    """value with every string inside it (dict values, list items) made Unsafe; a new container."""
    if isinstance(value, str):
        return value if isinstance(value, Unsafe) else Unsafe(value)
    if isinstance(value, dict):
        return {k: wrap(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [wrap(v) for v in value]
    return value


def mark(value: Any) -> Any:
    """Like wrap(), but in place: containers keep their type (and a loader's line marks)."""
    if isinstance(value, str):
        return value if isinstance(value, Unsafe) else Unsafe(value)
    if isinstance(value, dict):
        for k, v in value.items():
            value[k] = mark(v)
    elif isinstance(value, list):
        value[:] = [mark(v) for v in value]
    return value
