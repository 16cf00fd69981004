"""The installed `ripcord` command: invoke's Program over the same namespace as the checkout's
tasks.py, so `ripcord halt --host prod` and `invoke halt --host prod` are one interface (and
`ripcord --print-completion-script bash|zsh` completes its tasks and options)."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

from invoke import Program

from ripcord.tasks import ns
from ripcord.tasks.doc import module_word


def _version() -> str:
    try:
        return version("ripcord")
    except PackageNotFoundError:  # imported from a checkout that was never installed
        return "unknown"


program = Program(namespace=ns, version=_version(), name="ripcord", binary="ripcord",
                  binary_names=["ripcord"])


def main() -> None:
    program.run(module_word(sys.argv))
