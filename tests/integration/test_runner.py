"""The runner on real hosts: lockstep tasks, serial batches, handlers, blocks, failure policies,
unreachable hosts, host keys, locks, retries and the journal. Playbooks are built as objects here;
the parser has its own tests. Outcomes are read back over a second path (the system ssh client).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import time
from pathlib import Path

import pytest

from ripcord.inventory import Inventory
from ripcord.journal import Journal
from ripcord.lock import LOCK_NAME
from ripcord.playbook import Play, Playbook, Task
from ripcord.runner import Options, Runner, serial_batches

EXECS = ["exec-1", "exec-2"]


REPO = Path(__file__).resolve().parents[2]


def T(name: str, module: str, args: dict | None = None, **keywords) -> Task:
    return Task(name=name, file="test.yml", line=1, module=module, args=args or {}, **keywords)


def B(name: str, block: list[Task], rescue=(), always=(), **keywords) -> Task:
    return Task(name=name, file="test.yml", line=1, block=list(block), rescue=list(rescue),
                always=list(always), **keywords)


def run(inventory: Inventory, *plays: Play, **options) -> Runner:
    runner = Runner(inventory, Options(**options), confirm=lambda prompt, typed=None: True,
                    run_id=f"test-{time.time_ns()}", operator="pytest", command="pytest")
    runner.run(Playbook("test.yml", list(plays)))
    return runner


def P(tasks: list[Task], hosts: str = "exec", **keywords) -> Play:
    return Play(name="test play", hosts=hosts, file="test.yml", line=1, tasks=tasks, **keywords)


@pytest.fixture
def scratch(access):
    """A scratch file path on each exec host, removed afterwards."""
    name = f"runner-{time.time_ns()}"
    yield f"$TITAN_HOME/state/{name}"
    for host in EXECS:
        access.ssh(host, f'rm -rf "$TITAN_HOME/state/{name}"*')


def test_tasks_run_in_lockstep_with_register_when_and_set_fact(inventory, access, scratch):
    runner = run(inventory, P([
        T("write", "shell", {"cmd": f'echo "$RIPCORD_HOST" > {scratch}'}),
        T("read", "command", {"cmd": f"cat {scratch.replace('$TITAN_HOME', '{{ titan_home }}')}"},
          register="seen"),
        T("remember", "set_fact", {"who": "{{ seen.stdout }}"}),
        T("only on exec-2", "shell", {"cmd": f"echo two >> {scratch}"},
          when=["who == 'exec-2'"]),
    ]))
    assert runner.summary()["exec-1"] == {"ok": 3, "changed": 2, "unreachable": 0, "failed": 0,
                                          "skipped": 1, "rescued": 0, "ignored": 0}
    assert access.ssh("exec-1", f"cat {scratch}").stdout.split() == ["exec-1"]
    assert access.ssh("exec-2", f"cat {scratch}").stdout.split() == ["exec-2", "two"]


def test_serial_batches_finish_one_host_before_the_next(inventory, access, scratch):
    stamp = f"date +%s.%N >> {scratch}"
    run(inventory, P([T("first", "shell", {"cmd": stamp}), T("second", "shell", {"cmd": stamp})],
                     serial=1))
    first = [float(x) for x in access.ssh("exec-1", f"cat {scratch}").stdout.split()]
    second = [float(x) for x in access.ssh("exec-2", f"cat {scratch}").stdout.split()]
    assert max(first) < min(second)


def test_serial_forms():
    hosts = [f"h{i}" for i in range(10)]
    assert [len(b) for b in serial_batches(hosts, 3)] == [3, 3, 3, 1]
    assert [len(b) for b in serial_batches(hosts, "30%")] == [3, 3, 3, 1]
    assert [len(b) for b in serial_batches(hosts, [1, 2, "50%"])] == [1, 2, 5, 2]
    assert serial_batches(hosts, None) == [hosts]


def test_handlers_run_once_at_the_end_in_definition_order(inventory, access, scratch):
    runner = run(inventory, P(
        [T("change", "shell", {"cmd": "true"}, notify=["second", "first"]),
         T("change again", "shell", {"cmd": "true"}, notify=["first"]),
         T("no change", "shell", {"cmd": "true"}, changed_when=False, notify=["never"])],
        handlers=[T("first", "shell", {"cmd": f"echo first >> {scratch}"}),
                  T("second", "shell", {"cmd": f"echo second >> {scratch}"}),
                  T("never", "shell", {"cmd": f"echo never >> {scratch}"})],
    ))
    assert access.ssh("exec-1", f"cat {scratch}").stdout.split() == ["first", "second"]
    assert access.ssh("exec-2", f"cat {scratch}").stdout.split() == ["first", "second"]
    assert runner.summary()["exec-2"]["failed"] == 0


def test_block_rescue_and_always(inventory, access, scratch):
    runner = run(inventory, P([B(
        "guarded",
        block=[T("break on exec-1", "shell", {"cmd": "test \"$RIPCORD_HOST\" != exec-1"}),
               T("after the break", "shell", {"cmd": f"echo block >> {scratch}"})],
        rescue=[T("rescue", "shell", {"cmd": f"echo rescue >> {scratch}"})],
        always=[T("always", "shell", {"cmd": f"echo always >> {scratch}"})])]))
    assert access.ssh("exec-1", f"cat {scratch}").stdout.split() == ["rescue", "always"]
    assert access.ssh("exec-2", f"cat {scratch}").stdout.split() == ["block", "always"]
    assert runner.summary()["exec-1"]["rescued"] == 1
    assert runner.summary()["exec-1"]["failed"] == 0  # as Ansible's recap: rescued, not failed
    assert not runner.hosts["exec-1"].failed


def test_a_failed_host_leaves_the_play_and_others_go_on(inventory, access, scratch):
    runner = run(inventory, P([
        T("fail on exec-1", "shell", {"cmd": "test \"$RIPCORD_HOST\" != exec-1"}),
        T("next", "shell", {"cmd": f"echo next >> {scratch}"})]))
    assert access.ssh("exec-1", f"cat {scratch} 2>/dev/null", check=False).stdout == ""
    assert access.ssh("exec-2", f"cat {scratch}").stdout.split() == ["next"]
    assert runner.summary()["exec-1"]["failed"] == 1


def test_any_errors_fatal_stops_every_host(inventory, access, scratch):
    run(inventory, P([
        T("fail on exec-1", "shell", {"cmd": "test \"$RIPCORD_HOST\" != exec-1"}),
        T("next", "shell", {"cmd": f"echo next >> {scratch}"})], any_errors_fatal=True))
    assert access.ssh("exec-2", f"cat {scratch} 2>/dev/null", check=False).stdout == ""


@pytest.mark.parametrize("percentage, continues", [(50, True), (49, False)])
def test_max_fail_percentage_must_be_exceeded_not_equalled(inventory, access, scratch,
                                                            percentage, continues):
    run(inventory, P([
        T("fail on exec-1", "shell", {"cmd": "test \"$RIPCORD_HOST\" != exec-1"}),
        T("next", "shell", {"cmd": f"echo next >> {scratch}"})], max_fail_percentage=percentage))
    written = access.ssh("exec-2", f"cat {scratch} 2>/dev/null", check=False).stdout.split()
    assert written == (["next"] if continues else [])


def test_ignore_errors_until_retries_and_failed_when(inventory, access, scratch):
    runner = run(inventory, P([
        T("ignored", "shell", {"cmd": "exit 3"}, ignore_errors=True),
        T("appears later", "shell", {"cmd": f"(sleep 0.3; touch {scratch}) >/dev/null 2>&1 &"}),
        T("wait for it", "shell", {"cmd": f"test -e {scratch}"}, register="probe",
          until="probe.rc == 0", retries=20, delay=0.1),
        T("judged by output", "shell", {"cmd": "echo ALERT"}, register="out",
          failed_when="'ALERT' in out.stdout", ignore_errors=True),
    ], hosts="exec-1"))
    stats = runner.summary()["exec-1"]
    assert stats["ignored"] == 2 and stats["failed"] == 0
    assert runner.hosts["exec-1"].facts["probe"]["attempts"] > 1
    assert access.ssh("exec-1", f"test -e {scratch}", check=False).returncode == 0  # it appeared


def test_check_mode_skips_commands_and_takes_no_lock(inventory, access, scratch):
    """Another run holds exec-1's lock: a check-mode run neither waits for it nor touches it."""
    lock = f'"$TITAN_HOME/{LOCK_NAME}"'
    holder = json.dumps({"run": "other", "operator": "alice", "command": "ripcord halt",
                         "since": time.time(), "controller": "elsewhere", "pid": 1})
    access.ssh("exec-1", f"mkdir {lock} && printf %s {shlex.quote(holder)} > {lock}/owner.json")
    try:
        runner = run(inventory, P([T("would write", "shell", {"cmd": f"touch {scratch}"})]),
                     check=True, lock_wait_s=0.5)
        assert access.ssh("exec-1", f"cat {lock}/owner.json").stdout == holder  # untouched
    finally:
        access.ssh("exec-1", f"rm -rf {lock}")
    assert runner.summary()["exec-1"]["skipped"] == 1
    assert runner.summary()["exec-1"]["unreachable"] == 0
    for host in EXECS:
        assert access.ssh(host, f"test -e {scratch}", check=False).returncode == 1
    assert access.ssh("exec-2", f"test -e {lock}", check=False).returncode == 1  # none taken


def test_run_once_and_delegate_to(inventory, access, scratch):
    runner = run(inventory, P([
        T("once", "shell", {"cmd": f"echo once >> {scratch}"}, run_once=True, register="r"),
        T("on core-1 for each", "shell", {"cmd": "echo \"$RIPCORD_HOST\""},
          delegate_to="core-1", register="where"),
    ]))
    assert access.ssh("exec-1", f"cat {scratch}").stdout.split() == ["once"]
    assert access.ssh("exec-2", f"cat {scratch} 2>/dev/null", check=False).stdout == ""
    assert runner.hosts["exec-2"].facts["r"]["changed"] is True  # run_once result stands for all
    assert runner.hosts["exec-2"].facts["where"]["stdout"] == "core-1"


def test_tags_select_tasks_but_rescue_and_always_still_run(inventory, access, scratch):
    run(inventory, P([
        T("untagged", "shell", {"cmd": f"echo untagged >> {scratch}"}),
        B("block", tags=frozenset({"halt"}),
          block=[T("tagged", "shell", {"cmd": f"echo tagged >> {scratch}; exit 1"})],
          rescue=[T("rescue", "shell", {"cmd": f"echo rescue >> {scratch}"})],
          always=[T("cleanup", "shell", {"cmd": f"echo cleanup >> {scratch}"},
                    tags=frozenset({"other"}))])], hosts="exec-1"),
        tags=frozenset({"halt"}))
    assert access.ssh("exec-1", f"cat {scratch}").stdout.split() == ["tagged", "rescue", "cleanup"]


def unreachable_inventory(fleet, tmp_path, extra: str) -> Inventory:
    extra_file = tmp_path / "extra.yml"
    extra_file.write_text(extra)
    return Inventory.load([fleet.inventory, extra_file])


def test_an_unreachable_host_is_reported_as_such_and_the_others_go_on(fleet, access, tmp_path,
                                                                      scratch):
    closed_port = fleet.plan.base_port + 9  # inside the fleet's range, never listened on
    inventory = unreachable_inventory(fleet, tmp_path, f"""
all:
  children:
    exec:
      hosts:
        exec-ghost:
          ansible_host: 127.0.0.1
          ansible_port: {closed_port}
          ansible_timeout: 2
""")
    runner = run(inventory, P([T("write", "shell", {"cmd": f"echo hi >> {scratch}"})]))
    assert runner.summary()["exec-ghost"]["unreachable"] == 1
    assert runner.summary()["exec-ghost"]["ok"] == 0
    assert access.ssh("exec-2", f"cat {scratch}").stdout.split() == ["hi"]


def test_a_changed_host_key_is_refused(fleet, access, tmp_path, scratch):
    """exec-1's pinned key is replaced by another host's: ripcord must refuse exec-1 only."""
    port = fleet.plan.host("exec-1").ssh_port
    lines = fleet.plan.known_hosts.read_text().splitlines()
    other_key = lines[0].split()[1:]  # db-1's key type and key
    known = tmp_path / "known_hosts"
    known.write_text("\n".join(f"[127.0.0.1]:{port} {' '.join(other_key)}"
                               if line.startswith(f"[127.0.0.1]:{port} ") else line
                               for line in lines) + "\n")
    inventory = unreachable_inventory(fleet, tmp_path, f"""
all:
  children:
    exec:
      vars:
        ripcord_known_hosts: {known}
""")
    assert inventory.host_vars("exec-1")["ripcord_known_hosts"] == str(known)
    runner = run(inventory, P([T("write", "shell", {"cmd": f"echo hi >> {scratch}"})]))
    assert runner.summary()["exec-1"]["unreachable"] == 1
    message = next(r.msg for r in runner.records if r.host == "exec-1")
    assert "host key CHANGED" in message
    assert access.ssh("exec-1", f"cat {scratch} 2>/dev/null", check=False).stdout == ""
    assert access.ssh("exec-2", f"cat {scratch}").stdout.split() == ["hi"]


def test_a_held_lock_stops_a_second_run_and_names_the_holder(inventory, access, scratch):
    lock = f'"$TITAN_HOME/{LOCK_NAME}"'
    holder = json.dumps({"run": "other", "operator": "alice", "command": "ripcord halt",
                         "since": time.time(), "controller": "elsewhere", "pid": 1})
    access.ssh("exec-1", f"mkdir {lock} && printf %s {shlex.quote(holder)} > {lock}/owner.json")
    try:
        runner = run(inventory, P([T("write", "shell", {"cmd": f"echo hi >> {scratch}"})]),
                     lock_wait_s=0.5)
    finally:
        access.ssh("exec-1", f"rm -rf {lock}")
    assert runner.summary()["exec-1"]["unreachable"] == 1
    message = next(r.msg for r in runner.records if r.host == "exec-1")
    assert "alice" in message and "ripcord halt" in message
    assert runner.summary()["exec-2"]["changed"] == 1
    assert access.ssh("exec-1", f"cat {scratch} 2>/dev/null", check=False).stdout == ""
    assert access.ssh("exec-2", f"cat {scratch}").stdout.split() == ["hi"]


def test_a_lock_left_by_a_dead_run_is_broken(inventory, access, scratch):
    lock = f'"$TITAN_HOME/{LOCK_NAME}"'
    dead = json.dumps({"run": "dead", "operator": "bob", "command": "ripcord play",
                       "since": time.time(), "controller": socket.gethostname(), "pid": 999999})
    access.ssh("exec-1", f"mkdir {lock} && printf %s {shlex.quote(dead)} > {lock}/owner.json")
    runner = run(inventory, P([T("write", "shell", {"cmd": f"echo hi >> {scratch}"})],
                              hosts="exec-1"), lock_wait_s=0.5)
    assert runner.summary()["exec-1"]["changed"] == 1
    assert access.ssh("exec-1", f"cat {scratch}").stdout.split() == ["hi"]
    assert access.ssh("exec-1", f"test -e {lock}", check=False).returncode == 1  # released


def test_the_journal_chains_records_and_redacts_lookup_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("RIPCORD_TEST_SECRET", "hunter2-very-secret")
    journal = Journal(tmp_path / "journal.jsonl")
    from ripcord.templating import Templar

    templar = Templar()
    rendered = templar.render("token={{ lookup('env', 'RIPCORD_TEST_SECRET') }}", {})
    first = journal.append(templar.secrets.redact({"kind": "test", "msg": rendered}))
    journal.append({"kind": "test", "msg": "second"})
    text = journal.path.read_text()
    assert "hunter2-very-secret" not in text and "********" in text
    assert journal.verify() == []
    assert oct(os.stat(journal.path).st_mode & 0o777) == "0o600"
    tampered = text.replace('"second"', '"edited"')
    journal.path.write_text(tampered)
    assert any("altered" in p for p in journal.verify())
    assert first in text


def test_a_host_that_never_answers_costs_only_its_timeout(fleet, access, tmp_path, scratch):
    """A listener that accepts and stays silent (no SSH banner) must not hang the run."""
    import threading

    silent = socket.socket()
    silent.bind(("127.0.0.1", fleet.plan.base_port + 8))  # in the fleet's range, never used
    silent.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(silent.accept()), daemon=True).start()
    try:
        inventory = unreachable_inventory(fleet, tmp_path, f"""
all:
  children:
    exec:
      hosts:
        exec-silent:
          ansible_host: 127.0.0.1
          ansible_port: {fleet.plan.base_port + 8}
          ansible_timeout: 1
""")
        started = time.monotonic()
        runner = run(inventory, P([T("write", "shell", {"cmd": f"echo hi >> {scratch}"})]))
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert runner.summary()["exec-silent"]["unreachable"] == 1
    assert access.ssh("exec-2", f"cat {scratch}").stdout.split() == ["hi"]
    assert elapsed < 8, f"a silent host held the run for {elapsed:.1f}s"


def test_a_task_timeout_stops_a_hung_command(inventory, access):
    hung = f"sleep 30.{time.time_ns()}"  # a command line no other process has
    try:
        runner = run(inventory, P([T("hangs", "shell", {"cmd": hung}, timeout=1)], hosts="exec-1"))
        record = next(r for r in runner.records if r.task == "hangs")
        assert record.outcome == "failed" and "timed out" in record.msg
        assert record.duration_s < 30  # it did not wait for the command
        access.wait_for(lambda: access.ssh("exec-1", f"pgrep -f -x {shlex.quote(hung)}",
                                           check=False).returncode == 1,
                        timeout=10, what="the hung command gone from exec-1")
    finally:
        access.ssh("exec-1", f"pkill -f -x {shlex.quote(hung)}", check=False)


def test_a_jump_host_carries_the_connection(fleet, access, tmp_path, scratch):
    """exec-1 reached through core-1 (ProxyJump): core-1's sshd sees the login."""
    core = fleet.plan.host("core-1")
    log = fleet.plan.control_dir / "logs" / "sshd-core-1.log"
    logins_before = log.read_text().count("Accepted publickey")
    inventory = unreachable_inventory(fleet, tmp_path, f"""
all:
  children:
    exec:
      hosts:
        exec-1:
          ansible_ssh_common_args: "-o ProxyJump={fleet.user}@127.0.0.1:{core.ssh_port}"
""")
    assert inventory.connection_for("exec-1").jump == f"{fleet.user}@127.0.0.1:{core.ssh_port}"
    runner = run(inventory, P([T("write", "shell", {"cmd": f"echo jumped >> {scratch}"})],
                              hosts="exec-1"))
    assert runner.summary()["exec-1"]["changed"] == 1
    assert access.ssh("exec-1", f"cat {scratch}").stdout.split() == ["jumped"]
    assert log.read_text().count("Accepted publickey") > logins_before


def test_a_connection_that_dies_mid_command_is_reported_lost(inventory):
    """The command kills its own sshd session: no exit status, no crash, but 'connection lost'
    (the host then counts as unreachable rather than as a command that exited -1)."""
    from ripcord.connection import Connection
    from ripcord.errors import UnreachableError

    conn = Connection("exec-2", inventory.connection_for("exec-2"))
    conn.open()
    try:
        with pytest.raises(UnreachableError, match="connection lost"):
            conn.run("kill -9 $PPID; sleep 5", timeout=10)
    finally:
        conn.close()


def test_a_killed_runs_locks_are_released_by_the_hosts(fleet, access, tmp_path):
    """The lock is held by a command on the host's connection (ripcord/lock.py HOLD): when the
    controller dies (kill -9, no release), the connection closes and the host releases the lock
    itself; nothing waits for a lease or a pid check."""
    import signal
    import subprocess
    import sys

    playbook = tmp_path / "long.yml"
    playbook.write_text("- hosts: exec-1\n  tasks:\n    - command: sleep 30.0417\n")
    lock = f'"$TITAN_HOME/{LOCK_NAME}"'
    env = {**os.environ, "RIPCORD_JOURNAL": str(tmp_path / "journal.jsonl")}
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "--search-root", str(REPO), "play",
                             str(playbook), "--host", "exec-1", "--inventory", str(fleet.inventory)],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while access.ssh("exec-1", f"test -e {lock}/owner.json", check=False).returncode != 0:
            assert time.monotonic() < deadline and proc.poll() is None, "the run never took the lock"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while access.ssh("exec-1", f"test -e {lock}", check=False).returncode == 0:
            assert time.monotonic() < deadline, "the dead run's lock is still there"
            time.sleep(0.2)
    finally:
        proc.kill()
        access.ssh("exec-1", f"pkill -f 'sleep 30.0417'; rm -rf {lock}", check=False)
