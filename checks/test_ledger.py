"""The ledger agrees with the exchange: the account's position in each symbol is the sum of the
engines' rows in `positions`, and each engine order is working in both or in neither (runbook
000 §2 step 5, 002 scenario 2 "Position Tracking Mismatch", 003 "Position Mismatch").

Situational: while the engines trade, orders are in flight between the two (the exchange fills
first, the engine books it a moment later). It holds on a halted, settled fleet, as `invoke
reconcile` leaves it (ripcord/modules/state.py compares the same way). Read once, on the first
engine host of the run (one account, one ledger); the secrets stay in env_file on the host.
"""

import csv
import io
import json

import pytest

from ripcord.modules.state import LEDGER_SQL, compare, describe

pytestmark = [pytest.mark.database, pytest.mark.exchange, pytest.mark.reconcile,
              pytest.mark.situational, pytest.mark.scenario08]
ENGINE = "titan-execution"


def test_ledger_matches_the_exchange(host, hostvars):
    engines = sorted((hostvars.get("groups") or {}).get("exec") or [])
    name = host.backend.hostname
    if ENGINE not in (hostvars.get("services") or []):
        pytest.skip("no execution engine on this host")
    played = [h for h in engines if h in (hostvars.get("ansible_play_hosts") or [])]
    if played and name != played[0]:  # in a play: once; else (invoke verify) on each engine host
        pytest.skip(f"one account, one ledger: compared on {played[0]}")
    out = host.run(
        'set -a; . %s; set +a; PGPASSWORD="$TITAN_DB_PASSWORD" PGCONNECT_TIMEOUT=5 '
        "psql -X -w -q --csv -P null= -h %s -p %s -U %s -d %s -c %s",
        hostvars["env_file"], str(hostvars.get("postgres_host", "127.0.0.1")),
        str(hostvars["postgres_port"]), hostvars.get("postgres_user", "titan"),
        hostvars.get("postgres_db", "titan"), LEDGER_SQL)
    assert out.rc == 0, f"cannot read the ledger: {out.stderr.strip()}"
    ledger = list(csv.DictReader(io.StringIO(out.stdout)))
    answers = []
    for path in ["/api/v1/positions", *(f"/api/v1/openOrders?clientPrefix={e}-" for e in engines)]:
        got = host.run('set -a; . %s; set +a; printf "X-API-KEY: %%s\\n" "$EXCHANGE_API_KEY" | '
                       "curl -fsS --max-time 3 --retry 3 --retry-all-errors -H @- %s",
                       hostvars["env_file"], hostvars["exchange_url"].rstrip("/") + path)
        assert got.rc == 0, f"cannot read {path} at the exchange: {got.stderr.strip()}"
        answers.append(json.loads(got.stdout))
    positions = {p["symbol"]: p["qty"] for p in answers[0]}
    found = compare(ledger, positions, [o for orders in answers[1:] for o in orders], engines)
    assert not found, ("the ledger differs from the exchange (invoke reconcile --fix aligns it): "
                       + "; ".join(describe(m) for m in found))
