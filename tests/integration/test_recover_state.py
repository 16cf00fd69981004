"""recover-state end to end, and the engines' signal de-duplication it relies on.

Runbook 000 §2 resets the execution state by deleting the JetStream consumer execution_group;
the engines recreate it, which replays the stream. Outcomes are read through other paths than
ripcord's report: psql as titan (which signal each order traded), a plain NATS client
(consumer_info), the engines' health and logs, the backups on db-1 over ssh.
"""

from __future__ import annotations

import time

import pytest
from helpers import trading_again

ENGINES = ("exec-1", "exec-2")
STREAM, CONSUMER = "TITAN_EXECUTION", "execution_group"
TWICE = ("SELECT signal_id || ' ' || count(*) FROM orders WHERE signal_id IS NOT NULL "
         "GROUP BY signal_id HAVING count(*) > 1")


@pytest.fixture
def trading_afterwards(access, secret):
    """The engines running and trading after each test, whatever it left."""
    yield
    for host in ENGINES:
        access.ssh(host, "supervisorctl start titan-execution", check=False)
    for host in ENGINES:
        access.wait_for(lambda h=host: access.health(h, "titan-execution")["nats_connected"],
                        timeout=20, interval=0.2, what=f"{host} connected to NATS")
    trading_again(access, secret)


def consumer(access):
    """(consumer_info or None when it does not exist, the stream's last sequence)."""
    import nats.js.errors

    async def ask(nc):
        js = nc.jetstream()
        last = (await js.stream_info(STREAM)).state.last_seq
        try:
            return await js.consumer_info(STREAM, CONSUMER), last
        except nats.js.errors.NotFoundError:
            return None, last

    return access.nats(ask)


def nothing_pending(access, after_seq: int = 0) -> bool:
    """The consumer exists, has delivered up to after_seq, and nothing waits or awaits an ack."""
    info, _ = consumer(access)
    return (info is not None and info.delivered.stream_seq >= after_seq
            and info.num_pending == 0 and info.num_ack_pending == 0)


def traded_since(psql, since: float) -> int:
    """Orders placed for a signal since `since` (epoch seconds), by the ledger's clock."""
    return int(psql(f"SELECT count(*) FROM orders WHERE signal_id IS NOT NULL "
                    f"AND created_at > to_timestamp({since})")[0])


def duplicates_dropped(access) -> int:
    log = '"$TITAN_HOME/logs/titan-execution.log"'
    return sum(int(access.ssh(h, f"grep -c 'Duplicate signal dropped' {log}", check=False).stdout
                   or 0) for h in ENGINES)


def test_a_consumer_reset_replays_signals_and_none_is_traded_twice(access, psql):
    """Deleted while the engines trade (the runbook's step without its halt), the consumer is
    recreated from the stream's start: the signals of the last seconds come again, and each
    still makes one order (today: traded twice)."""
    started = time.time()
    access.wait_for(lambda: traded_since(psql, started - 1) >= 3, timeout=15, interval=0.5,
                    what="the engines trading signals")
    dropped = duplicates_dropped(access)
    _, last = consumer(access)

    async def delete(nc):
        return await nc.jetstream().delete_consumer(STREAM, CONSUMER)

    assert access.nats(delete)

    access.wait_for(lambda: nothing_pending(access, last), timeout=30, interval=0.5,
                    what="the consumer recreated and caught up")
    assert psql(TWICE) == [], "signals traded more than once (signal_id orders)"
    assert duplicates_dropped(access) > dropped, "no signal was delivered again: nothing was shown"


def test_recover_state_resets_the_consumer_and_trades_no_signal_twice(access, psql, ripcord,
                                                                      trading_afterwards):
    folder = f"{access.plan.db.titan_home}/backups"
    started = time.time()
    access.wait_for(lambda: traded_since(psql, started - 1) >= 2, timeout=15, interval=0.5,
                    what="the engines trading signals")
    backups = set(access.ssh("db-1", f"ls -1 {folder}").stdout.split())
    before, _ = consumer(access)
    result = ripcord("recover-state", "--host", "sandbox", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr

    info, _ = consumer(access)
    assert info is not None, "no consumer execution_group after recover-state"
    assert before is None or info.created > before.created, "the consumer was not recreated"
    # nothing pending: the brain still relays signals to the halted engines, which ack each at once
    access.wait_for(lambda: nothing_pending(access), timeout=5, interval=0.2,
                    what="the consumer with nothing pending")
    for host in ENGINES:
        health = access.health(host, "titan-execution")
        assert health["halted"] is True and health["uptime_s"] < time.time() - started, health
    made = set(access.ssh("db-1", f"ls -1 {folder}").stdout.split()) - backups
    assert any(n.endswith(".manifest.json") for n in made), made  # the snapshot, with its manifest
    assert psql(TWICE) == [], "signals traded more than once (signal_id orders)"
