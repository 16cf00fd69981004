"""What the operator sees: task lines as they happen, a PLAY RECAP, and the --json object.

On a terminal, rich colours the lines and shows which hosts a task still waits for; piped, the
same lines come out plain, one per event, so logs and CI read them too.

Text from hosts (log lines, command output, engine errors, diffs) reaches the terminal only
through inert(): a host must not be able to repaint what the operator reads (docs/security.md).
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from rich.console import Console
from rich.markup import escape

from ripcord.modules.base import canonical

STYLE = {"ok": "green", "changed": "yellow", "failed": "bold red", "unreachable": "bold magenta",
         "skipped": "cyan", "rescued": "blue", "ignored": "dim", "passed": "green",
         "waived": "yellow"}
RECAP_COLUMNS = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
CHECK_COLUMNS = ("passed", "failed", "waived", "skipped", "unreachable")


# C0 controls but tab and newline, DEL, C1 controls, and the bidi overrides that reorder a line.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def visible(text: object) -> str:
    """Text with every terminal control character shown as an escape (ESC as \\x1b): a sequence
    from a host cannot move the cursor, erase, recolour or retitle what the operator reads."""
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                       else f"\\u{ord(m.group()):04x}", str(text))


def inert(text: object) -> str:
    """Host text for a rich console: controls made visible, markup shown literally."""
    return escape(visible(text))


# Modules whose message is their result: shown on every outcome, not only on failure.
TELLING = {"debug", "halt", "titan_command", "exchange", "restart", "checks", "reconcile"}


class Display:
    def __init__(self, console: Console, verbose: bool = False):
        self.console = console
        self.verbose = verbose or os.environ.get("RIPCORD_VERBOSE", "0") not in ("", "0")  # -v
        self.lock = threading.Lock()  # results arrive from worker threads
        self.status = None  # on a terminal: which hosts the running task still waits for
        self.waiting: list[str] = []

    def play_start(self, play, hosts: list[str]) -> None:
        self.console.rule(f"[bold]PLAY[/] {inert(play.name)}  [dim]({len(hosts)} hosts)[/]",
                          align="left", style="dim")

    def task_start(self, task, hosts: list[str]) -> None:
        with self.lock:
            self._stop_status()
            self.console.print(f"[bold]TASK[/] {inert(task.name)}  [dim]{inert(task.where)}[/]")
            if self.console.is_terminal:
                self.waiting = list(hosts)
                self.status = self.console.status(self._waiting_text())
                self.status.start()

    def task_end(self) -> None:
        with self.lock:
            self._stop_status()

    def _waiting_text(self) -> str:
        shown = ", ".join(self.waiting[:5]) + (" ..." if len(self.waiting) > 5 else "")
        return f"[dim]waiting for {len(self.waiting)} host(s): {inert(shown)}[/]"

    def _stop_status(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def host_result(self, record) -> None:
        with self.lock:
            style = STYLE.get(record.outcome, "white")
            line = f"  [{style}]{record.outcome}[/]: {inert(f'[{record.host}]')}"
            shown = record.outcome in ("failed", "unreachable", "ignored") or \
                canonical(record.module or "") in TELLING  # ansible.builtin.debug is debug
            if record.msg and (shown or self.verbose):
                line += f" {inert(record.msg)}"
            self.console.print(line, soft_wrap=True)
            if record.diff:
                self.console.print(visible(record.diff), markup=False, highlight=False)
            if self.status is not None and record.host in self.waiting:
                self.waiting.remove(record.host)
                self.status.update(self._waiting_text())

    def note(self, message: str) -> None:
        with self.lock:
            self.console.print(f"[dim]{inert(message)}[/]")

    def verify_start(self, select: str, hosts: list[str]) -> None:
        with self.lock:
            self.console.print(f"[bold]VERIFY[/] {inert(select)}  [dim]({len(hosts)} hosts)[/]")

    def check_result(self, result) -> None:
        style = {"passed": "green", "failed": "bold red", "waived": "yellow", "skipped": "cyan"}
        if result.outcome in ("passed", "skipped") and not self.verbose:
            return
        with self.lock:
            line = (f"  [{style.get(result.outcome, 'white')}]{result.outcome}[/]: "
                    f"{inert(f'[{result.host}]')} {inert(result.id)}")
            if result.message and result.outcome != "passed":
                line += f": {inert(result.message)}"
            self.console.print(line, soft_wrap=True)

    def recap(self, summary: dict[str, dict[str, int]], checks: dict | None = None,
              title: str = "PLAY RECAP", columns: tuple[str, ...] = RECAP_COLUMNS) -> None:
        """Ansible's PLAY RECAP: one line per host, a column per outcome (aligned by hand: a
        rich Table costs ~30 ms, a twentieth of a small run)."""
        width = max([len("host"), *map(len, summary)])
        widths = {c: max([len(c), *(len(str(st[c])) for st in summary.values())]) for c in columns}
        lines = [f"[bold]{title}[/]",
                 "host".ljust(width) + "".join(f"  {c:>{widths[c]}}" for c in columns)]
        for host, stats in summary.items():
            cells = "".join(f"  [{STYLE[c]}]{stats[c]:>{widths[c]}}[/]" if stats[c]
                            else f"  {0:>{widths[c]}}" for c in columns)
            lines.append(inert(host.ljust(width)) + cells)
        if checks and checks["results"]:
            lines.append(f"checks: {checks['passed']} passed, {checks['failed']} failed, "
                         f"{checks.get('waived', 0)} waived")
        self.console.print("\n".join(lines), highlight=False, soft_wrap=True)


def result_json(task: str, summary: dict[str, dict[str, int]], records: list, duration_s: float,
                journal_id: str | None, journal_head: dict | None = None, checks: dict | None = None,
                **extra: Any) -> dict[str, Any]:
    """The --json object of the operator contract (DESIGN.md). journal_head ({seq, hash}) is the
    journal chain's end after this run: kept elsewhere, it finds the last records deleted."""
    hosts = {}
    for host, stats in summary.items():
        hosts[host] = {"ok": stats["failed"] == 0 and stats["unreachable"] == 0,
                       "changed": stats["changed"], "failed": stats["failed"],
                       "skipped": stats["skipped"], "unreachable": stats["unreachable"] > 0,
                       "rescued": stats["rescued"], "ignored": stats["ignored"]}
    checks = checks or {"passed": 0, "failed": 0, "results": []}
    ok = all(h["ok"] for h in hosts.values()) and checks["failed"] == 0
    return {"ok": ok, "task": task, "hosts": hosts, "checks": checks,
            "results": [vars(r) for r in records], "duration_s": round(duration_s, 3),
            "journal_id": journal_id, "journal_head": journal_head, **extra}


def exit_code(summary: dict[str, dict[str, int]], checks: dict | None = None) -> int:
    """0 ok; 3 when any host was unreachable; 1 when a task or check failed (docs/exit-codes.md)."""
    if any(stats["unreachable"] for stats in summary.values()):
        return 3
    if any(stats["failed"] for stats in summary.values()) or (checks and checks["failed"]):
        return 1
    return 0
