"""Errors the operator can act on: a one-line message, a hint, and the exit code they map to."""

from __future__ import annotations

# Exit codes (docs/exit-codes.md): the operator contract in DESIGN.md.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_UNREACHABLE = 3
EXIT_DECLINED = 4
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


class RipcordError(Exception):
    """Base class: printed as one line plus a hint; a traceback only with --debug."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InputError(RipcordError):
    """Invalid input (inventory, playbook, pattern, option): nothing was touched."""

    exit_code = EXIT_INVALID

    def __init__(self, message: str, hint: str | None = None, *, file: str | None = None,
                 line: int | None = None):
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(f"{where}{message}", hint)
        self.file = file
        self.line = line


class UnreachableError(RipcordError):
    exit_code = EXIT_UNREACHABLE


class DeclinedError(RipcordError):
    exit_code = EXIT_DECLINED


class SandboxError(RipcordError):
    """The local sandbox fleet could not be brought to the state asked for."""
