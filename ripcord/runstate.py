"""What a run knows and produces: its options, each host's state, the records of its tasks,
and how hosts are cut into serial batches. Plain data, below the runner and the task runner."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

SECRET_NAME = re.compile(r"secret|passw|token|key|credential", re.IGNORECASE)
OUTCOMES = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")


@dataclass
class Options:
    check: bool = False
    diff: bool = False
    tags: frozenset[str] = frozenset()
    skip_tags: frozenset[str] = frozenset()
    extra_vars: dict[str, Any] = field(default_factory=dict)
    forks: int = 20
    limit: str | None = None  # the operator's --host pattern, intersected with each play's hosts
    lock_wait_s: float = 10.0
    playbook_dir: str = "."
    reason: str = ""  # why the operator runs this: ripcord_reason, and the journal
    take_locks: bool = True  # the kill switch takes none: a halt must never wait for a lock


@dataclass
class HostState:
    """What the run knows about one host: its variables, results and counters."""

    name: str
    facts: dict[str, Any] = field(default_factory=dict)  # set_fact and register
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    failed: bool = False
    unreachable: bool = False
    notified: set[str] = field(default_factory=set)
    touched: bool = False  # a task ran here (verification targets touched hosts)
    last_failure: dict[str, Any] | None = None  # what a rescue section sees
    include_vars: dict[str, Any] = field(default_factory=dict)  # an include_tasks' item, meanwhile


@dataclass
class TaskRecord:
    """One task on one host, for the report and the journal."""

    play: str
    task: str
    host: str
    outcome: str
    msg: str = ""
    duration_s: float = 0.0
    diff: str | None = None
    module: str | None = None


def serial_batches(hosts: list[str], serial: Any) -> list[list[str]]:
    """Split hosts into rolling batches: an int, a percentage, or a ramp list (last size repeats)."""
    if not serial:
        return [hosts] if hosts else []
    sizes = serial if isinstance(serial, list) else [serial]
    batches, start, index = [], 0, 0
    while start < len(hosts):
        size = _batch_size(sizes[min(index, len(sizes) - 1)], len(hosts))
        batches.append(hosts[start:start + size])
        start += size
        index += 1
    return batches


def _batch_size(value: int | str, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return max(1, math.floor(total * float(value[:-1]) / 100))
    return max(1, int(value))
