"""The checks' shell on a host (ripcord/verify.py HostShell): a run's commands share one shell
there, each in a subshell of its own with its own status, output and error; a command past its
timeout, or one stopped by Ctrl-C, is stopped with what it started, and the next command gets a
new shell. Processes are looked for over the system ssh client, not through the shell itself.
"""

from __future__ import annotations

import threading

import pytest

from ripcord.verify import RipcordBackend


@pytest.fixture
def backend(connect):
    conn = connect("exec-2")
    saved = conn.command_timeout
    backend = RipcordBackend(conn, {})
    yield backend
    backend.close()
    conn.command_timeout = saved


def gone(access, pattern: str) -> bool:
    """No process on exec-2 matches pattern (a regex that does not match its own text)."""
    return access.ssh("exec-2", f"pgrep -f '{pattern}'", check=False).returncode == 1


def test_commands_share_one_shell_each_in_a_subshell_of_its_own(backend):
    home = backend.conn.run("pwd").stdout.strip()
    first = backend.run("echo $$").stdout.strip()  # $$ in a subshell: the shell's own pid
    assert backend.run("export LEFT=1; cd /; umask 077").rc == 0
    second = backend.run('echo $$; echo "${LEFT:-unset}"; pwd; umask').stdout.split()
    assert second[0] == first  # one shell for both (before: a login shell a command)
    assert second[1:3] == ["unset", home] and second[3] != "0077"  # nothing left behind


def test_each_command_has_its_own_status_output_and_error(backend):
    out = backend.run("printf 'no newline'; printf 'oops' >&2; exit 3")
    assert (out.rc, out.stdout, out.stderr) == (3, "no newline", "oops")
    assert backend.run("cat").stdout == ""  # stdin is /dev/null: cat ends at once
    assert backend.run("if then").rc == 2  # a syntax error fails that command alone
    many = backend.run("seq 1 200000")
    assert many.rc == 0 and many.stdout.splitlines()[-1] == "200000" and many.stderr == ""
    assert backend.run("echo after").stdout == "after\n"


def test_a_command_past_its_timeout_is_stopped_and_the_next_gets_a_new_shell(backend, access):
    shell = backend.run("echo $$").stdout.strip()
    backend.conn.command_timeout = 1
    out = backend.run("sleep 37 & sleep 38")
    assert out.rc == 255 and "timed out after 1s" in out.stderr
    access.wait_for(lambda: gone(access, "sleep 3[78]"), timeout=5, what="the sleeps stopped")
    again = backend.run("echo $$")
    assert again.rc == 0 and again.stdout.strip() not in ("", shell)


def test_a_shell_that_ends_fails_its_command_and_the_next_gets_a_new_one(backend):
    shell = backend.run("echo $$").stdout.strip()
    out = backend.run("kill -9 $$")
    assert out.rc == 255 and "ended" in out.stderr
    again = backend.run("echo $$")
    assert again.rc == 0 and again.stdout.strip() not in ("", shell)


def test_ctrl_c_stops_a_checks_command(backend, access):
    """Connection.stop_running (what Ctrl-C calls) stops the shell and what it runs."""
    backend.run("true")
    answers = []
    worker = threading.Thread(target=lambda: answers.append(backend.run("sleep 39; echo done")))
    worker.start()
    access.wait_for(lambda: not gone(access, "sleep 3[9]"), timeout=5, what="the sleep running")
    backend.conn.stop_running()
    worker.join(timeout=10)
    assert answers and answers[0].rc == 255 and "done" not in answers[0].stdout
    access.wait_for(lambda: gone(access, "sleep 3[9]"), timeout=5, what="the sleep stopped")
