"""How checks read what one command on a host answered (checks/): listening sockets from `ss`,
the halt state's three facts from one command, and that what cannot be read fails the check."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


def answering(stdout: str, rc: int = 0, stderr: str = ""):
    """A host whose every command answers this."""
    result = SimpleNamespace(rc=rc, stdout=stdout, stderr=stderr)
    return SimpleNamespace(run=lambda *args: result, backend=SimpleNamespace(hostname="exec-1"))


def test_listening_sockets_as_testinfra_reads_them(load_check):
    ss = ("State  Recv-Q Send-Q Local Address:Port  Peer Address:PortProcess\n"
          "LISTEN 0      128        127.0.0.1:24031      0.0.0.0:*\n"
          "LISTEN 0      128             [::]:24032         [::]:*\n"
          "LISTEN 0      128                *:24033            *:*\n"
          "ESTAB  0      0          127.0.0.1:24034    127.0.0.1:5000\n")
    assert load_check("test_ports").listening(ss) == {
        "tcp://127.0.0.1:24031", "tcp://:::24032", "tcp://0.0.0.0:24033", "tcp://:::24033"}


HALT_VARS = {"titan_home": "/t", "health_urls": {"titan-execution": "http://127.0.0.1:1/health"}}


def test_the_halt_state_is_read_from_one_answer(load_check):
    halt = load_check("test_halt")
    state = halt._read_halt_state(answering(
        '1\n2026-12-06T16:39:21Z WARN titan-execution: System HALTED\n{"halted": true}\n0'), HALT_VARS)
    assert state.halt_file_present and state.health == {"halted": True}
    assert state.last_state_line.endswith("System HALTED")
    down = halt._read_halt_state(answering("0\n\ncurl: (7) refused\n7"), HALT_VARS)
    assert not down.halt_file_present and down.health is None and down.last_state_line == ""


@pytest.mark.parametrize("stdout, rc", [("", 255), ("garbage", 0), ("1\nline\n{}", 0)])
def test_a_halt_state_that_cannot_be_read_fails_the_check(stdout, rc, load_check):
    with pytest.raises(AssertionError, match="cannot read the halt state on exec-1"):
        load_check("test_halt")._read_halt_state(answering(stdout, rc), HALT_VARS)
