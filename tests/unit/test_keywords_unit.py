"""Issue 17's later keywords as the playbook reader takes them: remote_user (and `user`),
include_tasks looped and conditioned, meta: flush_handlers, `hosts: localhost` plays.
What they do on hosts is tested on the sandbox (tests/integration/test_keywords.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ripcord.playbook import PlaybookError, load_playbook


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


@pytest.mark.parametrize("keys, expected", [
    ("remote_user: a\n  user: b", "book.yml:3: user is remote_user's old spelling: give one of them"),
    ("remote_user: root@db", "book.yml:2: remote_user: expected a login user name, got 'root@db'"),
    ("remote_user: '{{ nobody }}'", "book.yml:2: undefined variable 'nobody'"),
])
def test_remote_user_mistakes_are_invalid_input(tmp_path, keys, expected):
    found = problems(tmp_path, f"- hosts: all\n  {keys}\n  tasks:\n    - command: 'true'\n")
    assert [p for p in found if p.startswith(expected)] == found[:1] and len(found) == 1, found

