"""`invoke inventory` prints what ansible-inventory prints, for the same inventory."""

import subprocess
import sys
from pathlib import Path

import pytest
from ansible_oracle import ansible_env, ansible_executable

REPO = Path(__file__).resolve().parents[2]
NESTED = REPO / "tests" / "unit" / "inventories" / "nested"


@pytest.mark.parametrize("args", [["--list"], ["--graph"], ["--host", "web-01"]])
def test_invoke_inventory_matches_ansible_inventory(args, tmp_path):
    source = next(NESTED.glob("*.y*ml"))
    ours = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), "inventory",
                           "--inventory", str(source), *args],
                          capture_output=True, text=True, timeout=60)
    theirs = subprocess.run([ansible_executable("ansible-inventory"), "-i", str(source), *args],
                            capture_output=True, text=True, env=ansible_env(tmp_path), cwd=tmp_path,
                            timeout=120)
    assert ours.returncode == 0, ours.stderr
    assert theirs.returncode == 0, theirs.stderr
    assert ours.stdout.strip() == theirs.stdout.strip()
