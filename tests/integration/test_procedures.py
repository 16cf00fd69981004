"""The runbooks' procedures end to end (`invoke halt`, `resume`, ...), as an operator runs them.

Every outcome is read back through an independent path: the engines' health endpoints (curl),
files over the system ssh client, the ledger with psql, the exchange's API with a key from the
host's .env, supervisorctl over ssh, a plain NATS client.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess

import pytest
from helpers import account_in_step, engine, exchange, settle_order, trading_again

ENGINES = ("exec-1", "exec-2")
STRATEGIES = ("titan-scavenger", "titan-hunter", "titan-sentinel")


def supervisor_state(access, host: str, service: str) -> str:
    out = access.ssh(host, f"supervisorctl status {service}", check=False).stdout.split()
    return out[1] if len(out) > 1 else "?"


@pytest.fixture(autouse=True)
def trading_afterwards(access, secret):
    """Every test leaves the fleet trading: no fault, no halt file, services up, signed NORMAL."""
    yield
    access.ssh("db-1", "supervisorctl start nats", check=False)
    trading_again(access, secret, ENGINES, start=("titan-execution", *STRATEGIES), connect_timeout=20)


@contextlib.contextmanager
def hand_order(access, key: str, client_id: str | None = None):
    """A LIMIT order placed by hand, asked to rest for a minute (the sandbox exchange's
    fillDelayMs; its default is ~2 s whatever the price), so that a slow run cannot see it fill
    before the step under test; any fill is offset afterwards, so the account stays in step
    with the engines' ledger."""
    body = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": 0.01, "price": 1000,
            "fillDelayMs": 60000,
            **({"clientOrderId": client_id} if client_id else {})}
    status, order = exchange(access, "POST", "/api/v1/order", key, body)
    assert status == 201, order
    try:
        yield order
    finally:
        settle_order(access, key, order)


def halt_json(result: subprocess.CompletedProcess) -> dict[str, dict]:
    """Per host: the halt task's result record (msg names the rung)."""
    payload = json.loads(result.stdout)
    return {r["host"]: r for r in payload["results"] if r["module"] == "halt"}


# --- halt: each rung of the ladder --------------------------------------------------------------

def test_halt_on_a_healthy_fleet_is_acknowledged_on_nats_by_every_engine(access, ripcord):
    result = ripcord("halt", "--host", "sandbox", "--reason", "drill", "--json")
    assert result.returncode == 0, result.stderr
    rungs = halt_json(result)
    assert set(rungs) == set(ENGINES)
    for host in ENGINES:
        assert "halted by NATS" in rungs[host]["msg"], rungs[host]
        state = engine(access, host)
        assert state["halted"] and "nats" in state["halt_source"]
        halt_file = access.ssh(host, 'cat "$TITAN_HOME/system.halt"').stdout
        assert "reason=drill" in halt_file and "operator=alice" in halt_file
        assert access.log_has(host, "titan-execution", "System HALTED")
    payload = json.loads(result.stdout)
    assert payload["checks"]["failed"] == 0 and payload["checks"]["passed"] >= 2


def test_with_nats_stopped_the_halt_file_halts_every_engine(access, ripcord):
    access.ssh("db-1", "supervisorctl stop nats")
    result = ripcord("halt", "--host", "sandbox", "--json")
    assert result.returncode == 0, result.stderr
    records = halt_json(result)
    assert set(records) == set(ENGINES), records
    for host, record in records.items():
        assert "halted by the halt file" in record["msg"], record
        assert "NATS rung failed" in record["msg"] and "connection refused" in record["msg"]
        state = engine(access, host)
        assert state["halted"] and state["halt_source"] == "file"


def test_an_engine_deaf_to_nats_is_halted_by_the_file(access, ripcord):
    access.ssh("exec-1", 'touch "$TITAN_HOME/state/faults/deaf_nats"')
    result = ripcord("halt", "--host", "sandbox", "--json")
    assert result.returncode == 0, result.stderr
    rungs = halt_json(result)
    assert set(rungs) == set(ENGINES), rungs
    assert "halted by the halt file" in rungs["exec-1"]["msg"]
    assert "no NATS answer from exec-1" in rungs["exec-1"]["msg"]
    assert "halted by NATS" in rungs["exec-2"]["msg"]
    assert engine(access, "exec-1")["halt_source"] == "file"


def test_with_nats_and_the_file_both_ignored_the_service_is_stopped(access, ripcord):
    access.ssh("exec-1", 'touch "$TITAN_HOME/state/faults/deaf_nats" '
                         '"$TITAN_HOME/state/faults/ignore_halt_file"')
    result = ripcord("halt", "--host", "sandbox", "--deadline", "1.5", "--json")
    assert result.returncode == 0, result.stderr + result.stdout
    rungs = halt_json(result)
    assert set(rungs) == set(ENGINES), rungs
    assert "stopping its service (last resort)" in rungs["exec-1"]["msg"], rungs["exec-1"]
    assert supervisor_state(access, "exec-1", "titan-execution") == "STOPPED"
    assert "halted by NATS" in rungs["exec-2"]["msg"]
    assert supervisor_state(access, "exec-2", "titan-execution") == "RUNNING"


def test_halt_under_check_changes_nothing(access, ripcord):
    result = ripcord("halt", "--host", "sandbox", "--check")
    assert result.returncode == 0, result.stderr
    for host in ENGINES:
        assert engine(access, host)["halted"] is False
        assert access.ssh(host, 'test -e "$TITAN_HOME/system.halt"', check=False).returncode == 1


def test_halt_cancels_orders_left_open_at_the_exchange(access, ripcord):
    """An order the engines do not know (placed by hand with the ops key) is cancelled too."""
    ops_key = access.env("core-1")["EXCHANGE_OPS_API_KEY"]
    with hand_order(access, ops_key) as order:
        result = ripcord("halt", "--host", "sandbox", "--json")
        assert result.returncode == 0, result.stderr
        assert exchange(access, "GET", f"/api/v1/order/{order['orderId']}", ops_key)[1]["status"] \
            == "CANCELED"
    records = halt_json(result)
    assert set(records) == set(ENGINES), records
    assert any("exchange: cancelled" in r["msg"] for r in records.values())
    assert exchange(access, "GET", "/api/v1/openOrders", ops_key) == (200, [])


def test_halting_one_engine_leaves_the_others_trading(access, ripcord):
    key = access.env("exec-2")["EXCHANGE_API_KEY"]
    with hand_order(access, key, "exec-2-not-halted") as order:
        result = ripcord("halt", "--host", "exec-1", "--json")
        assert result.returncode == 0, result.stderr
        # exec-2's order was not cancelled by exec-1's halt (it may have filled meanwhile)
        assert exchange(access, "GET", f"/api/v1/order/{order['orderId']}", key)[1]["status"] \
            != "CANCELED"
    assert set(halt_json(result)) == {"exec-1"}
    assert engine(access, "exec-1")["halted"] and not engine(access, "exec-2")["halted"]
    assert access.ssh("exec-2", 'test -e "$TITAN_HOME/system.halt"', check=False).returncode == 1


# --- resume ---------------------------------------------------------------------------------------

def test_resume_clears_the_halt_and_the_engines_trade_again(access, ripcord):
    assert ripcord("halt", "--host", "sandbox").returncode == 0
    before = {h: engine(access, h)["last_order_ts"] or 0 for h in ENGINES}
    result = ripcord("resume", "--host", "sandbox", "--yes", "--json")
    assert result.returncode == 0, result.stderr + result.stdout
    for host in ENGINES:
        state = engine(access, host)
        assert state["state"] == "NORMAL" and not state["halted"]
        assert state["last_order_ts"] > before[host]  # it traded again
        assert access.ssh(host, 'test -e "$TITAN_HOME/system.halt"', check=False).returncode == 1
        key = access.env(host)["EXCHANGE_API_KEY"]
        assert exchange(access, "GET", "/api/v1/countdownCancelAll", key)[1]["armed"] is True


def test_resume_refuses_with_the_breaker_open_and_changes_nothing(access, ripcord):
    brain = access.plan.host("core-1").service("titan-brain").health_url.rsplit("/", 1)[0]
    assert ripcord("halt", "--host", "sandbox").returncode == 0
    subprocess.run(["curl", "-sS", "-X", "POST", "-d", '{"reason": "pytest"}',
                    f"{brain}/api/breaker/trip"], check=True, capture_output=True)
    try:
        result = ripcord("resume", "--host", "sandbox", "--yes")
        assert result.returncode == 1
        assert "breaker" in result.stdout and "expected 'CLOSED', got 'OPEN'" in result.stdout
        for host in ENGINES:
            assert engine(access, host)["halted"] is True
            assert access.ssh(host, 'test -e "$TITAN_HOME/system.halt"', check=False).returncode == 0
    finally:
        subprocess.run(["curl", "-sS", "-X", "POST", "-d", '{"operatorId": "pytest"}',
                        f"{brain}/api/breaker/reset"], check=True, capture_output=True)


def test_resume_without_a_terminal_or_yes_declines(access, ripcord):
    assert ripcord("halt", "--host", "sandbox").returncode == 0
    result = ripcord("resume", "--host", "sandbox")
    assert result.returncode == 4, result.stdout + result.stderr
    assert all(engine(access, h)["halted"] for h in ENGINES)


# --- flatten, cancel-all, master arm, breaker ------------------------------------------------------

def ledger_positions(access) -> list[str]:
    env = access.env("exec-1")
    out = subprocess.run(["psql", "-X", "-w", "-tA", "-h", "127.0.0.1", "-p",
                          str(access.plan.postgres_port), "-U", "titan", "-d", "titan", "-c",
                          "SELECT host || ' ' || symbol || ' ' || qty FROM positions WHERE qty <> 0"],
                         capture_output=True, text=True, timeout=10,
                         env={**os.environ, "PGPASSWORD": env["TITAN_DB_PASSWORD"]})
    assert out.returncode == 0, out.stderr
    return out.stdout.split("\n") if out.stdout.strip() else []


def test_flatten_needs_the_typed_word_then_closes_every_position(access, ripcord):
    assert ripcord("halt", "--host", "sandbox").returncode == 0  # as the runbook: halt, flatten
    account_in_step(access)  # what earlier tests left beyond the ledger, no flatten would close
    assert ledger_positions(access)  # the seed holds positions
    declined = ripcord("flatten", "--host", "sandbox")
    assert declined.returncode == 4 and ledger_positions(access)
    result = ripcord("flatten", "--host", "sandbox", "--yes", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert ledger_positions(access) == []
    ops_key = access.env("core-1")["EXCHANGE_OPS_API_KEY"]
    status, positions = exchange(access, "GET", "/api/v1/positions", ops_key)
    assert status == 200 and all(p["qty"] == 0 for p in positions), positions
    assert json.loads(result.stdout)["checks"]["failed"] == 0


def test_cancel_all_leaves_no_order_placed_before_it(access, ripcord):
    key = access.env("exec-1")["EXCHANGE_API_KEY"]
    assert ripcord("halt", "--host", "sandbox").returncode == 0  # so the order cannot fill first
    with hand_order(access, key, "exec-1-bypytest") as order:
        result = ripcord("cancel-all", "--host", "sandbox", "--yes")
        assert result.returncode == 0, result.stdout + result.stderr
        assert exchange(access, "GET", f"/api/v1/order/{order['orderId']}", key)[1]["status"] \
            == "CANCELED"


def test_master_arm_and_breaker_go_through_the_brains_api_with_the_operator(access, ripcord):
    brain = access.plan.host("core-1").service("titan-brain").health_url.rsplit("/", 1)[0]
    assert ripcord("master-arm", "--host", "sandbox", "--disable").returncode == 0  # no prompt
    assert access.curl_json(f"{brain}/api/execution/master-arm") == {"enabled": False}
    assert ripcord("master-arm", "--host", "sandbox", "--enable").returncode == 4  # declined
    assert access.curl_json(f"{brain}/api/execution/master-arm") == {"enabled": False}
    assert ripcord("master-arm", "--host", "sandbox", "--enable", "--yes").returncode == 0
    assert access.curl_json(f"{brain}/api/execution/master-arm") == {"enabled": True}
    assert ripcord("master-arm", "--host", "sandbox").returncode == 2  # neither: invalid input

    subprocess.run(["curl", "-sS", "-X", "POST", "-d", '{"reason": "pytest"}',
                    f"{brain}/api/breaker/trip"], check=True, capture_output=True)
    result = ripcord("breaker", "--host", "sandbox", "--reset", "--yes", operator="bob")
    assert result.returncode == 0, result.stdout + result.stderr
    breaker = access.curl_json(f"{brain}/api/breaker")
    assert breaker["state"] == "CLOSED" and breaker["reset_by"] == "bob"


# --- isolate, restart, recover-crash --------------------------------------------------------------

def test_isolate_stops_the_strategies_and_no_signal_reaches_the_engines(access, ripcord):
    result = ripcord("isolate", "--host", "sandbox", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    for host in ENGINES:
        assert [supervisor_state(access, host, s) for s in STRATEGIES] == ["STOPPED"] * 3
    monitor = f"http://127.0.0.1:{access.plan.nats_monitor_port}"

    def strategies_connected() -> list[str]:  # each strategy names its connection service@host
        names = [c.get("name") or "" for c in
                 access.curl_json(f"{monitor}/connz?limit=1000")["connections"]]
        assert any(n.startswith("titan-execution@") for n in names), names  # the listing works
        return [n for n in names if n.split("@")[0] in STRATEGIES]

    access.wait_for(lambda: strategies_connected() == [], what="no strategy left on NATS")

    def nothing_to_deliver() -> bool:  # what the strategies sent before has reached the engines
        jsz = access.curl_json(f"{monitor}/jsz?consumers=true")
        consumers = [c for a in jsz["account_details"] for s in a["stream_detail"]
                     if s["name"] == "TITAN_EXECUTION" for c in s["consumer_detail"]]
        assert [c["name"] for c in consumers] == ["execution_group"], consumers
        return consumers[0]["num_pending"] == 0 and consumers[0]["num_ack_pending"] == 0

    access.wait_for(nothing_to_deliver, what="the signal queue drained")


def engine_pid(access, host: str) -> str:
    return access.ssh(host, "supervisorctl pid titan-execution").stdout.strip()


def process_start(access, host: str, service: str) -> int:
    """When the service's process started, in clock ticks since boot (/proc/<pid>/stat)."""
    pid = access.ssh(host, f"supervisorctl pid {service}").stdout.strip()
    assert pid.isdigit() and pid != "0", f"{service} on {host} has no pid: {pid!r}"
    stat = access.ssh(host, f"cat /proc/{pid}/stat").stdout
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; fields 1-2 end at the last ')'


def test_restart_refuses_a_trading_engine_then_restarts_in_dependency_order(access, ripcord):
    pids = {h: engine_pid(access, h) for h in ENGINES}
    postgres_before = process_start(access, "db-1", "postgresql")
    unknown = ripcord("restart", "--host", "sandbox", "--service", "titan-nosuch", "--yes")
    assert unknown.returncode == 2 and "'titan-nosuch' is not in the topology" in unknown.stderr
    refused = ripcord("restart", "--host", "sandbox", "--service", "postgresql", "--yes")
    assert refused.returncode == 1 and "the engine is trading" in refused.stdout
    assert {h: engine_pid(access, h) for h in ENGINES} == pids

    assert ripcord("halt", "--host", "sandbox").returncode == 0
    result = ripcord("restart", "--host", "sandbox", "--service", "postgresql", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    for host in ENGINES:
        assert engine_pid(access, host) != pids[host]
        assert engine(access, host)["status"] == "ok" and engine(access, host)["halted"]
    # each restarted service's start (clock ticks since boot, /proc/<pid>/stat field 22; the
    # hosts share one kernel): a tier only after the one it needs, and both by this restart
    started = {(h, s): process_start(access, h, s) for h, s in (
        ("db-1", "postgresql"), ("exec-1", "titan-execution"), ("exec-2", "titan-execution"))}
    assert started[("db-1", "postgresql")] > postgres_before
    assert started[("db-1", "postgresql")] < started[("exec-1", "titan-execution")], started
    assert started[("db-1", "postgresql")] < started[("exec-2", "titan-execution")], started


def test_recover_crash_shows_the_log_restarts_and_checks_health(access, ripcord):
    unknown = ripcord("recover-crash", "--host", "sandbox", "--service", "titan-nosuch", "--yes")
    assert unknown.returncode == 2 and "'titan-nosuch' is not in the topology" in unknown.stderr
    access.ssh("exec-2", "supervisorctl stop titan-execution")  # the crash
    result = ripcord("recover-crash", "--host", "sandbox", "--service", "titan-execution", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Stopping: signal received" in result.stdout  # the log's tail, shown
    assert supervisor_state(access, "exec-2", "titan-execution") == "RUNNING"
    assert engine(access, "exec-2")["status"] == "ok"
    pid = engine_pid(access, "exec-1")
    trading = ripcord("recover-crash", "--host", "exec-1", "--service", "titan-execution", "--yes")
    assert trading.returncode == 0 and "changed: [exec-1]" not in trading.stdout  # not crashed
    assert engine_pid(access, "exec-1") == pid and not engine(access, "exec-1")["halted"]


# --- the two-person rule ---------------------------------------------------------------------------

def exchange_book(access) -> tuple:
    """The exchange as its operator sees it: open orders, positions, and how many cancelAll
    calls its own log holds (a refused cancel-all must add none)."""
    ops_key = access.env("core-1")["EXCHANGE_OPS_API_KEY"]
    log = (access.plan.exchange_home / "exchange.log").read_text()
    return (exchange(access, "GET", "/api/v1/openOrders", ops_key),
            exchange(access, "GET", "/api/v1/positions", ops_key), log.count("cancelAll by "))


def test_two_person_rule(access, ripcord, tmp_path):
    rule = tmp_path / "rule.yml"
    rule.write_text("all:\n  children:\n    exec:\n      vars:\n"
                    "        ripcord_require_approval: [cancel-all]\n")
    run = lambda *a, **k: ripcord("cancel-all", "--host", "sandbox", "--yes", *a,  # noqa: E731
                                  inventories=(rule,), **k)
    assert ripcord("halt", "--host", "sandbox").returncode == 0  # the book stands still
    book = access.wait_for(lambda: (b := exchange_book(access))[0] == (200, []) and b,
                           what="no open order once halted")

    def refused(result, why: str = "") -> None:
        assert result.returncode == 4 and why in result.stderr, result.stdout + result.stderr
        assert exchange_book(access) == book  # nothing cancelled, nothing traded

    first = run("--json")
    refused(first)
    request = json.loads(first.stdout)["approval_required"]
    assert request and f"invoke approve {request}" in first.stderr

    assert ripcord("approve", request, operator="alice").returncode == 4  # not by the requester
    refused(run("--approval", request))  # not approved yet
    approved = ripcord("approve", request, operator="bob")
    assert approved.returncode == 0 and "requested by alice" in approved.stdout
    refused(run("--approval", request, operator="bob"))  # the approver cannot run it
    refused(ripcord("cancel-all", "--host", "exec-1", "--yes", "--approval", request,
                    inventories=(rule,)), "not `cancel-all --host exec-1`")
    ok = run("--approval", request)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert exchange_book(access)[2] > book[2]  # the approved run did call cancelAll
    book = exchange_book(access)
    refused(run("--approval", request))  # used once

    short = tmp_path / "short.yml"  # the lifetime is the inventory's, not the environment's
    short.write_text(rule.read_text() + "        ripcord_approval_ttl_s: 0.001\n")
    expired = json.loads(ripcord("cancel-all", "--host", "sandbox", "--yes", "--json",
                                 inventories=(short,)).stdout)["approval_required"]
    late = ripcord("approve", expired, operator="bob", extra_env={"RIPCORD_APPROVAL_TTL_S": "900"})
    assert late.returncode == 4 and "expired" in late.stderr, late.stdout + late.stderr
    kinds = [json.loads(line)["kind"] for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert kinds.count("approval-requested") == 2 and "approval-used" in kinds


@pytest.mark.parametrize("task, args", [
    ("halt", ()), ("resume", ()), ("flatten", ()), ("cancel-all", ()), ("isolate", ()),
    ("master-arm", ("--disable",)), ("breaker", ("--reset",)),
    ("restart", ("--service", "titan-console")), ("recover-crash", ("--service", "titan-brain"))])
def test_every_procedure_runs_under_check_and_changes_nothing(access, ripcord, task, args):
    brain = access.plan.host("core-1").service("titan-brain").health_url.rsplit("/", 1)[0]
    before = {h: engine_pid(access, h) for h in ENGINES}
    console = access.ssh("core-1", "supervisorctl pid titan-console").stdout
    result = ripcord(task, "--host", "sandbox", "--check", *(() if task == "halt" else ("--yes",)),
                     *args)
    assert result.returncode == 0, result.stdout + result.stderr
    for host in ENGINES:
        state = engine(access, host)
        assert not state["halted"] and engine_pid(access, host) == before[host]
        assert all(supervisor_state(access, host, s) == "RUNNING" for s in STRATEGIES)
    assert access.ssh("core-1", "supervisorctl pid titan-console").stdout == console
    assert access.curl_json(f"{brain}/api/execution/master-arm") == {"enabled": True}
