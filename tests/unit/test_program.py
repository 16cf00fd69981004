"""The `ripcord` command's quick start and exit (ripcord/program.py) change nothing an operator
sees: the tasks it parses against, exit codes, output through a pipe, a reader that leaves early;
and what the kill switch's fast path imports before it publishes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ripcord.program import only_named
from ripcord.tasks import AREAS, area_of, ns

REPO = Path(__file__).resolve().parents[2]
MAIN = "import sys; sys.argv[0] = 'ripcord'; from ripcord.program import main; main()"


def ripcord(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", MAIN, *args], capture_output=True, text=True,
                          timeout=60, **kwargs)


def test_only_the_tasks_named_are_parsed_against():
    assert set(only_named(["ripcord", "play", "x.yml", "--host", "sandbox"]).task_names) == {"play"}
    cut = only_named(["ripcord", "sandbox.status", "verify", "--host", "all"])
    assert set(cut.task_names) == {"sandbox.status", "verify"}
    assert cut["sandbox.status"] is ns["sandbox.status"]
    for argv in (["ripcord", "--list"], ["ripcord", "--help"], ["ripcord"],
                 ["ripcord", "--complete", "--", "ripcord", "halt", "-"]):
        assert only_named(argv) is ns


def test_every_task_is_indexed_by_the_area_that_declares_it():
    """ripcord/tasks/__init__.py's index, which lets a command import only its tasks' areas,
    names each task's module: a task added without its index entry fails here."""
    for name in ns.task_names:
        area = area_of(name)
        assert area in AREAS and ns[name].body.__module__ == f"ripcord.tasks.{area}", name


def test_a_command_imports_only_the_areas_it_names():
    code = ("import sys; sys.argv = ['ripcord']; from ripcord.program import only_named; "
            "only_named(['ripcord', 'play', 'x.yml', '--host', 'all']); "
            "import json; print(json.dumps(sorted(m for m in sys.modules "
            "if m.startswith('ripcord.tasks.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert json.loads(out) == ["ripcord.tasks.doc", "ripcord.tasks.options", "ripcord.tasks.playbooks"]


def test_exit_codes_and_output_through_a_pipe(tmp_path):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    web-1:\n")
    bad = ripcord("play", str(tmp_path / "missing.yml"), "--host", "all", "-i", str(inventory),
                  cwd=tmp_path)
    assert bad.returncode == 2 and "missing.yml" in bad.stderr and "Traceback" not in bad.stderr
    listed = ripcord("--list")
    assert listed.returncode == 0 and "sandbox.up" in listed.stdout and "triage" in listed.stdout
    config = ripcord("config", "--json", cwd=tmp_path)
    assert config.returncode == 0 and json.loads(config.stdout)  # whole, flushed before the exit
    assert ripcord("no-such-task").returncode == 1


def test_a_reader_that_leaves_early_gets_no_traceback():
    proc = subprocess.Popen([sys.executable, "-c", MAIN, "--list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.read(10)
    proc.stdout.close()  # `ripcord --list | head -c 10`
    _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()


def test_the_fast_halt_path_imports_neither_asyncio_nor_invoke():
    """ripcord/fasthalt.py runs before anything else of `ripcord halt`: what it imports is time
    before the signed halt goes out."""
    code = ("import sys; sys.argv = ['ripcord', '--version']; import ripcord.fasthalt; "
            "print(sorted(m for m in ('asyncio', 'invoke', 'rich', 'jinja2', 'nats') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    assert out.strip() == "[]"
