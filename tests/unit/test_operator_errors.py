"""Operator-facing errors name the fix: a refused port names its service, its host, its state and
the command that brings it back (ripcord.modules.servicehint)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ripcord.modules import servicehint
from ripcord.modules.base import TaskContext
from ripcord.templating import Templar

HEALTH = {"titan-execution": "http://127.0.0.1:24041/health",
          "titan-hunter": "http://127.0.0.1:24043/health"}


@dataclass
class Out:
    rc: int
    stdout: str
    stderr: str = ""


class Host:
    """A host whose supervisorctl answers `status` as supervisor 4 does."""

    def __init__(self, states: dict[str, str]):
        self.states, self.commands = states, []

    def run(self, command: str, **_):
        self.commands.append(command)
        name = command.split()[-1].strip("'")
        state = self.states[name]
        return Out(0 if state == "RUNNING" else 3, f"{name}   {state}   Dec 06 01:41 PM\n")


def context(states: dict[str, str], **extra) -> TaskContext:
    return TaskContext(host="exec-1", vars={"health_urls": HEALTH, "services": list(HEALTH), **extra},
                       conn=Host(states), templar=Templar())


def test_a_refused_engine_port_names_the_service_its_state_and_the_command(monkeypatch):
    monkeypatch.setattr("sys.argv", ["/usr/local/bin/ripcord", "resume"])
    ctx = context({"titan-execution": "STOPPED"})
    message = servicehint.explain(ctx, "127.0.0.1", 24041, "127.0.0.1:24041: connect failed")
    assert message == ("titan-execution on exec-1 is not running (supervisor: STOPPED; "
                       "127.0.0.1:24041: connect failed); start it: "
                       "ripcord restart --host exec-1 --service titan-execution")


def test_in_the_checkout_the_command_is_invoke_and_localhost_is_the_loopback(monkeypatch):
    monkeypatch.setattr("sys.argv", ["/repo/.venv/bin/invoke", "resume"])
    ctx = context({"titan-hunter": "EXITED"})
    message = servicehint.explain(ctx, "localhost", 24043, "localhost:24043: connect failed")
    assert message.startswith("titan-hunter on exec-1 is not running (supervisor: EXITED;")
    assert message.endswith("start it: invoke restart --host exec-1 --service titan-hunter")


def test_a_running_service_that_refuses_says_so_and_a_port_of_no_service_is_left_alone():
    ctx = context({"titan-execution": "RUNNING"})
    running = servicehint.explain(ctx, "127.0.0.1", 24041, "127.0.0.1:24041: connect failed")
    assert running.startswith("titan-execution on exec-1 is running (supervisor: RUNNING) but refuses")
    assert servicehint.explain(ctx, "127.0.0.1", 9999, "127.0.0.1:9999: connect failed") == \
        "127.0.0.1:9999: connect failed"
    assert servicehint.explain(ctx, "10.0.0.9", 24041, "10.0.0.9:24041: connect failed") == \
        "10.0.0.9:24041: connect failed"  # the same port on another address is not this service


def test_an_engine_that_did_not_answer_is_said_stopped_with_the_command(monkeypatch):
    monkeypatch.setattr("sys.argv", ["/repo/.venv/bin/invoke", "cancel-all"])
    assert servicehint.state_and_fix(context({"titan-execution": "STOPPED"}), "titan-execution") == (
        "titan-execution on exec-1 is not running (supervisor: STOPPED); start it: "
        "invoke restart --host exec-1 --service titan-execution")
    assert servicehint.state_and_fix(context({"titan-execution": "RUNNING"}), "titan-execution") is None
    unreachable = TaskContext(host="exec-1", vars={}, conn=None)
    assert servicehint.state_and_fix(unreachable, "titan-execution") is None


def test_hints_spell_commands_as_the_operator_runs_ripcord(monkeypatch, capsys):
    from ripcord.approvals import ApprovalRequired
    from ripcord.cli import print_error

    missing = ApprovalRequired("request r-1 is not approved yet",
                               hint="another operator runs `invoke approve r-1`", request_id="r-1")
    monkeypatch.setattr("sys.argv", ["/home/sre/.local/bin/ripcord", "halt"])
    print_error(missing)
    assert capsys.readouterr().err.splitlines()[1] == "hint: another operator runs `ripcord approve r-1`"
    monkeypatch.setattr("sys.argv", ["/repo/.venv/bin/invoke", "halt"])
    print_error(missing)
    assert capsys.readouterr().err.splitlines()[1] == "hint: another operator runs `invoke approve r-1`"


def test_an_inventory_directory_with_no_inventory_says_to_give_one(tmp_path):
    from ripcord.errors import InputError
    from ripcord.inventory import Inventory

    (tmp_path / "topology.yml").write_text("services: {}\n")  # never an inventory file
    with pytest.raises(InputError) as raised:
        Inventory.load(tmp_path)
    assert str(raised.value) == f"no inventory files in {tmp_path}"
    assert raised.value.hint.startswith("give -i FILE (or set inventory: in ripcord.yaml)")


def test_a_refused_nats_names_the_host_that_runs_it_and_the_command(monkeypatch):
    class LazyHostVars(dict):  # as the runner's hostvars: empty until a host is asked for
        def __getitem__(self, host):
            return {"db-1": {"services": ["postgresql", "nats"]}, "exec-1": {"services": []}}[host]

        def __contains__(self, host):
            return host in ("db-1", "exec-1")

    monkeypatch.setattr("sys.argv", ["/usr/local/bin/ripcord", "cancel-all"])
    ctx = TaskContext(host="exec-1", conn=None,
                      vars={"groups": {"all": ["db-1", "exec-1"]}, "hostvars": LazyHostVars()})
    refused = "cannot connect to NATS at nats://10.0.0.5:4222: connection refused"
    assert servicehint.nats_hint(ctx, refused) == (
        f"{refused}; nats runs on db-1: see `ripcord status --host db-1`, and if it is stopped "
        "there, start it: ripcord restart --host db-1 --service nats")
    slow = "cannot connect to NATS at nats://10.0.0.5:4222: no answer within 1s"
    assert servicehint.nats_hint(ctx, slow) == slow  # not refused: a network matter, no restart


def test_wait_for_timing_out_on_a_stopped_service_names_it(monkeypatch):
    monkeypatch.setattr("sys.argv", ["/repo/.venv/bin/invoke", "play"])
    ctx = context({"titan-execution": "STOPPED"})
    assert servicehint.down(ctx, "127.0.0.1", 24041) == (
        "titan-execution on exec-1 is not running (supervisor: STOPPED); start it: "
        "invoke restart --host exec-1 --service titan-execution")
    assert servicehint.down(ctx, "127.0.0.1", 9999) is None
