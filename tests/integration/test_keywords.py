"""The playbook keywords Ansible users type first (issue 17), on the sandbox: what each did is
read back from exec-1 over the system ssh client, and the journal is searched for a no_log value.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BOOK = HERE / "playbooks" / "keywords" / "keywords.yml"
HIDDEN = "no-log-value-7f3a"
OUT = '"$TITAN_HOME/state/e2e-keywords"'


@pytest.fixture
def invoke(fleet, tmp_path):
    journal = tmp_path / "journal.jsonl"

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), *argv,
                               "--inventory", str(fleet.inventory)], capture_output=True, text=True,
                              timeout=180, stdin=subprocess.DEVNULL,
                              env={**os.environ, "RIPCORD_JOURNAL": str(journal)})

    run.journal = journal
    return run


@pytest.fixture
def clean(access):
    access.ssh("exec-1", f"rm -rf {OUT}")
    yield
    access.ssh("exec-1", f"rm -rf {OUT}")


def test_the_issues_playbook_runs_and_each_keyword_does_its_job(invoke, access, clean):
    result = invoke("play", str(BOOK), "--host", "exec-1", "-e", f"hidden_value={HIDDEN}", "--json")
    assert result.returncode == 0, result.stderr + result.stdout
    read = lambda name: access.ssh("exec-1", f"cat {OUT}/{name}").stdout  # noqa: E731
    # pre_tasks, then the handlers they notified, then tasks (the task file twice), post_tasks
    assert read("order").split() == ["pre", "handler", "tasks", "imported", "included", "post"]
    listing = access.ssh("exec-1", f"ls {OUT}").stdout.split()
    assert sorted(n for n in listing if n.startswith("loop-")) == ["loop-a", "loop-c"]  # when per item
    assert read("registered") == "x,y|vf"  # results per item; vars_files
    assert (read("dict-0"), read("dict-1")) == ("k1=v1", "k2=v2")  # with_dict, loop_var, index_var
    assert read("env") == "from-play from task"
    assert read("hidden") == HIDDEN  # no_log hides, it does not skip
    assert "checked" not in listing  # check_mode: true changes nothing
    journal = invoke.journal.read_text()
    assert HIDDEN not in journal and HIDDEN not in result.stdout and HIDDEN not in result.stderr
    censored = [r for r in json.loads(result.stdout)["results"] if r["module"] == "copy"
                and "censored" in r["msg"]]
    assert len(censored) == 1


def test_check_mode_false_changes_the_host_under_check(invoke, access, clean, tmp_path):
    book = tmp_path / "check.yml"
    book.write_text("""
- hosts: exec-1
  tasks:
    - file: {path: "{{ titan_home }}/state/e2e-keywords", state: directory}
      check_mode: false
    - file: {path: "{{ titan_home }}/state/e2e-keywords/forced", state: touch}
      check_mode: false
    - file: {path: "{{ titan_home }}/state/e2e-keywords/dry", state: touch}
""")
    result = invoke("play", str(book), "--host", "exec-1", "--check")
    assert result.returncode == 0, result.stderr + result.stdout
    assert access.ssh("exec-1", f"ls {OUT}").stdout.split() == ["forced"]


def test_environment_values_never_reach_a_command_line(fleet, access, clean, monkeypatch, tmp_path):
    """Every line ripcord hands sshd (the remote shell's argv) is recorded: the value is not in
    any of them, and the command still sees it."""
    from rich.console import Console

    from ripcord.connection import Connection
    from ripcord.execute import run_playbook
    from ripcord.runner import Options

    lines: list[str] = []
    exec_ = Connection._exec

    def recording(self, line, *args, **kwargs):
        lines.append(line)
        return exec_(self, line, *args, **kwargs)

    monkeypatch.setattr(Connection, "_exec", recording)
    book = tmp_path / "env.yml"
    book.write_text("""
- hosts: exec-1
  tasks:
    - shell: printf %s "$SECRETISH" > "{{ titan_home }}/state/e2e-env"
      environment: {SECRETISH: "env-value-91c2"}
""")
    monkeypatch.setenv("RIPCORD_JOURNAL", str(tmp_path / "journal.jsonl"))
    outcome = run_playbook(str(book), pattern="exec-1", options=Options(), yes=True,
                           console=Console(file=(tmp_path / "out").open("w")),
                           inventory_paths=[str(fleet.inventory)])
    assert outcome.code == 0, outcome.payload
    assert lines and not [line for line in lines if "env-value-91c2" in line]
    assert access.ssh("exec-1", 'cat "$TITAN_HOME/state/e2e-env"; rm -f "$TITAN_HOME/state/e2e-env"'
                      ).stdout == "env-value-91c2"


@pytest.mark.parametrize("key, says", [
    ("become_method: su", "become_method: only sudo (run as `sudo -n`: ripcord never prompts)"),
    ("connection: winrm", "connection: expected ssh or local (ripcord reaches hosts over SSH)"),
    ("roles: [web]", "not supported by ripcord: roles; use include_tasks"),
    ("async: 30", "not supported by ripcord: async; give the task a timeout instead"),
    ("user: root@db", "user: expected a login user name, got 'root@db'"),
])
def test_what_ripcord_refuses_it_says_so(invoke, tmp_path, key, says):
    book = tmp_path / "refused.yml"
    book.write_text(f"- hosts: exec-1\n  {key}\n  tasks:\n    - command: 'true'\n")
    result = invoke("play", str(book), "--host", "exec-1")
    assert result.returncode == 2, result.stderr
    assert f"{book}:2: {says}" in result.stderr, result.stderr
    assert not Path(invoke.journal).exists()


BECOME = """
- hosts: exec-1
  vars: {out: "{{ titan_home }}/state/e2e-keywords"}
  tasks:
    - file: {path: "{{ out }}", state: directory}
    - command: id -un
      become: true
      become_user: ripcord-become
      register: task_level
    - block:
        - shell: printf '%s:%s' "$(id -un)" "$ASKED"
          environment: {ASKED: kept}
          register: block_level
      become: true
    - copy: {content: "{{ task_level.stdout }} {{ block_level.stdout }}", dest: "{{ out }}/who"}
    - command: id -un
      become: true
      become_user: root
"""


def test_become_runs_commands_as_another_user_through_sudo_never_prompting(invoke, access, clean,
                                                                            tmp_path):
    """The sandbox's login user may `sudo -n` to ripcord-become (no password), not to root: the
    block's become takes the inventory's ansible_become_user (-e here), the last task's root
    needs a password, so it fails at once with sudo's reason instead of prompting."""
    book = tmp_path / "become.yml"
    book.write_text(BECOME)
    result = invoke("play", str(book), "--host", "exec-1", "-e", "ansible_become_user=ripcord-become",
                    "--json")
    assert result.returncode == 1, result.stderr + result.stdout
    assert access.ssh("exec-1", f"cat {OUT}/who").stdout == "ripcord-become ripcord-become:kept"
    failed = [r for r in json.loads(result.stdout)["results"] if r["outcome"] == "failed"]
    assert len(failed) == 1 and "become root" in failed[0]["msg"], failed
    assert "password" in failed[0]["msg"], failed


LOCAL = """
- hosts: exec-1
  tasks:
    - command: hostname
      register: remote
    - shell: printf '%s %s' "{{ inventory_hostname }}" "$HOME" > MARKER
      delegate_to: localhost
    - local_action: command touch MARKER-action
    - shell: touch MARKER-connection
      connection: local
"""


def test_delegate_to_localhost_runs_on_the_controller_with_the_hosts_vars(invoke, access, tmp_path):
    marker = tmp_path / "here"
    book = tmp_path / "local.yml"
    book.write_text(LOCAL.replace("MARKER", str(marker)))
    result = invoke("play", str(book), "--host", "exec-1")
    assert result.returncode == 0, result.stderr + result.stdout
    assert marker.read_text() == f"exec-1 {os.environ['HOME']}"  # the controller's own $HOME
    assert (tmp_path / "here-action").exists() and (tmp_path / "here-connection").exists()
    remote = access.ssh("exec-1", f"ls {marker}* 2>/dev/null | wc -l").stdout.strip()
    assert remote == "0"  # nothing of it on the host


def test_gather_facts_gives_the_facts_ops_playbooks_use(invoke, access, clean, tmp_path):
    book = tmp_path / "facts.yml"
    book.write_text("""
- hosts: exec-1
  gather_facts: true
  tasks:
    - file: {path: "{{ titan_home }}/state/e2e-keywords", state: directory}
    - copy:
        dest: "{{ titan_home }}/state/e2e-keywords/facts"
        content: "{{ ansible_facts.os_family }} {{ ansible_hostname }} {{ ansible_processor_vcpus }}
          {{ ansible_memtotal_mb > 0 }} {{ ansible_distribution_version }}"
""")
    result = invoke("play", str(book), "--host", "exec-1")
    assert result.returncode == 0, result.stderr + result.stdout
    seen = access.ssh("exec-1", f"cat {OUT}/facts").stdout.split()
    truth = access.ssh("exec-1", '. /etc/os-release; echo "$VERSION_ID"; hostname; nproc').stdout.split()
    assert seen == ["Debian", truth[1], truth[2], "True", truth[0]], (seen, truth)


def test_the_issues_own_playbook_runs_as_written(invoke, access):
    """Issue 17's playbook, verbatim; its become goes to the sandbox's ansible_become_user."""
    book = HERE / "playbooks" / "issue17" / "playbook.yml"
    try:
        result = invoke("play", str(book), "--host", "exec-1", "--json")
        assert result.returncode == 0, result.stderr + result.stdout
        assert access.ssh("exec-1", 'ls "$TITAN_HOME"/loop-a "$TITAN_HOME"/loop-b').returncode == 0
        outcomes = [(r["module"], r["outcome"]) for r in json.loads(result.stdout)["results"]]
        assert outcomes.count(("command", "changed")) == 5, outcomes  # items, true, more x2, local
    finally:
        access.ssh("exec-1", 'rm -f "$TITAN_HOME"/loop-a "$TITAN_HOME"/loop-b')


REMOTE_USER = """
- hosts: exec-1
  remote_user: "{{ login }}"
  tasks:
    - command: id -un
      register: who
    - file: {path: "{{ titan_home }}/state/e2e-keywords", state: directory}
    - copy: {content: "{{ who.stdout }}", dest: "{{ titan_home }}/state/e2e-keywords/who"}
    - command: id -un
      remote_user: ripcord-become
- hosts: exec-2
  user: ripcord-become
  tasks:
    - file: {path: "{{ titan_home }}/state/e2e-remote-user", state: touch}
"""


def test_remote_user_logs_in_as_that_user_or_the_host_fails_saying_so(invoke, access, fleet, clean,
                                                                      tmp_path):
    """The sandbox's sshd lets one user in (AllowUsers): remote_user naming it works (read back
    with the system ssh client's own `id -un`); naming another user (at task level, and as the
    play's old spelling `user`) fails that host as unreachable, naming the user sshd refused,
    never falling back to the inventory's user."""
    book = tmp_path / "remote_user.yml"
    book.write_text(REMOTE_USER)
    try:
        result = invoke("play", str(book), "--host", "exec-1:exec-2", "-e", f"login={fleet.user}",
                        "--json")
        assert result.returncode == 3, result.stderr + result.stdout  # unreachable hosts
        truth = access.ssh("exec-1", "id -un").stdout.strip()
        assert access.ssh("exec-1", f"cat {OUT}/who").stdout == truth == fleet.user
        records = json.loads(result.stdout)["results"]
        lost = {r["host"]: r["msg"] for r in records if r["outcome"] == "unreachable"}
        assert set(lost) == {"exec-1", "exec-2"}, records
        assert all("(ripcord-become@127.0.0.1:" in msg and "uthentication" in msg
                   for msg in lost.values()), lost
        assert access.ssh("exec-2", 'ls "$TITAN_HOME/state/e2e-remote-user"', check=False
                          ).returncode != 0  # nothing ran on exec-2, as any user
        refused = subprocess.run([*access.ssh_argv("exec-1")[:-1], "ripcord-become@127.0.0.1",
                                  "true"], capture_output=True, text=True, timeout=30)
        assert refused.returncode == 255  # the system ssh client is refused as that user too
    finally:
        access.ssh("exec-2", 'rm -f "$TITAN_HOME/state/e2e-remote-user"')


def test_include_tasks_loops_checks_when_once_and_resolves_a_templated_file_per_host(invoke, access):
    """Each host's files, read back over ssh: the looped include ran per item with its own
    loop_var and index_var, `when` per item; the templated name resolved per host, and exec-2's
    file, invalid, failed exec-2 naming the include's line before any of its tasks ran; the
    include's `when` is checked once, not before each of its tasks."""
    out = '"$TITAN_HOME/state/e2e-include"'
    book = HERE / "playbooks" / "include_tasks" / "book.yml"
    try:
        result = invoke("play", str(book), "--host", "exec-1:exec-2", "--json")
        assert result.returncode == 1, result.stderr + result.stdout  # exec-2 failed
        listing = {h: access.ssh(h, f"ls {out}").stdout.split() for h in ("exec-1", "exec-2")}
        assert listing == {"exec-1": ["a", "after-flip", "c", "mine-exec-1"], "exec-2": ["a", "c"]}
        assert access.ssh("exec-2", f"cat {out}/a {out}/c").stdout == "0 a2 c"
        failed = [r for r in json.loads(result.stdout)["results"] if r["outcome"] == "failed"]
        assert [r["host"] for r in failed] == ["exec-2"], failed
        assert f"{book.parent}/per-host/exec-2.yml:3: undefined variable 'nope'" in failed[0]["msg"]
        assert f"as included from {book}:10" in failed[0]["msg"], failed
    finally:
        for host in ("exec-1", "exec-2"):
            access.ssh(host, f"rm -rf {out}")


FLUSH = """
- hosts: exec-1
  vars: {out: "{{ titan_home }}/state/e2e-keywords"}
  tasks:
    - file: {path: "{{ out }}", state: directory}
    - shell: echo first >> "{{ out }}/order"
      notify: note
    - meta: flush_handlers
    - shell: echo second >> "{{ out }}/order"
      notify: note
  handlers:
    - name: note
      shell: echo handler >> "{{ out }}/order"
"""


def test_meta_flush_handlers_runs_the_notified_handlers_there(invoke, access, clean, tmp_path):
    book = tmp_path / "flush.yml"
    book.write_text(FLUSH)
    result = invoke("play", str(book), "--host", "exec-1")
    assert result.returncode == 0, result.stderr + result.stdout
    assert access.ssh("exec-1", f"cat {OUT}/order").stdout.split() == [
        "first", "handler", "second", "handler"]
