"""ripcord.fasthalt without a fleet: which command lines publish early, and the controller's
secret as the inventory names it (an environment variable, or a file only its owner reads)."""

from __future__ import annotations

import pytest

from ripcord import fasthalt
from ripcord.errors import InputError

INVOKE = "/work/main/.venv/bin/invoke"


@pytest.mark.parametrize("argv, expected", [
    ([INVOKE, "halt", "--host", "exec", "--reason", "drill"],
     {"host": "exec", "reason": "drill", "inventory": []}),
    (["/x/invoke/__main__.py", "--search-root", "/r", "halt", "-i", "a.yml", "--inventory=b.yml",
      "-l", "exec-1", "--json", "--deadline", "2"],
     {"host": "exec-1", "reason": "", "inventory": ["a.yml", "b.yml"]}),
    (["/usr/bin/ripcord", "halt", "--host=prod"], {"host": "prod", "reason": "", "inventory": []}),
])
def test_a_plain_halt_command_line_is_understood(argv, expected):
    assert fasthalt.parse_argv(argv) == expected


@pytest.mark.parametrize("argv", [
    [INVOKE, "halt", "--host", "exec", "--check"],  # the preflight publishes nothing
    [INVOKE, "halt", "--host", "exec", "-C"],
    [INVOKE, "halt", "--help"],
    [INVOKE, "halt"],  # no host: the task says so
    [INVOKE, "resume", "--host", "exec"],
    [INVOKE, "halt", "--host", "exec", "resume"],  # a second task
    [INVOKE, "-c", "other", "halt", "--host", "exec"],  # another collection
    ["/usr/bin/pytest", "halt", "--host", "exec"],
    [INVOKE, "halt", "--host"],
])
def test_anything_else_is_left_to_the_halt_module(argv):
    assert fasthalt.parse_argv(argv) is None


def test_the_secret_from_an_environment_variable_the_inventory_names(monkeypatch):
    monkeypatch.setenv("HALT_UNIT_SECRET", "s3cret\n")
    assert fasthalt.controller_secret({"titan_hmac_secret_env": "HALT_UNIT_SECRET"}) == "s3cret"
    monkeypatch.delenv("HALT_UNIT_SECRET")
    assert fasthalt.controller_secret({"titan_hmac_secret_env": "HALT_UNIT_SECRET"}) is None


def test_a_secret_file_of_mode_600_is_read_and_one_others_can_read_is_refused(tmp_path):
    path = tmp_path / "hmac"
    path.write_text("s3cret\n")
    path.chmod(0o600)
    assert fasthalt.controller_secret({"titan_hmac_secret_file": str(path)}) == "s3cret"
    for mode in (0o640, 0o604):
        path.chmod(mode)
        with pytest.raises(InputError, match="readable by others than its owner") as raised:
            fasthalt.controller_secret({"titan_hmac_secret_file": str(path)})
        assert "s3cret" not in str(raised.value)
    assert fasthalt.controller_secret({"titan_hmac_secret_file": str(tmp_path / "none")}) is None
    assert fasthalt.controller_secret({}) is None


def test_only_an_unsafe_secret_file_refuses_the_halt_early(monkeypatch, tmp_path):
    """A bad inventory or pattern is left to the task, which reports it as ever (exit 2)."""
    monkeypatch.setattr(fasthalt, "PENDING", None)
    monkeypatch.setattr(fasthalt, "REFUSED", None)
    fasthalt.begin("exec", "drill", [str(tmp_path / "missing.yml")])
    assert fasthalt.refusal() is None and fasthalt.PENDING is None
    key = tmp_path / "hmac"
    key.write_text("s3cret\n")
    key.chmod(0o644)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(f"all:\n  vars:\n    titan_hmac_secret_file: {key}\n    nats_url: nats://127.0.0.1:9\n"
                         "  children:\n    exec:\n      hosts:\n        exec-1:\n")
    fasthalt.begin("nomatch", "drill", [str(inventory)])
    assert fasthalt.refusal() is None
    fasthalt.begin("exec", "drill", [str(inventory)])
    assert "readable by others" in fasthalt.refusal() and fasthalt.PENDING is None


def test_the_fast_path_hands_its_inventory_read_to_the_command_once(tmp_path):
    """fasthalt reads the inventory before anything else; the halt task's own read takes that one
    (one read, one view of the fleet), once: a later read reads the files."""
    from ripcord.inventory import Inventory, hand_over, load_operator_inventory

    path = tmp_path / "hosts.yml"
    path.write_text("all:\n  hosts:\n    exec-1:\n")
    early = Inventory.load([path])
    hand_over([str(path)], early)
    assert load_operator_inventory([path]) is early
    again = load_operator_inventory([path])
    assert again is not early and again.hosts == early.hosts
    other = tmp_path / "other.yml"
    other.write_text("all:\n  hosts:\n    exec-2:\n")
    hand_over([str(path)], early)
    assert list(load_operator_inventory([other]).hosts) == ["exec-2"]  # other paths: read them
    assert load_operator_inventory([path]) is not early  # and the hand-over is gone


def test_the_halt_module_reads_the_secret_file_with_the_same_refusals(tmp_path):
    """trading.controller_secret (resume, flatten, the halt's rungs) reads through the same
    reader as the fast path: mode 600 only, no link followed, an empty file is no secret."""
    from types import SimpleNamespace

    from ripcord.modules.bus import EnvFileError
    from ripcord.modules.trading import controller_secret

    key = tmp_path / "hmac.secret"
    key.write_text("s3cret\n")
    key.chmod(0o600)
    ctx = SimpleNamespace(secrets=set())
    assert controller_secret(ctx, str(key)) == "s3cret" and ctx.secrets == {"s3cret"}
    link = tmp_path / "link.secret"
    link.symlink_to(key)
    with pytest.raises(EnvFileError, match="cannot read"):
        controller_secret(ctx, str(link))
    key.chmod(0o640)
    with pytest.raises(EnvFileError, match="readable by others than its owner"):
        controller_secret(ctx, str(key))
    key.write_text("")
    key.chmod(0o600)
    with pytest.raises(EnvFileError, match="is empty"):
        controller_secret(ctx, str(key))
