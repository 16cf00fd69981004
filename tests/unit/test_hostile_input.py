"""Hostile input through the real command line (`invoke play`, in-process): YAML bombs, deep
nesting, huge files, bytes that are not UTF-8, tabs, shell metacharacters and line breaks in
values, host names and patterns, path traversal, templates reaching for Python's internals, bad
-e values and bad inventories, by hand and generated (hypothesis).

Each invalid input must end with exit 2 and one `error: file:line: ...` line (file:line where
there is one), no traceback, before any host is touched: the inventory's hosts listen on closed
loopback ports, so a run that got as far as a host would end unreachable (exit 3) instead, and
no journal record is written.
"""

from __future__ import annotations

import contextlib
import io
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ripcord import yamlbounds

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # tasks.py, the operator's entry point

from invoke import Collection, Program  # noqa: E402

import tasks  # noqa: E402

PLAY = "- name: p\n  hosts: all\n  tasks:\n    - debug: {msg: hi}\n"
BOUNDED = settings(max_examples=25, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """cli(*args) -> (exit code, stderr) of `invoke ARGS` in this process, journal kept apart."""
    journal = tmp_path / "journal.jsonl"
    monkeypatch.setenv("RIPCORD_JOURNAL", str(journal))

    def run(*argv: str) -> tuple[int, str]:
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                Program(namespace=Collection.from_module(tasks)).run(["invoke", *argv], exit=True)
                code = 0
            except SystemExit as exc:
                code = exc.code
        return code, err.getvalue()

    run.journal = journal
    return run


@pytest.fixture
def closed(tmp_path) -> Path:
    """An inventory of two hosts on a closed loopback port: reaching one is exit 3, not 2."""
    path = tmp_path / "hosts.yml"
    path.write_text("all:\n  hosts:\n    h-1: {ansible_host: 127.0.0.1, ansible_port: 1, "
                    "ansible_timeout: 1}\n    h-2: {ansible_host: 127.0.0.1, ansible_port: 1, "
                    "ansible_timeout: 1}\n")
    return path


def refused(cli, result: tuple[int, str], where: str | None = None, says: str = "") -> str:
    """Exit 2, one error line (naming `where` first when given), no traceback, no journal."""
    code, err = result
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert not [line for line in err.splitlines() if not line.startswith(("error:", "hint:"))], err
    if where:
        assert errors[0].startswith(f"error: {where}"), errors[0]
    assert says in errors[0], errors[0]
    assert not cli.journal.exists()
    return errors[0]


def play(cli, playbook: Path, inventory: Path, *more: str) -> tuple[int, str]:
    return cli("play", str(playbook), "--host", "all", "--inventory", str(inventory), "--yes", *more)


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


LAUGHS = "\n".join(["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                   + [f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]"
                      for p, c in zip("abcdefgh", "bcdefghi", strict=True)]) + "\n"


# --- YAML bombs, nesting, size --------------------------------------------------------------------

def test_deeply_nested_playbook_vars(cli, tmp_path, closed):
    book = write(tmp_path / "deep.yml", f"- name: p\n  hosts: all\n  vars:\n    x: {nested(3000)}\n"
                                        "  tasks:\n    - debug: {msg: hi}\n")
    refused(cli, play(cli, book, closed), f"{book}:4:", f"nested more than {yamlbounds.MAX_DEPTH}")


def test_deeply_nested_inventory(cli, tmp_path):
    inventory = write(tmp_path / "deep.yml", f"all:\n  hosts:\n    h-1: {{x: {nested(3000)}}}\n")
    refused(cli, play(cli, write(tmp_path / "p.yml", PLAY), inventory), f"{inventory}:3:",
            "nested more than")


def test_deeply_nested_json_inventory(cli, tmp_path):
    inventory = write(tmp_path / "deep.json", '{"all": {"vars": {"x": ' + nested(3000) + "}}}")
    refused(cli, play(cli, write(tmp_path / "p.yml", PLAY), inventory), f"{inventory}:1:",
            "nested more than")


@pytest.mark.parametrize("value", [f"x={nested(3000)}", '{"x": ' + nested(3000) + "}"])
def test_deeply_nested_extra_vars(cli, tmp_path, closed, value):
    refused(cli, play(cli, write(tmp_path / "p.yml", PLAY), closed, "-e", value), "-e ",
            "nested more than")


def test_billion_laughs_in_a_playbook(cli, tmp_path, closed):
    book = write(tmp_path / "bomb.yml", "- name: p\n  hosts: all\n  vars:\n"
                 + "".join(f"    {line}\n" for line in LAUGHS.splitlines())
                 + "  tasks:\n    - debug: {msg: '{{ i }}'}\n")
    refused(cli, play(cli, book, closed), f"{book}:", "aliases are expanded")


def test_billion_laughs_in_an_inventory(cli, tmp_path):
    inventory = write(tmp_path / "bomb.yml", "all:\n  vars:\n"
                      + "".join(f"    {line}\n" for line in LAUGHS.splitlines())
                      + "  hosts:\n    h-1:\n")
    refused(cli, play(cli, write(tmp_path / "p.yml", PLAY), inventory), f"{inventory}:",
            "aliases are expanded")


def test_a_huge_playbook(cli, tmp_path, closed):
    book = write(tmp_path / "huge.yml", PLAY + "# " + "x" * yamlbounds.MAX_BYTES + "\n")
    refused(cli, play(cli, book, closed), f"{book}:1:", "larger than 16 MiB")


# --- encodings and whitespace ---------------------------------------------------------------------

def test_bytes_that_are_not_utf8(cli, tmp_path, closed):
    book = write(tmp_path / "latin1.yml", PLAY.encode() + b"    - debug: {msg: \"caf\xe9\"}\n")
    refused(cli, play(cli, book, closed), f"{book}:5:", "not UTF-8 text (byte 0xe9)")
    inventory = write(tmp_path / "latin1-hosts.yml", b"all:\n  hosts:\n    h-1: {x: \"\xff\"}\n")
    refused(cli, play(cli, write(tmp_path / "p.yml", PLAY), inventory), f"{inventory}:3:",
            "not UTF-8")


def test_tabs(cli, tmp_path, closed):
    book = write(tmp_path / "tabs.yml", "- name: p\n  hosts: all\n  tasks:\n\t- debug: {msg: hi}\n")
    refused(cli, play(cli, book, closed), f"{book}:4:", "indent with spaces, not tabs")
    inventory = write(tmp_path / "tabs-hosts.yml", "all:\n  hosts:\n\th-1:\n")
    refused(cli, play(cli, write(tmp_path / "p.yml", PLAY), inventory), f"{inventory}:3:")


# --- names, patterns, paths -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../etc", "a/b", "a\nb", "a b", "a\tb", "a\x1bb"])
def test_host_names_that_would_be_paths_or_lines(cli, tmp_path, name):
    """A host name is also fetch's dest/<host>/ directory and a line of output."""
    inventory = write(tmp_path / "hosts.yml", f"all:\n  hosts:\n    {name!r}:\n".replace("'", '"'))
    refused(cli, play(cli, write(tmp_path / "p.yml", PLAY), inventory), f"{inventory}:3:",
            "host name")


@pytest.mark.parametrize("pattern", ["h-1\nh-2", "h-1;touch /tmp/x", "$(id)", "h-1\t", "../h-1",
                                     "h-1 && reboot", "`id`"])
def test_host_patterns_with_shell_metacharacters_and_line_breaks(cli, tmp_path, closed, pattern):
    result = cli("play", str(write(tmp_path / "p.yml", PLAY)), "--host", pattern,
                 "--inventory", str(closed), "--yes")
    refused(cli, result, says="host pattern")


def test_fetch_keeps_a_hostile_remote_path_inside_its_dest(tmp_path):
    """fetch's local copy is dest/<host>/<src>: a src climbing with ../ stays under dest/<host>."""
    from ripcord.modules.filestat import Fetch

    class Ctx:
        playbook_dir = str(tmp_path)
        host = "h-1"

    for src in ("../../../../etc/passwd", "/../../x", "a/../../../b", "./.././../c"):
        local = Fetch.local_path(Ctx, src, "out", False).resolve()
        assert local.is_relative_to(tmp_path / "out" / "h-1"), (src, local)


# --- templates --------------------------------------------------------------------------------------

INTERNALS = [
    "''.__class__.__mro__", "lipsum.__globals__['os']", "cycler.__init__.__globals__.os",
    "self._TemplateReference__context", "().__class__.__base__.__subclasses__()",
    "namespace.__init__.__globals__",
    "x | attr('__class__')",
]


@pytest.mark.parametrize("expression", INTERNALS)
def test_templates_reaching_for_python_internals(cli, tmp_path, closed, expression):
    book = write(tmp_path / "internals.yml", "- name: p\n  hosts: all\n  vars:\n    x: 1\n"
                 f"  tasks:\n    - debug: {{msg: \"{{{{ {expression} }}}}\"}}\n")
    refused(cli, play(cli, book, closed), f"{book}:6:")


# --- -e and inventories -----------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["notapair", "=1", "1abc=2", "{bad", '{"a":', "[1, 2]",
                                   "{a: !!python/object/apply:os.system [id]}", "a-b=1"])
def test_bad_extra_vars(cli, tmp_path, closed, value):
    refused(cli, play(cli, write(tmp_path / "p.yml", PLAY), closed, "-e", value), "-e ")


@pytest.mark.parametrize("text", [
    "- h-1\n", "all:\n  hosts:\n    h-1:\n  host:\n    h-2:\n", "all:\n  hosts:\n    h-1: [1]\n",
    "all:\n  children:\n    a: {children: {b: {children: {a: }}}}\n", "all:\n  hosts:\n    7:\n",
    "plugin: aws_ec2\n", "all: {hosts: {h-1: {x: !vault 'abc'}}}\n", "{", "all:\n  hosts: 7\n",
])
def test_bad_inventories(cli, tmp_path, text):
    inventory = write(tmp_path / "bad.yml", text)
    refused(cli, play(cli, write(tmp_path / "p.yml", PLAY), inventory), f"{inventory}")


# --- generated ----------------------------------------------------------------------------------------

@BOUNDED
@given(st.binary(max_size=300))
def test_any_bytes_as_a_playbook_are_refused_in_one_line(cli, tmp_path, closed, data):
    book = write(tmp_path / "any.yml", data)
    refused(cli, play(cli, book, closed), f"{book}")


@BOUNDED
@given(st.binary(max_size=300))
def test_any_bytes_as_an_inventory_never_crash(cli, tmp_path, data):
    inventory = write(tmp_path / "any-hosts.yml", data)
    code, err = play(cli, write(tmp_path / "p.yml", PLAY), inventory)
    assert "Traceback" not in err
    if code == 2:  # valid inventories (rare) may select unreachable hosts: exit 3
        refused(cli, (code, err))
    else:
        assert code == 3, err


@BOUNDED
@given(st.text(max_size=40))
def test_any_host_pattern_is_refused_in_one_line_or_selects_hosts(cli, tmp_path, closed, pattern):
    code, err = cli("play", str(write(tmp_path / "p.yml", PLAY)), "--host", pattern,
                    "--inventory", str(closed), "--yes")
    assert "Traceback" not in err
    if code == 2:
        refused(cli, (code, err))
    else:
        assert code == 3, err  # it selected h-1 or h-2, which are unreachable


@BOUNDED
@given(st.text(max_size=40))
def test_any_extra_var_is_refused_in_one_line_or_taken_as_data(cli, tmp_path, closed, value):
    code, err = play(cli, write(tmp_path / "p.yml", PLAY), closed, "-e", value)
    assert "Traceback" not in err
    if code == 2:
        refused(cli, (code, err))
    else:
        assert code == 3, err


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.text(st.characters(exclude_characters="\x00"), max_size=60))
def test_a_value_reaches_the_command_as_one_word(value):
    """Shell metacharacters, quotes and line breaks in a value: the command module's line, run
    by a real /bin/sh, gives the program exactly that value as one argument and runs nothing
    else."""
    from ripcord.modules.command import Command

    line = Command().line({"argv": ["printf", "%s", value]})
    out = subprocess.run(["/bin/sh", "-c", line], capture_output=True, timeout=10)
    assert out.returncode == 0 and out.stdout == value.encode(errors="surrogateescape"), line
    assert shlex.split(line) == ["printf", "%s", value]
