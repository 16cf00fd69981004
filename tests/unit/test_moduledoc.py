"""`ripcord doc`: every module's page comes from its code, and every example is a valid playbook."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from ripcord import moduledoc
from ripcord.errors import EXIT_INVALID
from ripcord.inventory import Inventory
from ripcord.modules import REGISTRY
from ripcord.paths import data_dir
from ripcord.playbook import load_playbook

MODULES = moduledoc.modules()
# The examples' variables (titan_home, env_file) are the production example inventory's.
PRODUCTION = Inventory.load(data_dir("inventory") / "prod.example.yml")


def test_every_module_is_listed_with_a_summary():
    listed = dict(moduledoc.listing())
    assert set(listed) == set(REGISTRY) and len(listed) >= 30
    for name, summary in listed.items():
        assert summary, f"{name}: its class docstring's first paragraph (the summary) is missing"


@pytest.mark.parametrize("name", MODULES)
def test_every_module_says_what_it_changes_and_what_check_does(name):
    page = moduledoc.page(name)
    assert page.changed, f"{name}: its docstring has no 'Changed:' section"
    assert page.check, f"{name}: its docstring has no 'Check mode:' section"
    assert page.example.strip(), f"{name}: its docstring has no 'Example:' section"


@pytest.mark.parametrize("name", MODULES)
def test_every_example_is_a_valid_playbook_that_uses_its_module(name, tmp_path):
    example = moduledoc.page(name).example
    playbook = tmp_path / "example.yml"
    playbook.write_text("- hosts: all\n  gather_facts: false\n  tasks:\n"
                        + textwrap.indent(example, "    "))
    plays = load_playbook(playbook, inventory=PRODUCTION).plays  # PlaybookError: file:line
    used = {task.module for play in plays for task in _tasks(play.tasks)}
    assert name in used, f"{name}: its example uses only {sorted(used)}"


def _tasks(items):
    for item in items:
        if hasattr(item, "module"):
            yield item
        else:
            for part in ("block", "rescue", "always"):
                yield from _tasks(getattr(item, part, []))


@pytest.mark.parametrize("name", MODULES)
def test_the_page_lists_every_declared_argument_as_declared(name):
    cls = REGISTRY[name]
    shown = moduledoc.text(moduledoc.page(name))
    for arg, spec in cls.args.items():
        line = next((x.strip() for x in shown.splitlines() if x.strip().startswith(f"{arg}: ")), None)
        assert line, f"{name}: argument {arg!r} is not on its page"
        assert ("required" in line) == spec.required, line
        assert ("secret (never shown)" in line) == spec.secret, line
        for choice in spec.choices:
            assert str(choice) in line, line
        if spec.default is not None:
            assert "default: " in line, line


def test_a_page_shows_types_defaults_choices_and_secrets():
    shown = moduledoc.text(moduledoc.page("env"))
    assert "  key: string; required\n" in shown
    assert "  state: string; default: present; one of: present, absent\n" in shown
    assert "  value: string or integer or number; secret (never shown)\n" in shown
    assert "CHANGED\n  when the file's content changed" in shown
    assert "EXAMPLE\n  - name: slow the engine's order rate\n    env:\n" in shown
    assert moduledoc.page("ansible.builtin.command").name == "command"


def _doc(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from ripcord.program import main; sys.argv = ['ripcord', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, "doc", *args], capture_output=True, text=True,
                          timeout=60)


def test_ripcord_doc_lists_and_shows_and_names_close_matches_for_a_typo():
    listed = _doc()
    assert listed.returncode == 0, listed.stderr
    assert any(line.split()[0] == "halt" and "engine" in line for line in listed.stdout.splitlines())
    shown = _doc("wait_for")
    assert shown.returncode == 0 and shown.stdout.startswith("wait_for: ") and "ARGUMENTS" in shown.stdout
    typo = _doc("comand")
    assert typo.returncode == EXIT_INVALID and typo.stdout == ""
    assert typo.stderr.splitlines() == ["error: no module named 'comand'; did you mean command, "
                                        "titan_command?"]
    refused = _doc("apt")
    assert refused.returncode == EXIT_INVALID and "not a ripcord module: package managers" in refused.stderr
