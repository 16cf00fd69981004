"""The fault matrix (issue 13): each fault injected into the sandbox fleet while `invoke play`
runs as an operator runs it, then the outcome read back by hand. Every case ends with a result
for each host, the right exit code, one complete journal record, no wait past the configured
timeouts, no lock left behind and no process of the run left on any host; the fleet is put
back afterwards (SIGCONT, sshd restarted, services started).

Interrupts (Ctrl-C) are tested with the runner; NATS down during a halt is in test_procedures.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import ghost_inventory

from ripcord.lock import LOCK_NAME

REPO = Path(__file__).resolve().parents[2]
EXECS = ("exec-1", "exec-2")


@dataclass
class Run:
    code: int
    payload: dict | None
    stderr: str
    elapsed: float
    journal: list[dict]

    def host(self, name: str) -> dict:
        assert self.payload, self.stderr
        return self.payload["hosts"][name]


def play_argv(fleet, playbook: Path, pattern: str, *inventories: Path) -> list[str]:
    return [sys.executable, "-m", "invoke", "--search-root", str(REPO), "play", str(playbook),
            "--host", pattern, "--yes", "--json",
            *[a for path in (fleet.inventory, *inventories) for a in ("--inventory", str(path))]]


@pytest.fixture
def play(fleet, tmp_path):
    """play(yaml, pattern, *inventories, background=False) -> Run (or the Popen and a finisher)."""
    journal = tmp_path / "journal.jsonl"
    env = {**os.environ, "RIPCORD_JOURNAL": str(journal)}
    count = 0

    def records() -> list[dict]:
        return [json.loads(line) for line in journal.read_text().splitlines()] if journal.exists() else []

    def start(text: str, pattern: str, *inventories: Path):
        nonlocal count
        count += 1
        playbook = tmp_path / f"play-{count}.yml"
        playbook.write_text(text)
        started = time.monotonic()
        proc = subprocess.Popen(play_argv(fleet, playbook, pattern, *inventories), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)

        def finish(timeout: float = 120) -> Run:
            out, err = proc.communicate(timeout=timeout)
            return Run(proc.returncode, json.loads(out) if out.strip() else None, err,
                       time.monotonic() - started, records())
        return proc, finish

    def run(text: str, pattern: str, *inventories: Path, background: bool = False):
        proc, finish = start(text, pattern, *inventories)
        return (proc, finish) if background else finish()

    return run


@pytest.fixture
def marker(access):
    """A word unique to this test, in every command it runs: its processes and files are found
    by it (the sandbox's hosts share one machine), and its files are removed afterwards."""
    word = f"fault{time.time_ns()}"
    yield word
    for host in EXECS:
        access.ssh(host, f'rm -rf "$TITAN_HOME/state/{word}"*', check=False)


def journaled(run: Run, pattern: str) -> dict:
    """The run's one journal record, complete: its exit code and every host's counts."""
    assert len(run.journal) == 1, run.journal
    record = run.journal[0]
    assert record["kind"] == "play" and record["pattern"] == pattern
    assert record["exit_code"] == run.code
    assert run.payload and set(record["hosts"]) == set(run.payload["hosts"])
    return record


def left_on_hosts(access, word: str, hosts=EXECS) -> dict[str, str]:
    """Processes naming `word`, and ripcord locks, still on the hosts (empty: nothing left).
    The sandbox's hosts share one machine: a process is the host's when its TITAN_HOME is."""
    pattern = shlex.quote(f"[{word[0]}]{word[1:]}")  # never matches this pgrep's own shell
    left = {}
    for host in hosts:
        out = access.ssh(host, f"for p in $(pgrep -f {pattern}); do tr '\\0' '\\n' "
                               '< /proc/$p/environ 2>/dev/null | grep -qx "TITAN_HOME=$TITAN_HOME" '
                               "&& ps -o pid=,args= -p $p; done; "
                               f'test -e "$TITAN_HOME/{LOCK_NAME}" && echo LOCK held; true'
                         ).stdout.strip()
        if out:
            left[host] = out
    return left


def sshd_pid(fleet, host: str) -> int:
    out = fleet._supervisorctl(fleet.plan.control_conf, "pid", f"sshd-{host}", check=False).strip()
    assert out.isdigit() and out != "0", f"sshd-{host} not running: {out}"
    return int(out)


def sshd_sessions(listener: int) -> list[int]:
    """Everything a host's sshd started: its sessions (the privileged monitor and the process
    holding the connection) and the commands they run, the listener's descendants."""
    found, todo = [], [listener]
    while todo:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(todo.pop())], capture_output=True,
                             text=True).stdout
        children = [int(p) for p in out.split()]
        found += children
        todo += children
    return found


@contextlib.contextmanager
def sshd_restored(fleet, access, host: str):
    """Whatever a test does to a host's sshd, it runs and answers again afterwards."""
    try:
        yield
    finally:
        with contextlib.suppress(AssertionError):
            for pid in [sshd_pid(fleet, host), *sshd_sessions(sshd_pid(fleet, host))]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 18)  # SIGCONT: a stopped sshd can neither stop nor serve
        fleet._supervisorctl(fleet.plan.control_conf, "start", f"sshd-{host}", check=False)
        access.wait_for(lambda: access.ssh(host, "true", check=False).returncode == 0,
                        timeout=30, interval=0.2, what=f"{host} answering ssh again")


def waiting_task(word: str) -> str:
    """A shell line that says it started, then waits for the test to release it (bounded)."""
    flag = f"$TITAN_HOME/state/{word}"
    return (f'touch "{flag}.started-$RIPCORD_HOST"; i=0; '
            f'while [ ! -e "{flag}.release" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done')


def started(access, host: str, word: str) -> bool:
    return access.ssh(host, f'test -e "$TITAN_HOME/state/{word}.started-{host}"',
                      check=False).returncode == 0


# --- the matrix ---------------------------------------------------------------------------------

def test_a_command_outliving_its_timeout_is_killed_with_its_children(play, access, marker):
    """`sleep` (and a child it backgrounds) past `timeout: 2`: the task fails 'timed out', and
    nothing of it runs on the host after the play (its whole session was killed)."""
    seconds = f"31.{marker[-6:]}"
    run = play(f"""
- name: outlives its timeout
  hosts: exec-1
  tasks:
    - shell: "sleep {seconds} & sleep {seconds}; wait # {marker}"
      timeout: 2
""", "exec-1")
    assert run.code == 1, run.stderr
    assert run.host("exec-1")["failed"] == 1
    result = next(r for r in run.payload["results"] if r["host"] == "exec-1")
    assert "timed out after 2s" in result["msg"]
    assert run.elapsed < 2 + 10, f"the play took {run.elapsed:.1f}s"
    journaled(run, "exec-1")
    pattern = shlex.quote(f"[s]leep {seconds}")
    assert access.ssh("exec-1", f"pgrep -af {pattern}", check=False).stdout == ""
    assert left_on_hosts(access, marker) == {}


def test_a_host_unreachable_from_the_start(play, fleet, access, marker, tmp_path):
    """exec-ghost's port is closed: it is unreachable, exit 3, and exec-1 still does its work."""
    run = play(f"""
- name: one host missing
  hosts: exec
  tasks:
    - shell: 'echo done > "$TITAN_HOME/state/{marker}"'
""", "exec-1,exec-ghost", ghost_inventory(fleet, tmp_path))
    assert run.code == 3, run.stderr
    assert run.host("exec-ghost")["unreachable"] == 1
    assert run.host("exec-1")["changed"] == 1 and run.host("exec-1")["unreachable"] == 0
    assert run.elapsed < 2 + 15, f"the play took {run.elapsed:.1f}s (ansible_timeout 2)"
    record = journaled(run, "exec-1,exec-ghost")
    assert record["hosts"]["exec-ghost"]["unreachable"] == 1
    assert access.ssh("exec-1", f'cat "$TITAN_HOME/state/{marker}"').stdout == "done\n"
    assert left_on_hosts(access, marker) == {}


def test_a_host_dying_mid_run(play, fleet, access, marker):
    """exec-2's sshd and its sessions are killed while a task runs there: exec-2 ends
    unreachable (exit 3), exec-1 finishes the play; once exec-2 is back, the lock its lost
    run left is broken as stale (same controller, dead pid) and the next run goes through."""
    text = f"""
- name: a host dies
  hosts: exec
  tasks:
    - shell: '{waiting_task(marker)}'
    - shell: 'echo after >> "$TITAN_HOME/state/{marker}.after"'
"""
    with sshd_restored(fleet, access, "exec-2"):
        proc, finish = play(text, "exec-1,exec-2", background=True)
        for host in EXECS:
            access.wait_for(lambda h=host: started(access, h, marker), timeout=30,
                            what=f"the task started on {host}")
        listener = sshd_pid(fleet, "exec-2")
        sessions = sshd_sessions(listener)
        fleet._supervisorctl(fleet.plan.control_conf, "stop", "sshd-exec-2")  # no comeback
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        access.ssh("exec-1", f'touch "$TITAN_HOME/state/{marker}.release"')
        run = finish()
    assert run.code == 3, run.stderr
    assert run.host("exec-2")["unreachable"] == 1
    assert run.host("exec-1")["changed"] == 2 and run.host("exec-1")["failed"] == 0
    assert run.elapsed < 30, f"the play took {run.elapsed:.1f}s"
    journaled(run, "exec-1,exec-2")
    assert access.ssh("exec-1", f'cat "$TITAN_HOME/state/{marker}.after"').stdout == "after\n"
    assert access.ssh("exec-2", f'cat "$TITAN_HOME/state/{marker}.after"', check=False).stdout == ""
    assert left_on_hosts(access, marker, ["exec-1"]) == {}
    # exec-2 is back: the lost run's lock does not hold the next run up
    again = play(f"""
- name: after the host came back
  hosts: exec-2
  tasks:
    - shell: 'echo back > "$TITAN_HOME/state/{marker}.back"'
""", "exec-2")
    assert again.code == 0, again.stderr
    assert again.elapsed < 10, f"the next run waited {again.elapsed:.1f}s"
    assert left_on_hosts(access, marker) == {}


def test_a_host_hanging_from_the_start(play, fleet, access, marker, tmp_path):
    """exec-2's sshd is stopped with SIGSTOP: it accepts connections but never speaks. It costs
    the run its connect timeout (ansible_timeout: 2), no more; exec-1 does its work."""
    quick = tmp_path / "quick.yml"
    quick.write_text("all:\n  hosts:\n    exec-2:\n      ansible_timeout: 2\n")
    with sshd_restored(fleet, access, "exec-2"):
        os.kill(sshd_pid(fleet, "exec-2"), 19)  # SIGSTOP
        run = play(f"""
- name: a host hangs
  hosts: exec
  tasks:
    - shell: 'echo done > "$TITAN_HOME/state/{marker}"'
""", "exec-1,exec-2", quick)
    assert run.code == 3, run.stderr
    assert run.host("exec-2")["unreachable"] == 1
    assert run.host("exec-1")["changed"] == 1
    assert run.elapsed < 2 + 15, f"the play took {run.elapsed:.1f}s (ansible_timeout 2)"
    journaled(run, "exec-1,exec-2")
    assert access.ssh("exec-2", f'cat "$TITAN_HOME/state/{marker}"', check=False).stdout == ""
    assert left_on_hosts(access, marker) == {}


def test_a_host_hanging_mid_command(play, fleet, access, marker):
    """exec-2's sshd (its session too) stopped with SIGSTOP while a command runs there: the
    task's timeout bounds the wait, exec-2's task fails or the host is lost; exec-1 finishes."""
    text = f"""
- name: a host hangs mid-run
  hosts: exec
  tasks:
    - shell: '{waiting_task(marker)}'
      timeout: 4
"""
    with sshd_restored(fleet, access, "exec-2"):
        proc, finish = play(text, "exec-1,exec-2", background=True)
        for host in EXECS:
            access.wait_for(lambda h=host: started(access, h, marker), timeout=30,
                            what=f"the task started on {host}")
        listener = sshd_pid(fleet, "exec-2")
        for pid in [listener, *sshd_sessions(listener)]:
            with contextlib.suppress(ProcessLookupError):  # a command that just ended
                os.kill(pid, 19)  # SIGSTOP
        access.ssh("exec-1", f'touch "$TITAN_HOME/state/{marker}.release"')
        run = finish(timeout=60)
        assert run.elapsed < 4 + 3 + 7, f"the play took {run.elapsed:.1f}s (task timeout 4)"
    assert run.code in (1, 3), run.stderr
    exec2 = run.host("exec-2")
    assert exec2["failed"] + exec2["unreachable"] == 1
    assert run.host("exec-1")["changed"] == 1 and run.host("exec-1")["failed"] == 0
    journaled(run, "exec-1,exec-2")
    assert left_on_hosts(access, marker, ["exec-1"]) == {}
    # exec-2's command could not be stopped while the host hung: it resumes with the host and
    # ends by itself; the lock its run left is stale (dead pid) and the next run breaks it
    access.ssh("exec-2", f'touch "$TITAN_HOME/state/{marker}.release"')
    access.wait_for(lambda: "sleep" not in left_on_hosts(access, marker, ["exec-2"]).get("exec-2", ""),
                    timeout=10, what="exec-2's command ending once released")
    again = play("- name: after\n  hosts: exec-2\n  tasks:\n    - shell: 'true'\n", "exec-2")
    assert again.code == 0 and again.elapsed < 10, again.stderr
    assert left_on_hosts(access, marker) == {}


def test_two_runs_on_one_host_at_once(play, access, marker):
    """A second run on a host the first one holds waits the bounded lock time, then fails that
    host naming the holder; the first finishes untouched, and no lock is left."""
    first, finish_first = play(f"""
- name: first
  hosts: exec-1
  tasks:
    - shell: '{waiting_task(marker)}'
""", "exec-1", background=True)
    access.wait_for(lambda: started(access, "exec-1", marker), timeout=30, what="the first run")
    second = play(f"""
- name: second
  hosts: exec-1
  tasks:
    - shell: 'echo second > "$TITAN_HOME/state/{marker}.second"'
""", "exec-1")
    access.ssh("exec-1", f'touch "$TITAN_HOME/state/{marker}.release"')
    run = finish_first()
    assert run.code == 0, run.stderr
    assert second.code == 3, second.stderr
    message = next(r["msg"] for r in second.payload["results"] if r["host"] == "exec-1")
    assert "exec-1: locked by" in message and "pid" in message
    assert second.elapsed < 10 + 10, f"the second run waited {second.elapsed:.1f}s (lock wait 10)"
    assert access.ssh("exec-1", f'cat "$TITAN_HOME/state/{marker}.second"', check=False).stdout == ""
    assert [r["exit_code"] for r in run.journal] == [3, 0]  # one record each, in finishing order
    assert left_on_hosts(access, marker) == {}


def test_a_changed_host_key(play, fleet, access, marker, tmp_path):
    """exec-1's pinned key replaced by another host's: exec-1 is refused before any command
    (exit 3, 'host key CHANGED'), exec-2 does its work."""
    port = fleet.plan.host("exec-1").ssh_port
    lines = fleet.plan.known_hosts.read_text().splitlines()
    other_key = lines[0].split()[1:]
    known = tmp_path / "known_hosts"
    known.write_text("\n".join(f"[127.0.0.1]:{port} {' '.join(other_key)}"
                               if line.startswith(f"[127.0.0.1]:{port} ") else line
                               for line in lines) + "\n")
    keys = tmp_path / "keys.yml"
    keys.write_text("all:\n  hosts:\n" + "".join(f"    {h}: {{ripcord_known_hosts: {known}}}\n"
                                                  for h in EXECS))
    run = play(f"""
- name: changed key
  hosts: exec
  tasks:
    - shell: 'echo done > "$TITAN_HOME/state/{marker}"'
""", "exec-1,exec-2", keys)
    assert run.code == 3, run.stderr
    assert run.host("exec-1")["unreachable"] == 1
    assert run.host("exec-2")["changed"] == 1
    message = next(r["msg"] for r in run.payload["results"] if r["host"] == "exec-1")
    assert "host key CHANGED" in message
    journaled(run, "exec-1,exec-2")
    assert access.ssh("exec-1", f'cat "$TITAN_HOME/state/{marker}"', check=False).stdout == ""
    assert left_on_hosts(access, marker) == {}


def test_postgresql_down(play, access, marker):
    """PostgreSQL stopped on db-1: a query fails on its host with the reason (exit 1), the
    play's other task still runs; the database comes back afterwards."""
    access.ssh("db-1", "supervisorctl stop postgresql")
    try:
        run = play(f"""
- name: database down
  hosts: exec
  tasks:
    - postgres: {{sql: "SELECT 1"}}
      ignore_errors: true
    - shell: 'echo done > "$TITAN_HOME/state/{marker}"'
""", "exec-1,exec-2")
    finally:
        access.ssh("db-1", "supervisorctl start postgresql")
        access.wait_for(lambda: "RUNNING" in access.ssh("db-1", "supervisorctl status postgresql",
                                                        check=False).stdout, timeout=30)
    assert run.code == 0, run.stderr
    for host in EXECS:
        assert run.host(host)["ignored"] == 1 and run.host(host)["changed"] == 1
        failure = next(r for r in run.payload["results"] if r["host"] == host and r["module"] == "postgres")
        assert failure["outcome"] == "ignored" and failure["msg"], failure
    journaled(run, "exec-1,exec-2")
    assert left_on_hosts(access, marker) == {}


@pytest.fixture
def full_disk(access, marker):
    """A directory of exec-1 on a filesystem of its own (a 256 KiB tmpfs standing in for the
    host's disk), filled to the last byte. Unmounted afterwards."""
    host = access.plan.host("exec-1")
    mount = host.titan_home / "state" / f"{marker}-disk"
    mount.mkdir()
    owner = host.titan_home.stat()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=256k,uid={owner.st_uid},gid={owner.st_gid}",
                    "tmpfs", str(mount)], check=True)
    try:
        with contextlib.suppress(OSError), open(mount / "filler", "wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def test_the_disk_full(play, access, marker, full_disk):
    """exec-1's disk is full: a file write there fails with the host's reason (exit 1), leaving
    no half-written file; exec-2 is untouched by it and does its work."""
    run = play(f"""
- name: disk full
  hosts: exec
  tasks:
    - copy:
        content: "{'x' * 8192}"
        dest: "{full_disk}/app.conf"
      when: inventory_hostname == 'exec-1'
    - shell: 'echo done > "$TITAN_HOME/state/{marker}"'
""", "exec-1,exec-2")
    assert run.code == 1, run.stderr
    assert run.host("exec-1")["failed"] == 1
    assert run.host("exec-2")["changed"] == 1 and run.host("exec-2")["failed"] == 0
    failure = next(r for r in run.payload["results"] if r["host"] == "exec-1" and r["module"] == "copy")
    assert "bytes written (is the disk full?)" in failure["msg"], failure
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]  # no temporary file left
    journaled(run, "exec-1,exec-2")
    assert left_on_hosts(access, marker) == {}
