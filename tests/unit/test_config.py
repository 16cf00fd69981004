"""Operator configuration: ripcord.yaml found as invoke finds its own, each value's source, bad
files refused with file:line, and the values used where ripcord reads them (operator, state
directory, inventory, playbook and check directories); the tasks' Ansible-style short options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ripcord import config, paths
from ripcord.errors import InputError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean(tmp_path, monkeypatch):
    """No RIPCORD_* from the caller, the user's file under tmp_path, the cwd a project below it."""
    for key in config.KEYS.values():
        monkeypatch.delenv(key.env, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    project = tmp_path / "infra" / "deep" / "er"
    project.mkdir(parents=True)
    monkeypatch.chdir(project)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_precedence_user_then_project_then_environment(clean, monkeypatch):
    user = write(clean / "xdg" / "ripcord" / "ripcord.yaml", "operator: from-user\nstate_dir: /u\n")
    project = write(clean / "infra" / "ripcord.yaml",
                    "# ops\noperator: from-project\ncheck_dirs: [checks, /abs/checks]\n")
    found = config.load()
    assert found["operator"] == config.Setting("from-project", f"{project}:2")
    assert found["state_dir"] == config.Setting(Path("/u"), f"{user}:2")
    # relative to the file's directory, not to the current one
    assert found["check_dirs"].value == [clean / "infra" / "checks", Path("/abs/checks")]
    assert found["playbook_dirs"] == config.Setting([], "default")

    monkeypatch.setenv("RIPCORD_OPERATOR", "from-env")
    monkeypatch.setenv("RIPCORD_INVENTORY", "a.yml,b.yml")
    found = config.load()
    assert found["operator"] == config.Setting("from-env", "$RIPCORD_OPERATOR")
    assert found["inventory"].value == [Path("a.yml"), Path("b.yml")]


def test_the_nearest_project_file_wins(clean):
    write(clean / "infra" / "ripcord.yaml", "operator: outer\n")
    inner = write(clean / "infra" / "deep" / "ripcord.yaml", "operator: inner\n")
    assert config.load()["operator"].source == f"{inner}:1"


@pytest.mark.parametrize("text, line, words", [
    ("operator: alice\nopreator: bob\n", 2, "unknown setting 'opreator'"),
    ("operator: [alice]\n", 1, "expected a non-empty string"),
    ("check_dirs:\n  - ok\n  - {a: 1}\n", 3, "expected a path or a list of paths"),
    ("operator: 'unclosed\n", 2, "invalid YAML"),
    ("- operator\n", 1, "expected a mapping"),
])
def test_a_bad_file_is_invalid_input_naming_file_and_line(clean, text, line, words):
    path = write(clean / "infra" / "ripcord.yaml", text)
    with pytest.raises(InputError) as error:
        config.load()
    assert error.value.exit_code == 2
    assert str(error.value).startswith(f"{path}:{line}: ") and words in str(error.value)


def test_values_are_used_where_ripcord_reads_them(clean, monkeypatch):
    from ripcord.journal import default_path, operator
    from ripcord.sandbox.plan import state_base

    write(clean / "infra" / "ripcord.yaml", "operator: carol\nstate_dir: state\n")
    assert operator() == "carol"
    assert state_base() == clean / "infra" / "state"
    assert default_path() == clean / "infra" / "state" / "journal.jsonl"
    monkeypatch.setenv("RIPCORD_STATE_DIR", str(clean / "elsewhere"))
    assert state_base() == clean / "elsewhere"


def test_the_inventory_comes_from_configuration(clean):
    from ripcord.inventory import load_operator_inventory

    write(clean / "infra" / "hosts.yml", "all:\n  hosts:\n    web-9:\n      ansible_host: 10.0.0.9\n")
    write(clean / "infra" / "ripcord.yaml", "inventory: hosts.yml\n")
    assert load_operator_inventory().hosts == ["web-9"]


def test_installed_without_an_inventory_says_how_to_give_one(clean, monkeypatch):
    monkeypatch.setattr(config, "checkout", lambda: None)
    with pytest.raises(InputError) as error:
        config.default_inventory()
    assert error.value.exit_code == 2 and "ripcord.yaml" in (error.value.hint or "")


def test_play_finds_a_name_in_playbook_dirs_then_the_shipped_ones(clean):
    mine = write(clean / "infra" / "plays" / "rotate.yml", "- hosts: all\n  tasks: []\n")
    write(clean / "infra" / "ripcord.yaml", "playbook_dirs: [plays]\n")
    assert config.find_playbook("rotate") == str(mine)
    assert config.find_playbook("rotate.yml") == str(mine)
    assert config.find_playbook("halt") == str(paths.data_dir("playbooks") / "halt.yml")
    assert config.find_playbook("nowhere.yml") == "nowhere.yml"  # its load says it is missing


def test_verify_runs_the_operators_check_dirs_too(clean):
    from ripcord.verify import CHECKS, _selection

    write(clean / "infra" / "ripcord.yaml", "check_dirs: [mine]\n")
    write(clean / "infra" / "mine" / "test_own.py", "def test_x(host):\n    pass\n")
    mine = str(clean / "infra" / "mine")
    assert _selection("") == [str(CHECKS), mine]
    assert _selection("halt") == [str(CHECKS), mine, "-m", "(halt) and not situational"]
    assert _selection("test_own.py::test_x") == [f"{mine}/test_own.py::test_x"]
    assert _selection("test_halt.py") == [str(CHECKS / "test_halt.py")]


def test_data_dirs_are_the_checkouts_here_and_the_packages_when_installed(monkeypatch):
    assert paths.data_dir("playbooks") == REPO / "playbooks"
    monkeypatch.setattr(paths, "checkout", lambda: None)
    assert paths.data_dir("checks") == paths.PACKAGE / "checks"
    assert paths.data_dir("inventory") == paths.PACKAGE / "inventory_data"


def test_invoke_config_shows_each_value_and_its_source(clean):
    project = write(clean / "infra" / "ripcord.yaml", "operator: dave\n")
    env = {**os.environ, "RIPCORD_STATE_DIR": str(clean / "st"), "XDG_CONFIG_HOME": str(clean / "xdg")}
    env.pop("RIPCORD_OPERATOR", None)
    result = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), "config",
                             "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)["settings"]
    assert settings["operator"] == {"value": "dave", "source": f"{project}:1"}
    assert settings["state_dir"] == {"value": str(clean / "st"), "source": "$RIPCORD_STATE_DIR"}
    assert settings["check_dirs"] == {"value": [], "source": "default"}


def test_options_are_ansibles_on_every_task():
    from invoke import Parser

    from ripcord.tasks import ns

    parser = Parser(contexts=ns.to_contexts())
    args = parser.parse_argv(["play", "x.yml", "-i", "a", "-i", "b", "-e", "k=v", "-l", "exec",
                              "-C", "-vv"])[0].args
    assert (args["inventory"].value, args["extra-vars"].value, args["host"].value,
            args["check"].value, args["verbose"].value) == (["a", "b"], ["k=v"], "exec", True, 2)
    assert parser.parse_argv(["halt", "--limit", "exec-1"])[0].args["host"].value == "exec-1"
    for context in ns.to_contexts():
        names = {n for arg in context.args.values() for n in arg.names}
        assert "d" not in names and "b" not in names  # --debug: no short form at all
        for option, short in (("inventory", "i"), ("check", "C"), ("verbose", "v")):
            assert option not in context.args or short in context.args[option].names, context.name
        if "host" in context.args and context.name != "inventory":
            assert {"l", "limit"} <= set(context.args["host"].names), context.name


def test_the_topology_beside_ripcord_yaml_wins_over_the_shipped_one(clean):
    from ripcord.topology import find_topology

    write(clean / "infra" / "ripcord.yaml", "operator: erin\n")
    mine = write(clean / "infra" / "inventory" / "topology.yml", "services: {}\n")
    assert find_topology() == mine
    (clean / "infra" / "ripcord.yaml").unlink()
    assert find_topology() == paths.data_dir("inventory") / "topology.yml"


def test_a_missing_check_directory_is_named(clean):
    from ripcord.verify import _selection

    write(clean / "infra" / "ripcord.yaml", "check_dirs: [gone]\n")
    with pytest.raises(InputError) as error:
        _selection("")
    assert error.value.exit_code == 2 and str(clean / "infra" / "gone") in str(error.value)
