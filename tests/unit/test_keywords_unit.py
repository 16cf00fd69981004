"""Issue 17's later keywords as the playbook reader takes them: remote_user (and `user`),
include_tasks looped and conditioned, meta: flush_handlers, `hosts: localhost` plays.
What they do on hosts is tested on the sandbox (tests/integration/test_keywords.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ripcord.playbook import PlaybookError, load_playbook
from ripcord.plays import inherit


def load(tmp_path: Path, text: str, **files: str):
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    book = tmp_path / "book.yml"
    book.write_text(text)
    return load_playbook(book)


def problems(tmp_path: Path, text: str, **files: str) -> list[str]:
    with pytest.raises(PlaybookError) as raised:
        load(tmp_path, text, **files)
    return [str(p).replace(f"{tmp_path}/", "") for p in raised.value.problems]


# -- remote_user -----------------------------------------------------------------------------------

def test_remote_user_at_play_and_task_level_and_the_old_spelling(tmp_path):
    play = load(tmp_path, """
- hosts: all
  user: deploy
  vars: {other: ops}
  tasks:
    - command: id -un
    - command: id -un
      remote_user: "{{ other }}"
    - block:
        - command: id -un
      remote_user: blocked
  handlers:
    - name: h
      command: "true"
""").plays[0]
    assert play.remote_user == "deploy"
    assert [t.remote_user for t in play.tasks[:2]] == ["deploy", "{{ other }}"]
    assert play.tasks[2].remote_user == "blocked" and play.handlers[0].remote_user == "deploy"
    assert inherit(play.tasks[2]).block[0].remote_user == "blocked"  # as the block runs it


@pytest.mark.parametrize("keys, expected", [
    ("remote_user: a\n  user: b", "book.yml:3: user is remote_user's old spelling: give one of them"),
    ("remote_user: root@db", "book.yml:2: remote_user: expected a login user name, got 'root@db'"),
    ("remote_user: '{{ nobody }}'", "book.yml:2: undefined variable 'nobody'"),
])
def test_remote_user_mistakes_are_invalid_input(tmp_path, keys, expected):
    found = problems(tmp_path, f"- hosts: all\n  {keys}\n  tasks:\n    - command: 'true'\n")
    assert [p for p in found if p.startswith(expected)] == found[:1] and len(found) == 1, found



# -- include_tasks ---------------------------------------------------------------------------------

def test_include_tasks_is_one_task_holding_its_files_tasks_read_up_front(tmp_path):
    tasks = load(tmp_path, """
- hosts: all
  tasks:
    - include_tasks: inner.yml
      loop: [a, b]
      loop_control: {loop_var: part}
      when: part != 'b'
      vars: {x: 1}
      tags: [t]
    - include_tasks: {file: inner2.yml}
""", **{"inner.yml": "- debug: {msg: '{{ part }} {{ x }}'}\n",
        "inner2.yml": "- debug: {msg: two}\n"}).plays[0].tasks
    include = tasks[0]
    assert include.include == str(tmp_path / "inner.yml") and include.loop == ["a", "b"]
    assert include.when == ["part != 'b'"] and include.vars == {"x": 1}
    assert [(t.module, t.args, t.when, t.tags) for t in include.included] == [
        ("debug", {"msg": "{{ part }} {{ x }}"}, [], frozenset({"t"}))]
    assert tasks[1].included[0].args == {"msg": "two"}


def test_a_templated_include_tasks_is_read_when_the_run_resolves_it(tmp_path):
    include = load(tmp_path, "- hosts: all\n  vars: {f: x.yml}\n  tasks:\n"
                             "    - include_tasks: '{{ f }}'\n").plays[0].tasks[0]
    assert include.include == "{{ f }}" and include.included is None


@pytest.mark.parametrize("text, files, expected", [
    ("    - import_tasks: inner.yml\n      loop: [a]\n", {"inner.yml": "- debug: {msg: hi}\n"},
     "book.yml:4: loop over an import: its tasks are read in place, once (loop over include_tasks"),
    ("    - include_tasks: inner.yml\n      apply: {become: true}\n", {"inner.yml": "- ping:\n"},
     "book.yml:4: not supported by ripcord: apply; set the keywords on a block in the task file"),
    ("    - include_tasks: '{{ nowhere }}.yml'\n", {}, "book.yml:3: undefined variable 'nowhere'"),
])
def test_include_tasks_mistakes_are_found_before_any_host(tmp_path, text, files, expected):
    found = problems(tmp_path, "- hosts: all\n  tasks:\n" + text, **files)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_a_resolved_task_file_is_validated_naming_the_include(tmp_path):
    from ripcord.playbook import load_task_file

    (tmp_path / "inner.yml").write_text("- debug: {msg: '{{ here }} {{ gone }}'}\n"
                                        "- command: 'true'\n  notify: nobody\n")
    with pytest.raises(PlaybookError) as raised:
        load_task_file(str(tmp_path / "inner.yml"), by=("book.yml", 7), known={"here"},
                       handlers={"restart"})
    assert [str(p).replace(f"{tmp_path}/", "") for p in raised.value.problems] == [
        "inner.yml:1: undefined variable 'gone' (not set by vars, extra vars, the inventory, a "
        "register or a set_fact in this play), as included from book.yml:7",
        "inner.yml:3: notify 'nobody' names no handler (this play's handlers: 'restart')"]
    assert raised.value.hint == "included from book.yml:7: its tasks did not run"
    with pytest.raises(PlaybookError, match="book.yml:7: cannot include"):
        load_task_file(str(tmp_path / "gone.yml"), by=("book.yml", 7), known=(), handlers=())


def test_the_two_person_rule_sees_into_include_tasks_and_a_templated_one_may_do_anything(tmp_path):
    from ripcord import procedures

    restart = "- systemd: {name: titan-execution, state: restarted}\n"
    static = load(tmp_path, "- hosts: all\n  tasks:\n    - include_tasks: inner.yml\n      loop: [1]\n",
                  **{"inner.yml": restart})
    assert procedures.acts_as(static, "recover-crash") and not procedures.acts_as(static, "flatten")
    templated = load(tmp_path, "- hosts: all\n  vars: {f: inner}\n  tasks:\n"
                               "    - include_tasks: '{{ f }}.yml'\n")
    assert procedures.acts_as(templated, "flatten") and procedures.acts_as(templated, "recover-crash")


# -- meta ------------------------------------------------------------------------------------------

def test_meta_flush_handlers_is_read_and_the_other_meta_actions_are_refused_saying_why(tmp_path):
    tasks = load(tmp_path, "- hosts: all\n  tasks:\n    - meta: flush_handlers\n"
                           "    - ansible.builtin.meta: flush_handlers\n").plays[0].tasks
    assert [(t.module, t.args) for t in tasks] == [("meta", {"action": "flush_handlers"}),
                                                   ("ansible.builtin.meta", {"action": "flush_handlers"})]
    found = problems(tmp_path, "- hosts: all\n  tasks:\n    - meta: end_play\n"
                               "    - meta: '{{ what }}'\n  vars: {what: noop}\n")
    assert found == ["book.yml:3: module 'meta': not supported by ripcord: meta end_play; fail the "
                     "hosts (fail, with any_errors_fatal) to stop the play",
                     "book.yml:4: module 'meta': expected flush_handlers, got '{{ what }}'"], found


# -- hosts: localhost ------------------------------------------------------------------------------

INVENTORY = Path(__file__).parent / "playbooks" / "inventory.yml"


def test_a_localhost_play_runs_on_the_controller_with_the_all_groups_vars(tmp_path):
    """As ansible-inventory resolves it: `localhost` (not in the inventory) is the controller,
    matched by no group, not even `all`; its vars are the `all` group's own."""
    from ripcord.inventory import Inventory
    from ripcord.runner import Options, Runner

    inventory = Inventory.load(INVENTORY)
    out = tmp_path / "out"
    book = load_playbook(_write(tmp_path, f"""
- hosts: localhost
  tasks:
    - shell: >-
        printf '%s|%s|%s' "{{{{ inventory_hostname }}}}" "{{{{ titan_home }}}}"
        "{{{{ group_names }}}}" > {out}
"""), inventory=inventory)
    records = Runner(inventory, Options(), confirm=lambda *a: True).run(book)
    assert [(r.host, r.outcome) for r in records] == [("localhost", "changed")], records
    assert out.read_text() == "localhost|/srv/titan|[]"
    assert "localhost" not in inventory.select("all")
    found = problems(tmp_path, "- hosts: localhost\n  tasks:\n    - debug: {msg: '{{ exec_slot }}'}\n")
    assert found and found[0].startswith("book.yml:3: undefined variable 'exec_slot'"), found


def _write(tmp_path: Path, text: str) -> Path:
    book = tmp_path / "book.yml"
    book.write_text(text)
    return book


def test_uri_and_wait_for_in_a_localhost_play_reach_from_the_controller(tmp_path):
    """A local task has no SSH channel: the controller connects itself (was: uri crashed)."""
    import http.server
    import threading

    from ripcord.inventory import Inventory
    from ripcord.runner import Options, Runner

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        inventory = Inventory.load(INVENTORY)
        book = load_playbook(_write(tmp_path, f"""
- hosts: localhost
  tasks:
    - wait_for: {{port: {port}, timeout: 5}}
    - uri: {{url: "http://127.0.0.1:{port}/", status_code: 200}}
      register: answer
    - assert: {{that: answer.status == 200}}
    - wait_for: {{port: {port}, state: stopped, timeout: 1}}
      ignore_errors: true
"""), inventory=inventory)
        records = Runner(inventory, Options(), confirm=lambda *a: True).run(book)
    finally:
        server.shutdown()
    assert [r.outcome for r in records] == ["ok", "ok", "ok", "ignored"], records


def test_include_tasks_among_handlers_is_read_in_place_as_handlers(tmp_path):
    play = load(tmp_path, """
- hosts: all
  tasks:
    - command: 'true'
      notify: restart it
  handlers:
    - include_tasks: handlers.yml
""", **{"handlers.yml": "- name: restart it\n  command: 'true'\n"}).plays[0]
    assert [(h.name, h.module) for h in play.handlers] == [("restart it", "command")]


def test_a_templated_task_file_must_be_beside_the_including_file(tmp_path):
    """Whatever a host's facts or vars hold, they cannot make the run read a controller file
    from elsewhere: the resolved file stays in the playbook's directory (or below)."""
    from ripcord.inventory import Inventory
    from ripcord.runner import Options, Runner

    (tmp_path / "book").mkdir()
    (tmp_path / "elsewhere.yml").write_text("- command: touch {{ out }}\n")
    inventory = Inventory.load(INVENTORY)
    book = load_playbook(_write(tmp_path / "book", f"""
- hosts: localhost
  vars: {{where: ../elsewhere, out: {tmp_path / "ran"}}}
  tasks:
    - include_tasks: "{{{{ where }}}}.yml"
"""), inventory=inventory)
    records = Runner(inventory, Options(), confirm=lambda *a: True).run(book)
    assert [r.outcome for r in records] == ["failed"], records
    assert "'../elsewhere.yml' is not in" in records[0].msg and not (tmp_path / "ran").exists()
