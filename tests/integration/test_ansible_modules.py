"""Ansible's modules on the sandbox, as an Ansible user writes them: ansible.builtin. names,
lineinfile, ping, pause, systemd and service_facts (through the hosts' supervisor), and the
refused package managers. Outcomes are read over the system ssh client: the file's bytes,
`supervisorctl status`, and the absence of a mark a refused or declined run must not write.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
SCRATCH = "$TITAN_HOME/state/e2e-ansible"


@pytest.fixture
def play(fleet, tmp_path):
    """play(yaml_text, *args) -> CompletedProcess of `invoke play` of that playbook."""
    def run(text: str, *args: str, inventories: tuple = ()) -> subprocess.CompletedProcess:
        book = tmp_path / "book.yml"
        book.write_text(textwrap.dedent(text))
        argv = [sys.executable, "-m", "invoke", "--search-root", str(REPO), "play", str(book),
                *[a for path in (fleet.inventory, *inventories) for a in ("--inventory", str(path))],
                *args]
        env = {**os.environ, "RIPCORD_JOURNAL": str(tmp_path / "journal.jsonl"),
               "RIPCORD_APPROVALS": str(tmp_path / "approvals"), "RIPCORD_OPERATOR": "e2e"}
        return subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env,
                              stdin=subprocess.DEVNULL)
    return run


@pytest.fixture(autouse=True)
def clean(access, connect):
    yield
    for host in ("exec-1", "exec-2"):
        access.ssh(host, f'rm -rf "{SCRATCH}"; supervisorctl start titan-hunter >/dev/null',
                   check=False)


def supervisor_state(access, host: str, service: str) -> str:
    return access.ssh(host, f"supervisorctl status {service}", check=False).stdout.split()[1]


LINEINFILE_BOOK = """\
- name: Ansible's spelling
  hosts: exec
  vars:
    conf: "{{ titan_home }}/state/e2e-ansible/app.conf"
  tasks:
    - ansible.builtin.ping:
      register: pinged
    - ansible.builtin.assert: {that: "pinged.ping == 'pong'"}
    - name: a file created with its line
      ansible.builtin.lineinfile:
        path: "{{ titan_home }}/state/e2e-ansible/new/made.conf"
        line: "made=1"
        create: true
        mode: "0640"
    - name: a setting changed by regexp
      lineinfile: {path: "{{ conf }}", regexp: "^port=", line: "port={{ 9000 + 1 }}", backup: true}
      register: replaced
    - name: a line after a section header
      lineinfile: {path: "{{ conf }}", insertafter: '^\\[log\\]', line: "file=/var/log/app.log"}
    - name: backrefs keep the value
      lineinfile: {path: "{{ conf }}", regexp: '^level=(\\w+)$', line: 'level=\\1 # pinned', backrefs: true}
    - name: a line removed
      lineinfile: {path: "{{ conf }}", line: "# app", state: absent}
    - ansible.builtin.pause: {seconds: 1}
"""
SHIPPED = "# app\\nport=8080\\n[log]\\nlevel=info\\n"  # printf's escapes
EXPECTED = "port=9001\n[log]\nfile=/var/log/app.log\nlevel=info # pinned\n"


def test_an_ansible_playbook_edits_the_file_and_a_second_run_changes_nothing(play, access):
    for host in ("exec-1", "exec-2"):
        access.ssh(host, f'mkdir -p "{SCRATCH}" && printf "{SHIPPED}" > "{SCRATCH}/app.conf"')
    first = play(LINEINFILE_BOOK, "--host", "exec", "--json")
    assert first.returncode == 0, first.stderr + first.stdout
    for host in ("exec-1", "exec-2"):
        assert access.ssh(host, f'cat "{SCRATCH}/app.conf"').stdout == EXPECTED
        assert access.ssh(host, f'stat -c "%a" "{SCRATCH}/new/made.conf"; cat "{SCRATCH}/new/made.conf"'
                          ).stdout == "640\nmade=1\n"
        backups = access.ssh(host, f'cat "{SCRATCH}"/app.conf.*.bak').stdout
        assert backups == "# app\nport=8080\n[log]\nlevel=info\n"  # before the regexp's edit
    second = play(LINEINFILE_BOOK, "--host", "exec", "--json")
    assert second.returncode == 0, second.stderr + second.stdout
    changed = [r for r in json.loads(second.stdout)["results"] if r["outcome"] == "changed"]
    assert changed == []
    assert access.ssh("exec-1", f'cat "{SCRATCH}/app.conf"').stdout == EXPECTED


def test_check_and_diff_show_the_edit_and_write_nothing(play, access):
    access.ssh("exec-1", f'mkdir -p "{SCRATCH}" && printf "port=1\\nname=a\\n" > "{SCRATCH}/c.conf"')
    before = access.ssh("exec-1", f'stat -c "%Y %a" "{SCRATCH}/c.conf"; cat "{SCRATCH}/c.conf"').stdout
    book = """\
    - hosts: exec-1
      tasks:
        - lineinfile: {path: "{{ titan_home }}/state/e2e-ansible/c.conf", regexp: "^port=",
                       line: "port=2", mode: "0600"}
        - lineinfile: {path: "{{ titan_home }}/state/e2e-ansible/new.conf", line: "x", create: true}
    """
    result = play(book, "--host", "exec-1", "--check", "--diff")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "-port=1" in result.stdout + result.stderr and "+port=2" in result.stdout + result.stderr
    assert access.ssh("exec-1", f'stat -c "%Y %a" "{SCRATCH}/c.conf"; cat "{SCRATCH}/c.conf"').stdout \
        == before
    assert access.ssh("exec-1", f'test -e "{SCRATCH}/new.conf"', check=False).returncode == 1


def test_systemd_acts_through_supervisor(run_module, access):
    stopped = run_module("systemd", {"name": "titan-hunter", "state": "stopped"}, "exec-1")
    assert stopped.changed and not stopped.failed, stopped.msg
    assert supervisor_state(access, "exec-1", "titan-hunter") == "STOPPED"
    again = run_module("systemd", {"name": "titan-hunter", "state": "stopped"}, "exec-1")
    assert not again.changed and not again.failed
    started = run_module("systemd", {"name": "titan-hunter", "state": "started"}, "exec-1")
    assert started.changed and not started.failed, started.msg
    assert supervisor_state(access, "exec-1", "titan-hunter") == "RUNNING"
    pid = access.ssh("exec-1", "supervisorctl pid titan-hunter").stdout.strip()
    refused = run_module("systemd", {"name": "titan-hunter", "enabled": True,
                                     "state": "restarted"}, "exec-1")
    assert refused.failed and "supervisor on exec-1 has no such setting" in refused.msg
    assert access.ssh("exec-1", "supervisorctl pid titan-hunter").stdout.strip() == pid  # untouched


def test_service_facts_says_what_supervisorctl_says(run_module, access):
    access.ssh("exec-2", "supervisorctl stop titan-hunter")
    facts = run_module("service_facts", {}, "exec-2").registered()["ansible_facts"]["services"]
    seen = {}
    for line in access.ssh("exec-2", "supervisorctl status", check=False).stdout.splitlines():
        name, state = line.split()[:2]
        seen[name] = {"RUNNING": "running", "STOPPED": "stopped"}.get(state, state)
    assert {name: f["state"] for name, f in facts.items()} == seen
    assert facts["titan-hunter"] == {"name": "titan-hunter", "state": "stopped",
                                     "status": "unknown", "source": "supervisor"}


def test_a_package_manager_is_refused_before_any_host_is_touched(play, access):
    result = play("""\
    - hosts: exec
      tasks:
        - file: {path: "{{ titan_home }}/state/e2e-ansible", state: directory}
        - ansible.builtin.yum: {name: nginx, state: present}
    """, "--host", "exec")
    assert result.returncode == 2, result.stderr
    assert re.search(r"book\.yml:4: module 'ansible\.builtin\.yum': not supported by ripcord: "
                     r"package managers: ripcord remediates incidents", result.stderr), result.stderr
    for host in ("exec-1", "exec-2"):
        assert access.ssh(host, f'test -e "{SCRATCH}"', check=False).returncode == 1


def test_a_prompt_pause_without_a_terminal_declines_and_nothing_after_it_runs(play, access):
    book = """\
    - hosts: exec-1
      tasks:
        - pause: {prompt: "Check the dashboards, then go on"}
        - file: {path: "{{ titan_home }}/state/e2e-ansible", state: directory}
    """
    declined = play(book, "--host", "exec-1")
    assert declined.returncode == 4 and "no terminal to ask on" in declined.stderr, declined.stderr
    assert access.ssh("exec-1", f'test -e "{SCRATCH}"', check=False).returncode == 1
    answered = play(book, "--host", "exec-1", "--yes")
    assert answered.returncode == 0, answered.stderr
    assert access.ssh("exec-1", f'test -d "{SCRATCH}"').returncode == 0


@pytest.mark.parametrize("task", [
    "systemd: {name: titan-execution, state: restarted}",
    "ansible.builtin.service: {name: titan-execution, state: restarted}",
])
def test_the_two_person_rule_sees_through_ansibles_spelling(play, access, tmp_path, task):
    """recover-crash needs an approval here; restarting its engine with systemd, or with service
    under its ansible.builtin. name, is the same act and needs it too."""
    rule = tmp_path / "rule.yml"
    rule.write_text("all:\n  children:\n    exec:\n      vars:\n"
                    "        ripcord_require_approval: [recover-crash]\n")
    pid = access.ssh("exec-1", "supervisorctl pid titan-execution").stdout.strip()
    result = play(f"- hosts: exec-1\n  tasks:\n    - {task}\n", "--host", "exec-1", "--yes",
                  "--json", inventories=(rule,))
    assert result.returncode == 4, result.stdout + result.stderr
    assert json.loads(result.stdout)["approval_required"]
    assert access.ssh("exec-1", "supervisorctl pid titan-execution").stdout.strip() == pid


def test_ctrl_c_ends_a_long_pause_at_once_and_nothing_after_it_runs(fleet, access, tmp_path):
    book = tmp_path / "pause.yml"
    book.write_text("- hosts: exec-1\n  tasks:\n"
                    "    - file: {path: \"{{ titan_home }}/state/e2e-ansible\", state: directory}\n"
                    "    - pause: {minutes: 10}\n"
                    "    - file: {path: \"{{ titan_home }}/state/e2e-ansible/after\", state: touch}\n")
    argv = [sys.executable, "-m", "invoke", "--search-root", str(REPO), "play", str(book),
            "--inventory", str(fleet.inventory), "--host", "exec-1"]
    env = {**os.environ, "RIPCORD_JOURNAL": str(tmp_path / "journal.jsonl"), "RIPCORD_OPERATOR": "e2e"}
    with subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert "pause minutes=10" in read_until(proc, "pause minutes=10", timeout=60)
            # the task has begun; its main thread then blocks in the wait (a futex) and nowhere
            # else: that is when an operator's Ctrl-C must still end it at once
            access.wait_for(lambda: "futex" in Path(f"/proc/{proc.pid}/wchan").read_text(),
                            timeout=30, what="the pause waiting")
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=30)  # not the pause's 10 minutes
        finally:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert access.ssh("exec-1", f'test -e "{SCRATCH}/after"', check=False).returncode == 1


def read_until(proc: subprocess.Popen, text: str, timeout: float) -> str:
    """proc's stdout up to the first line holding text (or all of it by the deadline)."""
    deadline = time.monotonic() + timeout
    seen = ""
    while text not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(proc.stdout.fileno(), 65536)  # not readline: its buffer hides from select
        if not chunk:
            break
        seen += chunk.decode(errors="replace")
    return seen
