"""Fail closed, and data is never code (issues 13 and 15), end to end on the sandbox.

What a host prints, what an operator types and what a playbook tags `!unsafe` stays text: read
back from the hosts over the system ssh client and from the controller's filesystem. A run that
did not do its job never says ok, and every run is journaled, Ctrl-C included.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ripcord.journal import Journal

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def invoke(fleet, tmp_path):
    """invoke(*argv) -> CompletedProcess of `invoke ...` against the test fleet, journaled to
    a file of the test's own."""
    journal = tmp_path / "journal.jsonl"

    def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), *argv,
                               "--inventory", str(fleet.inventory)],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              env={**os.environ, "RIPCORD_JOURNAL": str(journal)})

    run.journal = Journal(journal)
    return run


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# The host prints `{{ lipsum.__globals__['os'].popen('touch MARKER').read() }} {{ 7*7 }}`.
REMOTE_TEMPLATE_EXEC = """
- name: remote template exec
  hosts: exec-1
  tasks:
    - shell: >-
        printf '%s' "{{ '{{' }} lipsum.__globals__['os'].popen('touch MARKER').read() {{ '}}' }}
        {{ '{{' }} 7*7 {{ '}}' }}"
      register: out
      changed_when: false
    - set_fact: {said: "{{ out.stdout }}"}
    - debug: {msg: "host said {{ said }}"}
    - copy: {content: "{{ said }}", dest: "{{ titan_home }}/state/e2e-said"}
"""


def test_host_output_never_runs_on_the_controller(invoke, access, tmp_path):
    """Issue 13's playbook: a host prints a template reaching for os.popen; it must stay text."""
    marker = tmp_path / "controller-pwned"
    payload = f"{{{{ lipsum.__globals__['os'].popen('touch {marker}').read() }}}} {{{{ 7*7 }}}}"
    playbook = _write(tmp_path, "remote.yml", REMOTE_TEMPLATE_EXEC.replace("MARKER", str(marker)))
    result = invoke("play", playbook, "--host", "exec-1", "--json")
    assert result.returncode == 0, result.stderr + result.stdout
    assert not marker.exists(), "a host's output ran code on the controller"
    assert access.ssh("exec-1", 'cat "$TITAN_HOME/state/e2e-said"').stdout == payload
    said = [r["msg"] for r in json.loads(result.stdout)["results"] if r["module"] == "debug"]
    assert said == [f"host said {payload}"]


def test_unsafe_tags_and_extra_vars_stay_text(invoke, access, tmp_path):
    playbook = _write(tmp_path, "unsafe.yml", """
- name: unsafe values
  hosts: exec-1
  vars:
    tagged: !unsafe "{{ 7*7 }}"
  tasks:
    - copy: {content: "{{ tagged }}|{{ typed }}", dest: "{{ titan_home }}/state/e2e-unsafe"}
""")
    result = invoke("play", playbook, "--host", "exec-1", "-e", "typed={{ 6*7 }}")
    assert result.returncode == 0, result.stderr + result.stdout
    assert access.ssh("exec-1", 'cat "$TITAN_HOME/state/e2e-unsafe"').stdout == "{{ 7*7 }}|{{ 6*7 }}"


def test_a_template_reaching_for_internals_is_invalid_input(invoke, tmp_path):
    marker = tmp_path / "pwned"
    playbook = _write(tmp_path, "internals.yml", f"""
- name: internals
  hosts: exec-1
  tasks:
    - debug: {{msg: "{{{{ cycler.__init__.__globals__.os.popen('touch {marker}') }}}}"}}
""")
    result = invoke("play", playbook, "--host", "exec-1")
    assert result.returncode == 2, result.stderr
    assert f"{playbook}:5:" in result.stderr and "internals" in result.stderr
    assert not marker.exists() and invoke.journal.records() == []


def test_a_halt_reason_is_never_a_template_and_the_engines_halt(invoke, access):
    """Issue 15: `--reason "spike {{BTC"` halted nothing and said ok; now it is the reason."""
    engines = [h.name for h in access.plan.by_role("exec")]
    try:
        result = invoke("halt", "--host", "sandbox", "--reason", "spike {{BTC", "--json")
        assert result.returncode == 0, result.stderr + result.stdout
        assert sorted(json.loads(result.stdout)["hosts"]) == sorted(engines)
        for host in engines:
            assert access.health(host, "titan-execution")["halted"] is True
            text = access.ssh(host, 'cat "$TITAN_HOME/system.halt"').stdout
            assert "reason=spike {{BTC" in text, text
    finally:
        from tests.integration.conftest import reset_fleet
        reset_fleet(access)


def test_a_procedure_that_selects_no_host_of_its_play_is_refused(invoke):
    result = invoke("halt", "--host", "db-1", "--json")
    assert result.returncode == 2, result.stderr
    assert "selects no host this procedure acts on" in result.stderr
    assert invoke.journal.records() == []


def test_ctrl_c_mid_play_exits_130_and_is_journaled(fleet, access, tmp_path):
    sleep = f"sleep 27.{time.time_ns() % 10**6}"  # this run's own: nothing older matches it
    playbook = _write(tmp_path, "slow.yml", f"""
- name: slow
  hosts: exec-1
  tasks:
    - command: {sleep}
""")
    journal = tmp_path / "journal.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "--search-root", str(REPO), "play",
                             playbook, "--host", "exec-1", "--inventory", str(fleet.inventory)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env={**os.environ, "RIPCORD_JOURNAL": str(journal)})
    try:
        access.wait_for(lambda: access.ssh("exec-1", f"pgrep -f '^{sleep}$'", check=False).returncode == 0,
                        timeout=30, what="the remote command running")
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert time.monotonic() - started < 15
    records = Journal(journal).records()
    assert [r["interrupted"] for r in records] == [True], records
    assert records[0]["exit_code"] == 130
    assert [(t["host"], t["outcome"]) for t in records[0]["tasks"]] == [("exec-1", "failed")]
    assert "interrupted" in records[0]["tasks"][0]["msg"]
    left = access.ssh("exec-1", f"pgrep -af '^{sleep}$'; ls -a \"$TITAN_HOME\"", check=False).stdout
    assert "sleep" not in left and ".ripcord.lock" not in left, left  # no process, no lock left


def test_every_secret_the_run_knows_is_redacted_everywhere(fleet, access, tmp_path):
    """-e values named like secrets, lookups and a module's secret argument: planted, then
    searched for in stdout, stderr, the --json object and every file the run wrote."""
    planted = {"e": "Pw-planted-e", "lookup": "tok-planted-l", "arg": "val-planted-a", "short": "k9"}
    playbook = _write(tmp_path, "secrets.yml", """
- name: secrets
  hosts: exec-1
  tasks:
    - debug: {msg: "e={{ db_password }} l={{ lookup('env', 'RIPCORD_PLANT_TOKEN') }} s={{ api_key }}"}
    - env: {path: "{{ titan_home }}/state/e2e-secret.env", key: PLANTED, value: "{{ planted_value }}"}
    - fail: {msg: "boom {{ db_password }} {{ planted_value }}"}
      ignore_errors: true
""")
    state = tmp_path / "state"
    state.mkdir()
    env = {**os.environ, "RIPCORD_JOURNAL": str(state / "journal.jsonl"),
           "RIPCORD_PLANT_TOKEN": planted["lookup"], "RIPCORD_STATE_DIR": str(state)}
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), "play", playbook, "--host",
         "exec-1", "--inventory", str(fleet.inventory), "-e", f"db_password={planted['e']}",
         "-e", f"api_key={planted['short']}", "-e", f"planted_value={planted['arg']}", "--json"],
        capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr + result.stdout
    written = access.ssh("exec-1", 'cat "$TITAN_HOME/state/e2e-secret.env"').stdout
    assert planted["arg"] in written  # the module did its job: the secret is on the host
    files = [p for p in state.rglob("*") if p.is_file()]
    assert any(p.name == "journal.jsonl" for p in files)
    texts = {"stdout": result.stdout, "stderr": result.stderr,
             **{str(p): p.read_text(errors="replace") for p in files}}
    for where, text in texts.items():
        for name, value in planted.items():
            assert value not in text, f"the {name} secret appears in {where}"
    messages = [r["msg"] for r in json.loads(result.stdout)["results"] if r["module"] == "debug"]
    assert messages == ["e=******** l=******** s=********"]


def test_ctrl_c_mid_halt_finishes_the_ladder_and_reports_it(fleet, access, tmp_path):
    """exec-1's engine ignores NATS and the halt file, so only the last resort (stopping its
    service at the deadline) halts it; Ctrl-C comes while the ladder waits for that deadline.
    The ladder still finishes: exec-1's engine is stopped, and the journal says so."""
    from tests.integration.conftest import reset_fleet

    journal = tmp_path / "journal.jsonl"
    faults = '"$TITAN_HOME/state/faults"'
    access.ssh("exec-1", f"mkdir -p {faults} && touch {faults}/deaf_nats {faults}/ignore_halt_file")
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "--search-root", str(REPO), "halt",
                             "--host", "sandbox", "--deadline", "4", "--reason", "ctrl-c drill",
                             "--inventory", str(fleet.inventory)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env={**os.environ, "RIPCORD_JOURNAL": str(journal)})
    try:
        access.wait_for(lambda: access.health("exec-2", "titan-execution")["halted"], timeout=30,
                        what="the halt under way (exec-2 halted)")
        assert proc.poll() is None, "the halt ended before Ctrl-C could interrupt it"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        status = access.ssh("exec-1", "supervisorctl status titan-execution", check=False).stdout
        assert "STOPPED" in status, status
        record = Journal(journal).records()[-1]
        assert record["interrupted"] is True
        said = {t["host"]: t["msg"] for t in record["tasks"] if t["module"] == "halt"}
        assert set(said) == {"exec-1", "exec-2"}, said
        assert "last resort" in said["exec-1"] and "halted by" in said["exec-2"], said
    finally:
        proc.kill()
        access.ssh("exec-1", f"rm -f {faults}/deaf_nats {faults}/ignore_halt_file")
        reset_fleet(access)


# --- a fleet module that fails, or forgets a host, never counts as done ----------------------------

@pytest.fixture
def fleet_module():
    """fleet_module(name, behaviour): a throwaway fleet module calling behaviour(contexts),
    registered for the test only (the registry is the process's: later tests must not see it)."""
    from ripcord.modules import REGISTRY
    from ripcord.modules.base import Module

    names: list[str] = []

    def register(name: str, behaviour):
        class Fleet(Module):
            fleet = True
            args = {}

            def run_fleet(self, contexts, args):
                return behaviour(contexts)

        Fleet.name = name
        REGISTRY[name] = Fleet
        names.append(name)
        return name

    yield register
    for name in names:
        del REGISTRY[name]


def _run_in_process(fleet, module: str):
    from ripcord.inventory import Inventory
    from ripcord.playbook import Play, Playbook, Task
    from ripcord.runner import Options, Runner

    task = Task(name=module, file="test.yml", line=1, module=module, args={})
    play = Play(name="fleet", hosts="exec", file="test.yml", line=1, tasks=[
        task, Task(name="after", file="test.yml", line=2, module="command", args={"cmd": "true"})])
    runner = Runner(Inventory.load([fleet.inventory]), Options(), confirm=lambda *_: True)
    runner.run(Playbook("test.yml", [play]))
    return runner


def test_a_fleet_module_that_raises_fails_its_task_on_every_host_not_the_run(fleet, fleet_module):
    def explode(contexts):
        raise KeyError("boom")

    runner = _run_in_process(fleet, fleet_module("explode_fleet", explode))
    summary = runner.summary()
    assert sorted(summary) == ["exec-1", "exec-2"]
    assert all(stats["failed"] == 1 and stats["ok"] == 0 for stats in summary.values()), summary
    said = {r.host: r.msg for r in runner.records if r.task == "explode_fleet"}
    assert said == dict.fromkeys(["exec-1", "exec-2"], "module explode_fleet crashed: KeyError('boom')")


def test_a_host_a_fleet_module_gave_no_result_for_has_failed(fleet, fleet_module):
    from ripcord.modules.base import Result

    def forget_one(contexts):
        return {host: Result(changed=True, msg="done") for host in sorted(contexts)[:1]}

    runner = _run_in_process(fleet, fleet_module("forgetful_fleet", forget_one))
    summary = runner.summary()
    assert summary["exec-1"]["failed"] == 0 and summary["exec-1"]["changed"] == 2
    assert summary["exec-2"]["failed"] == 1, summary
    said = [r.msg for r in runner.records if r.host == "exec-2"]
    assert said == ["module forgetful_fleet gave no result for this host"]
