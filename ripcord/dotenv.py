"""The .env format Titan uses for its settings and secrets: KEY=VALUE lines.

Comments and blank lines are skipped, `export ` prefixes and matching quotes are removed.
A value that starts with `'` is read as sh reads it: '...' segments taken literally, `\\x` as x,
so `KEY='it'\\''s'` is `it's`. That is how `quote` writes any value beyond plain characters
(ripcord's env module), so sourcing the file (`set -a; . .env`) gives the same bytes and never
runs any of them. Lines end at `\\n` only, as in sh.
"""

from __future__ import annotations

import re
from pathlib import Path

PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")  # characters sh takes literally in an assignment


def quote(value: str) -> str:
    """value as it goes after `KEY=`: plain as is, empty as nothing, else single-quoted."""
    if value == "" or PLAIN.fullmatch(value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"


def _shell_word(raw: str) -> str | None:
    """raw read as one sh word of '...' segments, \\x escapes and plain characters (a trailing
    `# comment` allowed); None when it is anything else."""
    out, i = [], 0
    while i < len(raw):
        c = raw[i]
        if c == "'":
            end = raw.find("'", i + 1)
            if end < 0:
                return None
            out.append(raw[i + 1:end])
            i = end + 1
        elif c == "\\" and i + 1 < len(raw):
            out.append(raw[i + 1])
            i += 2
        elif c in " \t":
            rest = raw[i:].strip(" \t")
            return "".join(out) if not rest or rest.startswith("#") else None
        elif PLAIN.fullmatch(c):
            out.append(c)
            i += 1
        else:
            return None
    return "".join(out)


def parse(text: str) -> dict[str, str]:
    values = {}
    for line in text.split("\n"):
        line = line.strip(" \t\r").removeprefix("export ").strip(" \t")
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        value = _shell_word(raw) if raw.startswith("'") else None
        if value is None:  # a plain KEY=value line, as docker compose writes them
            value = raw.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
        values[key.strip()] = value
    return values


def read(path: str | Path) -> dict[str, str]:
    return parse(Path(path).expanduser().read_text())
