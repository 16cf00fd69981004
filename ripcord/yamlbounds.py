"""Bounds on YAML and JSON input, checked as it is read, before anything walks the data.

PyYAML composes nodes recursively, and every walk over the loaded data (validation, templating,
inventory merges, the journal's JSON) recurses too: a file nested a few thousand levels deep
ends in a RecursionError traceback. Aliases are shared when loaded but expanded by every walk, so a
"billion laughs" file of nested aliases is small on disk and endless in use. One pass over the
parser's events (the parser itself does not recurse) measures both, and the file is refused with
the line where it went too far: one input error, exit 2, before any host is touched.
"""

from __future__ import annotations

import yaml

from ripcord.errors import InputError

MAX_DEPTH = 100  # nesting of lists and mappings; real playbooks and inventories use under 20
MAX_NODES = 1_000_000  # values once aliases are expanded (a 50k-host inventory, say)
MAX_BYTES = 16 * 1024 * 1024  # one playbook, inventory or vars file

_Parser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def problem(text: str) -> tuple[int, str] | None:
    """(1-based line, message) where text goes past a bound, or None. Text that is not valid YAML
    is None here: the loader reports that itself, with its own line."""
    if len(text) > MAX_BYTES:
        return 1, f"the file is larger than {MAX_BYTES // (1024 * 1024)} MiB"
    total, frames, anchors = 0, [], {}  # frames: [expanded size, anchor] of each open collection
    try:
        for event in yaml.parse(text, Loader=_Parser):
            if isinstance(event, _OPEN):
                frames.append([1, event.anchor])
                if len(frames) > MAX_DEPTH:
                    return event.start_mark.line + 1, f"nested more than {MAX_DEPTH} levels deep"
                size = 1
            elif isinstance(event, _CLOSE):
                size, anchor = frames.pop()
                if anchor:
                    anchors[anchor] = size
                if frames:
                    frames[-1][0] += size
                continue
            elif isinstance(event, (yaml.AliasEvent, yaml.ScalarEvent)):
                size = anchors.get(event.anchor, 1) if isinstance(event, yaml.AliasEvent) else 1
                if event.anchor and isinstance(event, yaml.ScalarEvent):
                    anchors[event.anchor] = 1
                if frames:
                    frames[-1][0] += size
            else:
                continue
            total += size
            if total > MAX_NODES:
                return (event.start_mark.line + 1,
                        f"more than {MAX_NODES:,} values once its aliases are expanded "
                        "(nested aliases: a YAML bomb?)")
    except yaml.YAMLError:
        return None
    return None


def check(text: str, what: str, line: int | None = None) -> None:
    """Raise InputError naming `what` (a file, or an option such as -e) if text goes past a bound."""
    found = problem(text)
    if found:
        where = found[0] if line is None else line
        raise InputError(found[1], hint="nothing was touched: flatten or shrink the data",
                         file=what, line=where)
