"""What the operator reads cannot be forged: host text reaches the terminal inert."""

from __future__ import annotations

import io

from rich.console import Console

from ripcord.modules.base import TaskContext
from ripcord.modules.logic import Confirm
from ripcord.report import Display, inert
from ripcord.runner import TaskRecord
from ripcord.status import render

FORGED = "\x1b[2K\x1b[1A\rNOT HALTED\x1b]0;owned\x07\x9b31m\u202e [bold green]ok[/]"


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, color_system="standard", width=300,
                   highlight=False), out


def test_inert_shows_every_control_character_and_keeps_newlines_and_tabs():
    assert inert(FORGED + "\tnext\nline") == (
        "\\x1b[2K\\x1b[1A\\x0dNOT HALTED\\x1b]0;owned\\x07\\x9b31m\\u202e \\[bold green]ok\\[/]"
        "\tnext\nline")


def test_a_task_message_and_diff_from_a_host_are_shown_inert():
    console, out = terminal()
    Display(console).host_result(TaskRecord("p", "t", "exec-1", "ok", FORGED, diff=FORGED,
                                            module="debug"))
    shown = out.getvalue()
    for raw in ("\x1b[2K", "\x1b[1A", "\r", "\x1b]0;", "\x07", "\x9b", "\u202e"):
        assert raw not in shown
    assert shown.count("\\x1b[2K\\x1b[1A\\x0dNOT HALTED") == 2
    assert "[bold green]ok[/]" in shown


def test_a_breaker_reason_in_a_confirmation_prompt_is_not_markup():
    asked = []
    ctx = TaskContext("core-1", {}, None, confirm=lambda prompt, typed=None: asked.append(prompt)
                      or True)
    Confirm().run(ctx, {"prompt": f"Reset the breaker (reason: {FORGED})?"})
    console, out = terminal()
    console.print(asked[0])  # as rich's Prompt shows it: markup
    assert "[bold green]ok[/]" in out.getvalue() and "\x1b[2K" not in out.getvalue()


def test_status_shows_host_facts_inert():
    host = {"reachable": True, "error": None,
            "services": {"titan-execution": {"state": "RUNNING", "health": FORGED,
                                             "version": "[red]1[/]", "error": None}},
            "engine": {"state": None, "halted": False, "halt_source": FORGED, "halt_file": False,
                       "positions": {}, "open_orders": 0, "version": "[red]1[/]"}}
    report = {"hosts": {"exec-1": host}, "duration_s": 0.1,
              "brain": {"error": None, "breaker": "OPEN", "breaker_reason": FORGED, "armed": True},
              "exchange": {"error": None, "open_orders": 0, "host": "exec-1"},
              "versions": {"engines": {"exec-1": "[red]1[/]"}, "engines_differ": False}}
    console, out = terminal()
    render(report, console)
    shown = out.getvalue()
    assert "\x1b[2K" not in shown and "\x1b]0;" not in shown and "\r" not in shown
    assert "[bold green]ok[/]" in shown and "[red]1[/]" in shown
