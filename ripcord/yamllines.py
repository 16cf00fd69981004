"""YAML with line numbers, for error messages that name file:line: PyYAML's safe loader whose
mappings and sequences remember where each key, value and item starts, and that notes the
duplicate keys PyYAML would let silently win. `!unsafe` marks a value as never templated."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import yaml

from ripcord import unsafe


class Map(dict):
    """A YAML mapping that remembers the 1-based line where it, each key and each value start."""

    line = 0
    key_lines: dict[Any, int]
    value_lines: dict[Any, int]

    def key_line(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)

    def value_line(self, key: Any) -> int:
        return self.value_lines.get(key, self.line)


class Seq(list):
    """A YAML sequence that remembers the 1-based line where it and each item start."""

    line = 0
    item_lines: list[int]


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class Loader(yaml.SafeLoader):
    """PyYAML's safe loader (YAML 1.1: yes/no are booleans) recording lines, and noting the
    duplicate keys that PyYAML would let silently win."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []

    def construct_yaml_map(self, node: yaml.MappingNode) -> Iterator[Map]:
        data = Map()
        data.line, data.key_lines, data.value_lines = line_of(node), {}, {}
        yield data
        self._note_duplicates(node)
        data.update(self.construct_mapping(node))  # expands << merge keys into node.value
        for key_node, value_node in node.value:
            key = self.construct_object(key_node)
            data.key_lines[key], data.value_lines[key] = line_of(key_node), line_of(value_node)

    def construct_yaml_seq(self, node: yaml.SequenceNode) -> Iterator[Seq]:
        data = Seq()
        data.line, data.item_lines = line_of(node), [line_of(item) for item in node.value]
        yield data
        data.extend(self.construct_sequence(node))

    def _note_duplicates(self, node: yaml.MappingNode) -> None:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in first:
                    self.duplicates.append(
                        (line_of(key_node), f"duplicate key {key!r} (already given at line {first[key]})"))
                first.setdefault(key, line_of(key_node))

    def construct_unsafe(self, node: yaml.Node) -> Any:
        """`!unsafe`, as Ansible: the value (every string inside it) is never templated."""
        plain = copy.copy(node)
        plain.tag = self.resolve(type(node), node.value, (True, False))
        return unsafe.mark(self.construct_object(plain, deep=True))


Loader.add_constructor("tag:yaml.org,2002:map", Loader.construct_yaml_map)
Loader.add_constructor("tag:yaml.org,2002:seq", Loader.construct_yaml_seq)
Loader.add_constructor("!unsafe", Loader.construct_unsafe)


def load_yaml(text: str) -> tuple[Any, list[tuple[int, str]]]:
    """The one document in text, and its duplicate keys (line, message). Raises yaml.YAMLError."""
    loader = Loader(text)
    try:
        return loader.get_single_data(), loader.duplicates
    finally:
        loader.dispose()


def yaml_problem(exc: yaml.YAMLError, text: str) -> tuple[int, str]:
    """Where PyYAML found a problem and what it is, in one line."""
    if not isinstance(exc, yaml.MarkedYAMLError):
        position = getattr(exc, "position", None)  # a ReaderError: a character YAML refuses
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else 1
        return line, f"invalid YAML: {str(exc).splitlines()[0]}"
    mark = exc.problem_mark or exc.context_mark
    message = f"invalid YAML: {exc.problem or exc.context}"
    if exc.context and exc.context_mark and exc.problem:
        message += f" ({exc.context} at line {exc.context_mark.line + 1})"
    if "'\\t'" in message:
        message += ": indent with spaces, not tabs"
    return (mark.line + 1 if mark else 1), message


def plain(value: Any) -> Any:
    """The value as plain dicts and lists, for the typed objects."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def with_lines(items: list[Any], line: int) -> Iterator[tuple[Any, int]]:
    """A list's items with their lines (`line` for each, when the list did not come from YAML)."""
    lines = items.item_lines if isinstance(items, Seq) else [line] * len(items)
    return zip(items, lines, strict=True)


def strings(value: Any, line: int) -> Iterator[tuple[str, int]]:
    """Every string inside value, with the line it starts on."""
    if isinstance(value, str):
        yield value, line
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, value.value_line(key) if isinstance(value, Map) else line)
    elif isinstance(value, list):
        for item, item_line in with_lines(value, line):
            yield from strings(item, item_line)


def items_of(data: Map, key: str) -> list[tuple[Any, int]]:
    """The items of a one-or-a-list value, each with its line."""
    value, line = data[key], data.value_line(key)
    return list(with_lines(value, line)) if isinstance(value, list) else [(value, line)]
