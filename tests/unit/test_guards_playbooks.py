"""The two-person rule on every path: a playbook is guarded by what it does, not by its name."""

from __future__ import annotations

import shutil

import pytest

from ripcord import procedures
from ripcord.approvals import ApprovalRequired, Approvals
from ripcord.errors import DeclinedError, InputError
from ripcord.inventory import Inventory
from ripcord.playbook import load_playbook
from ripcord.runner import Options

PROD = ("all:\n  children:\n    exec:\n      vars:\n        ripcord_require_approval: {rule}\n"
        "      hosts:\n        exec-1: {{ansible_host: 127.0.0.1}}\n")


@pytest.fixture(autouse=True)
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("RIPCORD_JOURNAL", str(tmp_path / "state" / "journal.jsonl"))
    monkeypatch.setenv("RIPCORD_APPROVALS", str(tmp_path / "approvals"))
    monkeypatch.setenv("RIPCORD_OPERATOR", "alice")


def inventory(tmp_path, rule: str = "[flatten]") -> Inventory:
    path = tmp_path / "inv.yml"
    path.write_text(PROD.format(rule=rule))
    return Inventory.load([path])


def playbook(tmp_path, inv, tasks: str, name: str = "mine.yml"):
    path = tmp_path / name
    path.write_text(f"- name: mine\n  hosts: exec\n  tasks:\n{tasks}")
    return load_playbook(path, inventory=inv)


def needs(pb, inv, **kw) -> str | None:
    """The procedure named by the approval request a run would file, or None when none."""
    try:
        procedures.guard(pb, inv, "exec-1", kw.pop("options", Options()), approval=None, **kw)
    except ApprovalRequired as exc:
        return exc.message.split(" on ")[0]
    return None


def test_a_copied_flatten_playbook_asks_for_the_flatten_approval(tmp_path):
    inv = inventory(tmp_path)
    copy = tmp_path / "tidy-up.yml"
    shutil.copy(procedures.PLAYBOOKS / "flatten.yml", copy)
    assert needs(load_playbook(copy, inventory=inv), inv) == "flatten"


@pytest.mark.parametrize("task", [
    "    - nats: {subject: titan.cmd.risk.flatten, body: {symbol: ALL}}\n",
    "    - titan_command: {command: '{{ what }}'}\n      vars: {what: flatten}\n",
    "    - block:\n        - titan_command: {command: flatten}\n",
])
def test_the_flatten_command_sent_any_other_way_asks_too(tmp_path, task):
    inv = inventory(tmp_path)
    assert needs(playbook(tmp_path, inv, task), inv) == "flatten"


@pytest.mark.parametrize("rule, task, guarded", [
    ("[cancel-all]", "    - exchange: {action: cancel_all}\n", "cancel-all"),
    ("[resume]", "    - titan_command: {command: halt, body: {state: NORMAL}}\n", "resume"),
    ("[resume]", "    - titan_command: {command: halt, body: {state: HALTED}}\n", None),
    ("[master-arm]", "    - uri: {url: 'http://x/api/execution/master-arm', method: POST}\n",
     "master-arm"),
    ("[master-arm]", "    - uri: {url: 'http://x/health'}\n", None),
    ("[isolate]", "    - services: {state: stopped, names: [titan-hunter]}\n", "isolate"),
    ("[flatten]", "    - debug: {msg: hello}\n    - exchange: {action: positions}\n", None),
    ("[flatten, play]", "    - debug: {msg: hello}\n", "play"),
])
def test_a_playbook_is_guarded_by_what_it_does(tmp_path, rule, task, guarded):
    inv = inventory(tmp_path, rule)
    assert needs(playbook(tmp_path, inv, task), inv) == guarded


def test_check_runs_and_halts_need_none_and_an_unknown_name_is_invalid_input(tmp_path):
    inv = inventory(tmp_path)
    flatten = load_playbook(procedures.PLAYBOOKS / "flatten.yml", inventory=inv)
    assert needs(flatten, inv, options=Options(check=True)) is None
    halt = load_playbook(procedures.PLAYBOOKS / "halt.yml", inventory=inventory(tmp_path, "[halt]"))
    assert needs(halt, inventory(tmp_path, "[halt]"), procedure="halt") is None
    broken = inventory(tmp_path, "'{{ nosuch }}'")  # a rule that cannot render never stops a halt
    assert needs(halt, broken, procedure="halt") is None
    with pytest.raises(InputError, match="cannot be rendered"):
        needs(flatten, broken)
    with pytest.raises(InputError, match="flaten: not a procedure"):
        needs(flatten, inventory(tmp_path, "[flaten]"))


def test_an_approval_for_invoke_flatten_does_not_run_a_copy(tmp_path):
    inv = inventory(tmp_path)
    flatten = load_playbook(procedures.PLAYBOOKS / "flatten.yml", inventory=inv)
    copy = tmp_path / "flatten.yml"
    shutil.copy(procedures.PLAYBOOKS / "flatten.yml", copy)
    copy.write_text(copy.read_text().replace("timeout: 10", "timeout: 9"))
    with pytest.raises(ApprovalRequired) as asked:
        procedures.guard(flatten, inv, "exec-1", Options(), approval=None, procedure="flatten")
    Approvals().approve(asked.value.request_id, "bob")
    with pytest.raises(DeclinedError, match="playbook_sha256 differ"):
        procedures.guard(load_playbook(copy, inventory=inv), inv, "exec-1", Options(),
                         approval=asked.value.request_id, procedure="flatten")
    procedures.guard(flatten, inv, "exec-1", Options(), approval=asked.value.request_id,
                     procedure="flatten")


@pytest.mark.parametrize("target", ["exec-1", "'{{ groups.exec[0] }}'", "'{{ somewhere }}'"])
def test_a_task_delegated_to_a_guarded_host_is_guarded(tmp_path, target):
    path = tmp_path / "inv.yml"
    path.write_text(PROD.format(rule="[isolate]") + "    lab:\n      hosts:\n        lab-1: {}\n")
    inv = Inventory.load([path])
    pb = tmp_path / "reach.yml"
    pb.write_text("- name: reach\n  hosts: lab\n  tasks:\n"
                  "    - services: {state: stopped, names: [titan-hunter]}\n"
                  f"      delegate_to: {target}\n"
                  "      vars: {somewhere: exec-1}\n")
    with pytest.raises(ApprovalRequired, match="isolate on lab-1"):
        procedures.guard(load_playbook(pb, inventory=inv), inv, "lab-1", Options(), approval=None)
