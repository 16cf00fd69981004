"""ripcord.playbook: playbooks parse into typed objects, and every mistake is refused up front.

The broken corpus (playbooks/broken/) holds one mistake a file; BROKEN maps each file to the
exact `file:line: message` lines the operator sees. The valid corpus (playbooks/valid/) pins
what the objects hold: normalised arguments, inherited tags and vars, line numbers.
Files are loaded by relative path from their own directory, so messages name them as written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ripcord.errors import EXIT_INVALID, InputError
from ripcord.inventory import Inventory
from ripcord.modules import REGISTRY
from ripcord.modules.base import Arg, Module, register
from ripcord.playbook import PlaybookError, Problem, VerifySpec, load_playbook

HERE = Path(__file__).parent / "playbooks"
BROKEN_DIR = HERE / "broken"
VALID_DIR = HERE / "valid"


class TFile(Module):
    """A test-only stand-in for `file`: a required argument and a choices-restricted one."""

    name = "t_file"
    args = {"path": Arg(str, required=True), "state": Arg(str, choices=("present", "absent")),
            "mode": Arg(str)}


@pytest.fixture(autouse=True, scope="module")
def t_file_module():
    """Register t_file for this module's tests only: the loader must look modules up in REGISTRY
    when it validates, not when it is imported."""
    register(TFile)
    yield
    del REGISTRY[TFile.name]


@pytest.fixture(scope="module")
def inventory() -> Inventory:
    return Inventory.load(HERE / "inventory.yml")


def write(directory: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)


def problems_of(path: str | Path, **kwargs) -> list[str]:
    with pytest.raises(PlaybookError) as raised:
        load_playbook(path, **kwargs)
    return str(raised.value).splitlines()


# -- the broken corpus -----------------------------------------------------------------------------

SERIAL = ("serial: expected a positive number of hosts, a percentage from 1% to 100%, or a "
          "non-empty list of those, got ")
NOT_SET = "(not set by vars, extra vars, the inventory, a register or a set_fact in this play)"
PLAY_KEYS = ("any_errors_fatal, become, become_method, become_user, check_mode, connection, "
             "environment, gather_facts, handlers, hosts, max_fail_percentage, name, no_log, "
             "post_tasks, pre_tasks, remote_user, serial, tags, tasks, user, vars, vars_files, verify")
MODULES = "{modules}"  # every registered module, sorted: filled in when the test runs

BROKEN: dict[str, list[str]] = {
    # keys that do not belong
    "play_key_typo.yml": [f"play_key_typo.yml:3: unknown key 'serail' in play (expected one of: "
                          f"{PLAY_KEYS})"],
    "task_key_typo.yml": ["task_key_typo.yml:6: unknown key 'registr' in task "
                          "(did you mean 'register'?)"],
    "include_key_typo.yml": ["include_key_typo.yml:7: unknown key 'tag' in include (expected one "
                             "of: import_tasks, include, include_tasks, name, tags, vars, when)"],
    "listen_in_task.yml": ["listen_in_task.yml:5: 'listen' applies only to handlers (tasks notify "
                           "handlers by name)"],
    "duplicate_key.yml": ["duplicate_key.yml:6: duplicate key 'when' (already given at line 5)"],
    # modules and their arguments
    "module_typo.yml": ["module_typo.yml:5: unknown module 'comand' (did you mean 'command'?)"],
    "module_unknown.yml": [f"module_unknown.yml:4: unknown module 'frobnicate' (known modules: "
                           f"{MODULES})"],
    "module_missing_arg.yml": ["module_missing_arg.yml:4: module 't_file': missing required "
                               "argument 'path'"],
    "module_arg_type.yml": ["module_arg_type.yml:4: module 't_file': argument 'path': expected a "
                            "string, got int"],
    "module_arg_choice.yml": ["module_arg_choice.yml:4: module 't_file': argument 'state': "
                              "expected one of present, absent, got 'gone'"],
    "module_arg_unknown.yml": ["module_arg_unknown.yml:4: module 't_file': unknown argument 'mdoe' "
                               "(expected: mode, path, state)"],
    "module_args_string.yml": ["module_args_string.yml:4: module 'debug': not supported by "
                               "ripcord: key=value arguments; write a mapping: {msg: halting}"],
    "two_modules.yml": ["two_modules.yml:6: task has more than one module: 'command' and 'shell' "
                        "(a task runs exactly one)"],
    "no_module.yml": [f"no_module.yml:4: task has no module (expected one of: {MODULES}; "
                      "or block:)"],
    # play keywords
    "serial_zero.yml": [f"serial_zero.yml:3: {SERIAL}'0'"],
    "serial_percent.yml": [f"serial_percent.yml:3: {SERIAL}'150%'"],
    "serial_negative.yml": [f"serial_negative.yml:3: {SERIAL}-1"],
    "serial_empty.yml": [f"serial_empty.yml:3: {SERIAL}an empty list"],
    "serial_ramp_step.yml": [f"serial_ramp_step.yml:4: {SERIAL}'0%'"],
    "max_fail_percentage.yml": ["max_fail_percentage.yml:3: max_fail_percentage: expected a "
                                "number from 0 to 100, got 120"],
    "vars_bad_name.yml": ["vars_bad_name.yml:4: vars: 'halt-file' is not a valid variable name "
                          "(letters, digits and _, not starting with a digit)"],
    # task keywords
    "register_bad.yml": ["register_bad.yml:5: register: expected a variable name (letters, digits "
                         "and _, not starting with a digit), got 'stop-result'"],
    "retries_negative.yml": ["retries_negative.yml:7: retries: expected a whole number, 0 or more, "
                             "got -1"],
    "timeout_zero.yml": ["timeout_zero.yml:5: timeout: expected a positive number of seconds, "
                         "got 0"],
    "bool_quoted.yml": ["bool_quoted.yml:5: ignore_errors: expected true or false, got 'yes'"],
    "when_number.yml": ["when_number.yml:5: when: expected an expression, true/false, or a list "
                        "of them, got 1"],
    # variables and templates
    "undefined_in_args.yml": ["undefined_in_args.yml:4: undefined variable 'titan_hom' "
                              "(did you mean 'titan_home'?)"],
    "undefined_in_when.yml": ["undefined_in_when.yml:7: undefined variable 'drain_frist' "
                              "(did you mean 'drain_first'?)"],
    "undefined_in_name.yml": ["undefined_in_name.yml:6: undefined variable 'servce' "
                              "(did you mean 'service'?)"],
    "undefined_no_suggestion.yml": [f"undefined_no_suggestion.yml:5: undefined variable 'zebra' "
                                    f"{NOT_SET}"],
    "undefined_other_task_vars.yml": [f"undefined_other_task_vars.yml:7: undefined variable "
                                      f"'grace' {NOT_SET}"],
    "template_syntax_args.yml": ["template_syntax_args.yml:6: template syntax error: "
                                 "unexpected '}'"],
    "template_syntax_when.yml": ["template_syntax_when.yml:7: template syntax error: unexpected "
                                 "end of expression"],
    "template_unknown_filter.yml": ["template_unknown_filter.yml:6: template error: unknown "
                                    "filter 'bol' (did you mean 'bool'?)"],
    # handlers and hosts
    "notify_missing.yml": ["notify_missing.yml:5: notify 'restart engine' names no handler "
                           "(this play's handlers: 'restart gateway')"],
    "hosts_typo.yml": [f"hosts_typo.yml:2: unknown key 'host' in play (expected one of: "
                       f"{PLAY_KEYS})",
                       "hosts_typo.yml:2: play has no 'hosts' (expected a host pattern, e.g. "
                       "hosts: exec)"],
    "hosts_missing.yml": ["hosts_missing.yml:2: play has no 'hosts' (expected a host pattern, "
                          "e.g. hosts: exec)"],
    "hosts_no_match.yml": ["hosts_no_match.yml:2: host pattern 'exec-*:&bogus' matched no hosts "
                           "(known groups: all, core, db, exec, ungrouped)"],
    "hosts_undefined.yml": ["hosts_undefined.yml:2: hosts: 'target' is undefined (a host pattern "
                            "may only use the play's vars and extra vars)"],
    "delegate_unknown.yml": ["delegate_unknown.yml:5: delegate_to 'core-2' is not a host in the "
                             "inventory (did you mean 'core-1'?)"],
    # structure
    "play_not_mapping.yml": ["play_not_mapping.yml:5: a play must be a mapping (hosts:, tasks:, "
                             "...), got 'supervisorctl start engine'"],
    "playbook_not_list.yml": ["playbook_not_list.yml:2: a playbook must be a list of plays "
                              "(- hosts: ...), got a mapping"],
    "empty.yml": ["empty.yml: the file is empty (expected a list)"],
    "tasks_not_list.yml": ["tasks_not_list.yml:4: tasks: expected a list of tasks, got a mapping"],
    "task_not_mapping.yml": ["task_not_mapping.yml:4: a task must be a mapping (name:, a module, "
                             "...), got 'supervisorctl stop engine'"],
    "yaml_tab.yml": ["yaml_tab.yml:4: invalid YAML: found character '\\t' that cannot start any "
                     "token: indent with spaces, not tabs"],
    "yaml_bracket.yml": ["yaml_bracket.yml:6: invalid YAML: expected ',' or ']', but got ':' "
                         "(while parsing a flow sequence at line 5)"],
    # blocks
    "rescue_without_block.yml": ["rescue_without_block.yml:4: 'rescue' without 'block' (rescue "
                                 "and always belong to a block: add block: with the tasks to "
                                 "try)"],
    "block_with_module.yml": ["block_with_module.yml:6: a block cannot also run a module: move "
                              "'shell' into a task inside the block"],
    "block_register.yml": ["block_register.yml:6: 'register' does not apply to a block (set it on "
                           "the tasks inside)"],
    # includes: problems name the file and line where they are
    "include_missing.yml": ["include_missing.yml:4: cannot include included/nope.yml: No such "
                            "file or directory"],
    "playbook_include_missing.yml": ["playbook_include_missing.yml:2: cannot include "
                                     "included/nope_playbook.yml: No such file or directory"],
    "include_cycle.yml": ["included/cycle_b.yml:2: include cycle: included/cycle_a.yml -> "
                          "included/cycle_b.yml -> included/cycle_a.yml"],
    "include_error.yml": ["included/bad_tasks.yml:6: retries: expected a whole number, 0 or more, "
                          "got 'many'"],
    "include_unscoped_var.yml": [f"included/uses_port.yml:2: undefined variable 'port' {NOT_SET}, "
                                 "as included from include_unscoped_var.yml:7"],
    "include_play_as_tasks.yml": ["included/a_playbook.yml:2: expected a task, found a play "
                                  "(hosts:): a playbook is included between plays, not among "
                                  "tasks"],
    # fleet modules act on the whole batch
    "fleet_module_run_once.yml": ["fleet_module_run_once.yml:5: module 'halt' acts on the whole "
                                  "batch at once: run_once does not apply to it"],
    # never silently ignored: a fleet module answers for each host itself
    "fleet_module_failed_when.yml": ["fleet_module_failed_when.yml:5: module 'halt' acts on the "
                                     "whole batch at once: failed_when does not apply to it"],
    # verify
    "verify_bad_retry.yml": ["verify_bad_retry.yml:8: retry: expected a duration such as 30s or "
                             "2m, or a number of seconds, got '30x'"],
    "verify_no_checks.yml": ["verify_no_checks.yml:6: verify selector has no 'checks' (expected a "
                             "marker expression or a node id)"],
}


def test_every_broken_playbook_is_in_the_table():
    files = {path.name for path in BROKEN_DIR.glob("*.yml")}
    assert files == set(BROKEN)
    assert len(files) >= 35


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_playbook(name, inventory, monkeypatch):
    monkeypatch.chdir(BROKEN_DIR)
    modules = ", ".join(sorted(REGISTRY))
    expected = [line.replace(MODULES, modules) for line in BROKEN[name]]
    with pytest.raises(PlaybookError) as raised:
        load_playbook(name, inventory=inventory)
    assert [str(problem) for problem in raised.value.problems] == expected
    assert str(raised.value) == "\n".join(expected)


def test_a_playbook_error_is_invalid_input_listing_problems_by_file_and_line(tmp_path):
    write(tmp_path, {
        "main.yml": "- hosts: exec\n  tasks:\n    - include: z.yml\n    - include: a.yml\n"
                    "    - debug: {msg: '{{ nope }}'}\n      when: 1\n",
        "a.yml": "- debug: {msg: hi}\n  retries: -2\n",
        "z.yml": "- comand: ls\n",
    })
    with pytest.raises(PlaybookError) as raised:
        load_playbook(tmp_path / "main.yml")
    error = raised.value
    assert isinstance(error, InputError) and error.exit_code == EXIT_INVALID
    assert [(Path(p.file).name, p.line) for p in error.problems] == [
        ("a.yml", 2), ("main.yml", 5), ("main.yml", 6), ("z.yml", 1)]
    assert error.problems[0] == Problem(str(tmp_path / "a.yml"), 2,
                                        "retries: expected a whole number, 0 or more, got -2")
    assert "nothing was touched" in error.hint and "no inventory given" in error.hint


def test_modules_are_looked_up_when_validating(tmp_path, monkeypatch):
    write(tmp_path, {"pb.yml": "- hosts: exec\n  tasks:\n    - t_file: {path: /x}\n"})
    assert load_playbook(tmp_path / "pb.yml").plays[0].tasks[0].module == "t_file"
    monkeypatch.delitem(REGISTRY, "t_file")
    (problem,) = problems_of(tmp_path / "pb.yml")
    assert problem.startswith(f"{tmp_path / 'pb.yml'}:3: unknown module 't_file' (")


# -- variables -------------------------------------------------------------------------------------

def test_inventory_vars_need_the_inventory(tmp_path, inventory):
    write(tmp_path, {"pb.yml": "- hosts: exec\n  tasks:\n    - command: ls {{ titan_home }}\n"})
    assert problems_of(tmp_path / "pb.yml") == [
        f"{tmp_path / 'pb.yml'}:3: undefined variable 'titan_home' (not set by vars, extra vars, a "
        "register or a set_fact in this play; no inventory given)"]
    assert load_playbook(tmp_path / "pb.yml", inventory=inventory).plays
    assert load_playbook(tmp_path / "pb.yml", extra_vars={"titan_home": "/tmp"}).plays


def test_only_the_selected_hosts_vars_are_defined(tmp_path, inventory):
    write(tmp_path, {"pb.yml": "- hosts: db\n  tasks:\n    - debug: {msg: '{{ exec_slot }}'}\n"})
    assert problems_of(tmp_path / "pb.yml", inventory=inventory) == [
        f"{tmp_path / 'pb.yml'}:3: undefined variable 'exec_slot' {NOT_SET}"]
    (tmp_path / "pb.yml").write_text("- hosts: exec-2\n  tasks:\n"
                                     "    - debug: {msg: '{{ exec_slot }}'}\n")
    assert load_playbook(tmp_path / "pb.yml", inventory=inventory).plays


def test_names_defined_anywhere_in_the_play_and_names_that_need_none(tmp_path):
    write(tmp_path, {"pb.yml": """
- hosts: exec
  tasks:
    - debug: {msg: "{{ later.stdout }} {{ fact }} {{ groups['exec'] | length }}"}
      when: optional is defined and optional
    - command: echo {{ maybe | default('x') }} {% for i in range(3) %}{{ i }}{% endfor %}
      register: later
  handlers:
    - set_fact: {fact: 1}
"""})
    assert load_playbook(tmp_path / "pb.yml").plays[0].tasks[0].when == [
        "optional is defined and optional"]


def test_vars_scopes(tmp_path):
    """A block's vars reach its tasks, rescue and always; an include's vars reach the included
    tasks and nothing else."""
    write(tmp_path, {"pb.yml": """
- hosts: exec
  tasks:
    - block:
        - debug: {msg: "{{ grace }}"}
      rescue:
        - debug: {msg: "{{ grace }}"}
      always:
        - debug: {msg: "{{ grace }}"}
      vars: {grace: 5}
    - include: t.yml
      vars: {port: 1}
      when: port > 0
    - debug: {msg: "{{ port }}"}
""", "t.yml": "- command: ping {{ port }}\n"})
    assert problems_of(tmp_path / "pb.yml") == [
        f"{tmp_path / 'pb.yml'}:14: undefined variable 'port' (not set by vars, extra vars, a "
        "register or a set_fact in this play; no inventory given)"]


def test_templated_hosts_render_with_play_and_extra_vars(tmp_path, inventory):
    write(tmp_path, {"pb.yml": "- hosts: '{{ target }}:!{{ spare }}'\n  vars: {spare: exec-2}\n"
                               "  tasks:\n    - debug: {msg: '{{ exec_slot }}'}\n"})
    playbook = load_playbook(tmp_path / "pb.yml", inventory=inventory,
                             extra_vars={"target": "exec"})
    assert playbook.plays[0].hosts == "exec:!exec-2"


def test_several_problems_in_one_file(inventory, tmp_path):
    write(tmp_path, {"pb.yml": """
- hosts: nowhere
  tasks:
    - command: ls {{ titan_home }}
      notify: [restart, reload]
      delegate_to: "{{ inventory_hostname }}"
  handlers:
    - name: reload
      debug: {msg: reloading}
"""})
    assert problems_of(tmp_path / "pb.yml", inventory=inventory) == [
        f"{tmp_path / 'pb.yml'}:2: host pattern 'nowhere' matched no hosts (known groups: all, "
        "core, db, exec, ungrouped)",
        f"{tmp_path / 'pb.yml'}:5: notify 'restart' names no handler (this play's handlers: "
        "'reload')",
    ]


# -- includes --------------------------------------------------------------------------------------

def test_a_file_that_includes_itself(tmp_path):
    write(tmp_path, {"pb.yml": "- include: pb.yml\n"})
    assert problems_of(tmp_path / "pb.yml") == [
        f"{tmp_path / 'pb.yml'}:1: include cycle: {tmp_path / 'pb.yml'} -> {tmp_path / 'pb.yml'}"]


def test_a_file_included_twice_is_not_a_cycle(tmp_path):
    write(tmp_path, {"pb.yml": "- hosts: exec\n  tasks:\n    - include: t.yml\n"
                               "    - include: t.yml\n", "t.yml": "- debug: {msg: hi}\n"})
    assert len(load_playbook(tmp_path / "pb.yml").plays[0].tasks) == 2


def test_missing_playbook():
    with pytest.raises(PlaybookError) as raised:
        load_playbook("no/such/playbook.yml")
    assert str(raised.value) == ("no/such/playbook.yml: cannot read the playbook: No such file or "
                                 "directory")


# -- the valid corpus ------------------------------------------------------------------------------

@pytest.fixture
def site(monkeypatch, inventory):
    monkeypatch.chdir(VALID_DIR)
    return load_playbook("site.yml", inventory=inventory)


def test_site_plays(site):
    assert site.path == "site.yml"
    halt, resume = site.plays
    assert (halt.name, halt.hosts, halt.file, halt.line) == ("halt trading", "exec", "site.yml", 2)
    assert halt.serial == [1, "50%", "100%"]
    assert halt.max_fail_percentage == 0 and halt.any_errors_fatal is True
    assert halt.vars == {"service": "engine", "halt_file": "{{ titan_home }}/HALT"}
    assert halt.verify == [VerifySpec("halted", None, 60),
                           VerifySpec("health and not degraded", 120.0, 61),
                           VerifySpec("checks/test_halt.py::test_halt_file", 90.0, 63)]
    # the included playbook: its play, with the include's vars and tags
    assert (resume.name, resume.hosts, resume.file, resume.line) == ("core", "core", "resume.yml", 2)
    assert resume.vars == {"reason": "drill"}
    assert resume.serial is None and resume.verify == [] and resume.handlers == []
    assert [t.tags for t in resume.tasks] == [frozenset({"resume"})] * 2
    assert resume.tasks[1].args == {"prompt": "Resume trading?", "typed": "RESUME"}
    assert resume.tasks[1].when == ["reason != 'test'"]


def test_site_tasks(site):
    touch, stop, drain, drained, flatten = site.plays[0].tasks
    assert (touch.name, touch.module, touch.args) == (
        "command touch {{ halt_file }}", "command", {"cmd": "touch {{ halt_file }}"})
    assert (touch.file, touch.line, touch.register, touch.notify) == (
        "site.yml", 13, "touched", ["engine halted"])
    assert touch.tags == {"halt"} and touch.when == [] and touch.is_block is False

    assert (stop.name, stop.line, stop.args) == (
        "stop {{ service }}", 17, {"cmd": "supervisorctl stop {{ service }}"})
    assert stop.when == ["touched is succeeded", "exec_slot > 0"]
    assert (stop.register, stop.until, stop.retries, stop.delay, stop.timeout) == (
        "stopped", "stopped.rc == 0", 5, 2.0, 30.0)
    assert stop.changed_when == "'stopped' in stopped.stdout"
    assert stop.failed_when == ["stopped.rc != 0", "'ERROR' in stopped.stderr"]
    assert stop.tags == {"halt", "engine", "stop"}

    # tasks/drain.yml, and tasks/notify.yml which it includes, in place
    assert (drain.name, drain.file, drain.line) == ("wait for orders to drain", "tasks/drain.yml", 2)
    assert drain.args == {"argv": ["titanctl", "drain", "--timeout", "{{ drain_timeout }}"]}
    assert drain.changed_when is False
    assert (drained.file, drained.line, drained.notify) == ("tasks/notify.yml", 2, ["trading halted"])
    assert drained.name == "debug msg=drained {{ inventory_hostname }} in {{ drain_ti..."
    for task in (drain, drained):
        assert task.vars == {"drain_timeout": 20}
        assert task.when == ["not ansible_check_mode"]
        assert task.tags == {"halt", "drain"}


def test_site_block(site):
    flatten = site.plays[0].tasks[-1]
    assert flatten.is_block and flatten.module is None
    assert (flatten.name, flatten.line, flatten.vars) == ("flatten positions", 37, {"attempts": 2})
    assert flatten.ignore_errors is True and flatten.tags == {"halt"}
    create, fact = flatten.block
    assert (create.module, create.args, create.line) == (
        "t_file", {"path": "{{ halt_file }}", "state": "present"}, 39)
    assert create.name == "t_file path={{ halt_file }} state=present"
    assert (fact.module, fact.args) == ("set_fact", {"flattened": "{{ attempts > 0 }}"})
    assert [(t.module, t.line) for t in flatten.rescue] == [("debug", 43), ("fail", 45)]
    assert flatten.rescue[1].args == {"msg": "giving up"}
    assert [(t.module, t.args) for t in flatten.always] == [("debug", {"var": "flattened"})]


def test_site_handlers(site):
    (announce,) = site.plays[0].handlers
    assert (announce.name, announce.line, announce.module) == ("announce halt", 53, "confirm")
    assert announce.args == {"prompt": "Engines on {{ inventory_hostname }} halted: continue?"}
    assert announce.listen == ["engine halted", "trading halted"]
    assert announce.run_once is True and announce.delegate_to == "core-1"
    assert announce.tags == frozenset()  # a play's tags mark its tasks, not its handlers


def test_shorthands(monkeypatch, inventory):
    monkeypatch.chdir(VALID_DIR)
    (play,) = load_playbook("forms.yml", inventory=inventory).plays
    assert (play.name, play.hosts) == ("exec-1,exec-2", "exec-1,exec-2")
    status, confirm, debug, fact, show = play.tasks
    assert status.args == {"cmd": "supervisorctl status engine\necho done\n"}
    assert status.name == "shell supervisorctl status engine echo done"
    assert confirm.args == {"prompt": "Halt {{ inventory_hostname }}?"}
    assert confirm.tags == {"halt", "confirm"}
    assert (debug.args, debug.when, debug.name) == ({}, [True], "debug")
    assert fact.args == {"target": "exec-1"}
    assert show.when == ["window is defined and window"] and show.notify == ["log"]
    assert play.handlers[0].listen == ["log"]
    # defaults
    assert (status.retries, status.delay, status.timeout, status.ignore_errors) == (3, 5.0, None,
                                                                                    False)
