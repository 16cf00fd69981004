"""Running real Ansible as the oracle: its executables, in an environment that reads nothing else."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def ansible_executable(name: str) -> str:
    """`name` from the test interpreter's bin directory, else from PATH; failing (not skipping)
    when absent, because ansible-core is a declared test dependency."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found next to {sys.executable} nor on PATH: install the test "
                    "extra (pip install -e '.[test]', which pins ansible-core)", pytrace=False)
    return found


def ansible_env(workdir: Path) -> dict[str, str]:
    """An environment in which Ansible reads nothing but the inventories it is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    config = workdir / "ansible.cfg"
    config.write_text("")
    env.update(
        ANSIBLE_CONFIG=str(config),
        ANSIBLE_HOME=str(workdir / "home"),
        ANSIBLE_LOCAL_TEMP=str(workdir / "tmp"),
        ANSIBLE_INVENTORY_ENABLED="yaml",
        ANSIBLE_INVENTORY_UNPARSED_FAILED="True",
        ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="True",
        # what ripcord skips in a directory source, Ansible must skip too
        ANSIBLE_INVENTORY_IGNORE_REGEX=r"\.example\.ya?ml$,^topology\.ya?ml$",
        ANSIBLE_DUPLICATE_YAML_DICT_KEY="ignore",
        ANSIBLE_DEPRECATION_WARNINGS="False",
        ANSIBLE_LOCALHOST_WARNING="False",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )
    return env
