"""Guards that fail closed, end to end on the sandbox, as an operator runs them.

A frozen engine is not restarted (its pid, read over ssh, stays); a host's log cannot repaint the
operator's screen (the invoke output, coloured as on a terminal); the two-person rule cannot be
walked around (the exchange's positions, read with the ops key, do not move).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import account_in_step, exchange, trading_again

REPO = Path(__file__).resolve().parents[2]
ENGINES = ("exec-1", "exec-2")


@pytest.fixture
def ripcord(ripcord):
    """The suite's ripcord, with lines wide enough that messages are matched whole."""
    def run(task: str, *args: str, extra_env: dict | None = None, **options):
        return ripcord(task, *args, extra_env={"COLUMNS": "250", **(extra_env or {})}, **options)
    return run


def engine_pid(access, host: str) -> str:
    return access.ssh(host, "supervisorctl pid titan-execution").stdout.strip()


@pytest.fixture(autouse=True)
def trading_afterwards(access):
    """Every test leaves the fleet trading: engines running (and not frozen), no halt file."""
    yield
    trading_again(access, access.env("exec-1")["TITAN_HMAC_SECRET"], ENGINES, start=("titan-execution",),
                  prepare="kill -CONT $(supervisorctl pid titan-execution) 2>/dev/null; ")


# --- the restart guard ------------------------------------------------------------------------

def test_an_engine_whose_health_does_not_answer_is_not_restarted_without_force(access, ripcord):
    pid = engine_pid(access, "exec-1")
    access.ssh("exec-1", f"kill -STOP {pid}")  # frozen: its /health no longer answers
    try:
        restart = ripcord("restart", "--host", "exec-1", "--service", "titan-execution", "--yes")
        assert restart.returncode == 1, restart.stdout + restart.stderr
        assert "it may be trading" in restart.stdout
        crash = ripcord("recover-crash", "--host", "exec-1", "--service", "titan-execution",
                        "--yes")
        assert crash.returncode == 1, crash.stdout + crash.stderr
        assert "may still be trading" in crash.stdout
        assert engine_pid(access, "exec-1") == pid
        assert access.ssh("exec-1", f"ps -o stat= -p {pid}").stdout.strip().startswith("T")
    finally:
        access.ssh("exec-1", f"kill -CONT {pid}")


# --- what the operator reads ------------------------------------------------------------------

PLANTED = r"\033[5;7m\033[9D\rall engines ok \033]0;owned\007 [bold green]FORGED[/] [/]"


def test_escape_sequences_and_markup_from_a_host_log_are_shown_inert(access, ripcord):
    log = '"$TITAN_HOME/logs/titan-execution.log"'
    access.ssh("exec-2", f"printf {shlex.quote(PLANTED + chr(92) + 'n')} >> {log}")
    assert access.log_has("exec-2", "titan-execution", "\x1b[5;7m\x1b[9D")
    access.ssh("exec-2", "supervisorctl stop titan-execution")  # the crash
    result = ripcord("recover-crash", "--host", "exec-2", "--service", "titan-execution", "--yes",
                     extra_env={"FORCE_COLOR": "1", "TERM": "xterm-256color"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\x1b[32mok\x1b[0m" in result.stdout  # coloured, as on a terminal
    for raw in ("\x1b[5;7m", "\x1b[9D", "\rall engines", "\x1b]0;owned", "\x07"):
        assert raw not in result.stdout, raw  # the planted sequences never reach the terminal
    assert "\\x1b[5;7m\\x1b[9D\\x0dall engines ok \\x1b]0;owned\\x07" in result.stdout
    assert "[bold green]FORGED[/] [/]" in result.stdout  # markup shown, not obeyed


# --- the two-person rule ----------------------------------------------------------------------

def positions(access) -> dict[str, float]:
    status, found = exchange(access, "GET", "/api/v1/positions",
                             access.env("core-1")["EXCHANGE_OPS_API_KEY"])
    assert status == 200, found
    return {p["symbol"]: float(p["qty"]) for p in found}


def test_the_two_person_rule_cannot_be_walked_around(access, ripcord, tmp_path):
    rule = tmp_path / "rule.yml"
    rule.write_text("all:\n  children:\n    exec:\n      vars:\n"
                    "        ripcord_require_approval: [flatten]\n")
    templated = tmp_path / "templated.yml"
    templated.write_text("all:\n  children:\n    exec:\n      vars:\n        guarded: [flatten]\n"
                         "        ripcord_require_approval: '{{ guarded }}'\n")
    other = tmp_path / "other.yml"  # the same hosts, one variable more: another inventory
    other.write_text("all:\n  children:\n    exec:\n      vars:\n        note: changed\n")
    copy = tmp_path / "tidy-up.yml"
    shutil.copy(REPO / "playbooks" / "flatten.yml", copy)
    flatten = lambda *a, **k: ripcord("flatten", "--host", "sandbox", "--yes", *a, **k)  # noqa: E731

    access.wait_for(lambda: any(positions(access).values()), timeout=60, interval=0.5,
                    what="the engines hold positions")  # so that a flatten would show
    assert ripcord("halt", "--host", "sandbox").returncode == 0  # nothing trades: positions still
    account_in_step(access)  # what earlier tests left beyond the ledger, no flatten would close
    before = positions(access)
    assert any(before.values()), before

    def refused(what: str, result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
        assert result.returncode == 4, f"{what}: {result.stdout}{result.stderr}"
        assert positions(access) == before, what  # nothing was flattened
        return result

    copied = refused("a copied flatten.yml", ripcord("play", str(copy), "--host", "sandbox",
                                                     "--yes", "--json", inventories=(rule,)))
    assert json.loads(copied.stdout)["approval_required"]
    refused("a templated rule", flatten(inventories=(templated,)))
    first = refused("no approval", flatten("--json", inventories=(rule,)))
    request = json.loads(first.stdout)["approval_required"]
    path = tmp_path / "approvals" / f"{request}.json"
    forged = json.loads(path.read_text())
    forged.update(approved_by="bob", approved_at=forged["requested_at"])
    path.write_text(json.dumps(forged))
    refused("a hand-edited approval", flatten("--approval", request, inventories=(rule,)))

    real = json.loads(flatten("--json", inventories=(rule,)).stdout)["approval_required"]
    assert ripcord("approve", real, operator="bob").returncode == 0
    refused("the approval with a copied playbook", ripcord(
        "play", str(copy), "--host", "sandbox", "--yes", "--approval", real, inventories=(rule,)))
    refused("the approval with another inventory",
            flatten("--approval", real, inventories=(rule, other)))

    done = flatten("--approval", real, inventories=(rule,))  # as approved: it flattens
    assert done.returncode == 0, done.stdout + done.stderr
    access.wait_for(lambda: not any(positions(access).values()), timeout=15, what="flat")
