"""What every invoke task shares: errors as one line plus a hint, exit codes, --json output.

Progress and human output go to stderr when --json is given, so stdout holds exactly one
JSON object.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from invoke import Exit
from rich.console import Console

from ripcord.config import load as load_config
from ripcord.errors import EXIT_FAILED, EXIT_INTERRUPTED, RipcordError
from ripcord.report import inert  # errors may quote host text


def console(json_mode: bool) -> Console:
    """Human output: stdout normally, stderr when stdout is reserved for JSON."""
    return Console(stderr=json_mode, highlight=False)


def run_task(body: Callable[[Console], Any], *, json_mode: bool = False,
             debug: bool = False) -> Any:
    """Run a task body, mapping ripcord errors to their exit codes (tracebacks only with debug)."""
    out = console(json_mode)
    debug = debug or os.environ.get("RIPCORD_DEBUG") == "1"
    try:
        load_config()  # a bad ripcord.yaml is invalid input before any host is touched
        return body(out)
    except RipcordError as exc:
        if debug:
            traceback.print_exc()
        print_error(exc)
        raise Exit(code=exc.exit_code) from None
    except KeyboardInterrupt:
        raise Exit("interrupted", code=EXIT_INTERRUPTED) from None
    except Exit:
        raise
    except Exception as exc:  # a bug: one line (the traceback with --debug), never a silent ok
        if debug:
            traceback.print_exc()
        print_error(RipcordError(f"internal error: {exc.__class__.__name__}: {exc}",
                                 hint="run again with --debug for the traceback, and report it"))
        raise Exit(code=EXIT_FAILED) from None


def program() -> str:
    """The command the operator is running: the installed `ripcord`, or `invoke` in the checkout."""
    return "ripcord" if os.path.basename(sys.argv[0]) == "ripcord" else "invoke"


def print_error(exc: RipcordError) -> None:
    """One line saying what is wrong, and one saying what to do about it, on stderr. A command
    the hint quotes (`invoke approve ID`) is spelled as the operator runs ripcord."""
    err = Console(stderr=True, highlight=False)
    err.print(f"[bold red]error:[/] {inert(_as_run(exc.message))}", soft_wrap=True)
    if exc.hint:
        err.print(f"[dim]hint:[/] {inert(_as_run(exc.hint))}", soft_wrap=True)


def _as_run(text: str) -> str:
    return text.replace("`invoke ", f"`{program()} ")


def emit_json(payload: dict) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def finish(outcome: Any, json_mode: bool) -> None:
    """A task's end: its outcome's payload on stdout with --json, then exit with its code (0 returns)."""
    if json_mode:
        emit_json(outcome.payload)
    if outcome.code:
        raise Exit(code=outcome.code)
