"""The .env format Titan uses for its settings and secrets: KEY=VALUE lines.

Comments and blank lines are skipped, `export ` prefixes and matching quotes are removed.
"""

from __future__ import annotations

from pathlib import Path


def parse(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        line = line.strip().removeprefix("export ").strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def read(path: str | Path) -> dict[str, str]:
    return parse(Path(path).expanduser().read_text())
