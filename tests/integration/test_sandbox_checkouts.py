"""Two checkouts of ripcord, one sandbox fleet (issue 13): `sandbox.up` run from a second
checkout while the first one's fleet is up writes the second checkout's inventory/sandbox.yml,
so its `make demo` finds its inventory, and the first checkout's inventory is left as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ripcord.inventory import Inventory

REPO = Path(__file__).resolve().parents[2]


def copy_checkout(target: Path) -> Path:
    """The working tree's files as they are now (edits and new files included, ignored ones
    not) copied to target."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True, text=True).stdout.split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file() and not name.startswith("inventory/sandbox."):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def test_up_from_a_second_checkout_writes_that_checkouts_inventory(fleet, tmp_path):
    first = fleet.inventory.read_text()
    second = copy_checkout(tmp_path / "checkout-2")
    env = {**os.environ, "PYTHONPATH": str(second)}  # the second checkout's ripcord, not ours
    argv = [sys.executable, "-m", "invoke", "--search-root", str(second)]
    up = subprocess.run([*argv, "sandbox.up", "--dir", str(fleet.root), "--json"], cwd=second,
                        env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    written = second / "inventory" / "sandbox.yml"
    assert json.loads(up.stdout)["inventory"] == str(written)
    hosts = Inventory.load([written])
    assert hosts.select("sandbox") == [h.name for h in fleet.plan.hosts]
    assert hosts.connection_for("exec-1").port == fleet.plan.host("exec-1").ssh_port
    assert fleet.inventory.read_text() == first  # the first checkout's is untouched
    # the second checkout's own commands now find their inventory (no --inventory given)
    listed = subprocess.run([*argv, "inventory", "--graph"], cwd=second, env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "exec-1" in listed.stdout
