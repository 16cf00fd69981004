"""The installed `ripcord` command: invoke's Program over the same namespace as the checkout's
tasks.py, so `ripcord halt --host prod` and `invoke halt --host prod` are one interface (and
`ripcord --print-completion-script bash|zsh` completes its tasks and options).

It is also the quick way in (docs/performance.md): start-up imports run with the garbage
collector paused and end frozen (hundreds of thousands of long-lived objects, no cycles worth
finding), and a finished command exits without the interpreter's teardown of every module, which
cost a tenth of a second of a run that lasts under one.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading

gc.disable()  # until the imports below are done

# isort: off
from ripcord import fasthalt  # noqa: E402,F401  first: `ripcord halt` publishes before invoke loads
from invoke import Collection, Program  # noqa: E402

from ripcord import __version__, tasks  # noqa: E402
from ripcord.tasks.doc import module_word  # noqa: E402
# isort: on


def only_named(argv: list[str]) -> Collection:
    """The namespace of the tasks argv names, their areas alone imported. Importing every area
    and letting invoke build (and deep-copy) a parser context for each of ripcord's sixty tasks
    cost a command that names one a tenth of a second. With no task named (--list, --help) or
    when completing, the whole namespace, as before."""
    names = [word for word in argv[1:] if tasks.area_of(word)]
    if not names or "--complete" in argv:
        return tasks.ns
    namespace = tasks.namespace(list(dict.fromkeys(tasks.area_of(name) for name in names)))
    cut = Collection()
    for name in dict.fromkeys(names):
        *path, last = name.split(".")
        target = cut
        for part in path:
            if part not in target.collections:
                target.add_collection(Collection(part))
            target = target.collections[part]
        target.add_task(namespace[name], name=last)
    return cut


def main() -> None:
    argv = module_word(sys.argv)
    program = Program(namespace=only_named(argv), version=__version__, name="ripcord",
                      binary="ripcord", binary_names=["ripcord"])
    gc.freeze()  # what start-up made lives as long as the process: never scanned again
    gc.enable()
    try:
        program.run(argv)
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    except BrokenPipeError:  # `ripcord --list | head`: the reader left; nothing to tell it
        code = 1
    exit_now(code)


def exit_now(code: object) -> None:
    """Exit as sys.exit(code) would (at-exit handlers run, output flushed), but without tearing
    down every module first. Only when nothing else still runs: a thread that is not a daemon
    (a worker finishing its task) is waited for, by the normal exit."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate()
           if t is not threading.main_thread()):
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, exit 1
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`ripcord ... | head`): nothing to say it on
            code = code or 1
    os._exit(code)
