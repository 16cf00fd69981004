"""Positions after a flatten: none left in the ledger (PostgreSQL) or at the exchange.

Scenario 20's validation ("no open positions"). The database password and the exchange key are
read from env_file inside the remote shell: never on a command line or in a message.
"""

import json

import pytest

pytestmark = [pytest.mark.database, pytest.mark.exchange, pytest.mark.flatten, pytest.mark.situational,
              pytest.mark.scenario20,
              pytest.mark.scenario08]
ENGINE = "titan-execution"


@pytest.fixture(scope="module")
def symbol(hostvars):
    """The symbol the flatten closed (play var flatten_symbol), or ALL."""
    if ENGINE not in (hostvars.get("services") or []):
        pytest.skip("no execution engine on this host")
    return str(hostvars.get("flatten_symbol") or "ALL").upper()


def test_ledger_has_no_position(host, hostvars, symbol):
    """This engine's rows in `positions` are all 0 (for the flattened symbol)."""
    where = "" if symbol == "ALL" else f" AND symbol = '{symbol}'" if symbol.isalnum() else None
    assert where is not None, f"flatten_symbol {symbol!r} is not a symbol"
    out = host.run(
        'set -a; . %s; set +a; PGPASSWORD="$TITAN_DB_PASSWORD" PGCONNECT_TIMEOUT=5 '
        "psql -X -w -q -tA -F ' ' -h %s -p %s -U %s -d %s -c %s",
        hostvars["env_file"], str(hostvars.get("postgres_host", "127.0.0.1")),
        str(hostvars["postgres_port"]), hostvars.get("postgres_user", "titan"),
        hostvars.get("postgres_db", "titan"),
        f"SELECT symbol, qty FROM positions WHERE host = '{host.backend.hostname}' "
        f"AND qty <> 0{where}")
    assert out.rc == 0, f"cannot read positions from the database: {out.stderr.strip()}"
    left = out.stdout.split()
    assert not left, f"the ledger still holds positions of {host.backend.hostname}: {' '.join(left)}"


def test_exchange_account_is_flat(host, hostvars, symbol):
    """The account's positions at the exchange are 0 (for the flattened symbol), when the whole
    fleet was flattened: the account also holds the other engines' positions."""
    others = set((hostvars.get("groups") or {}).get("exec") or []) - \
        set(hostvars.get("ansible_play_hosts") or (hostvars.get("groups") or {}).get("exec") or [])
    if others:
        pytest.skip(f"a partial flatten: the account also holds {', '.join(sorted(others))}'s")
    out = host.run(
        'set -a; . %s; set +a; printf "X-API-KEY: %%s\\n" "$EXCHANGE_API_KEY" | '
        "curl -fsS --max-time 3 -H @- %s", hostvars["env_file"],
        hostvars["exchange_url"].rstrip("/") + "/api/v1/positions")
    assert out.rc == 0, f"cannot read positions at the exchange: {out.stderr.strip()}"
    open_ = {p["symbol"]: p["qty"] for p in json.loads(out.stdout)
             if p["qty"] and symbol in ("ALL", p["symbol"])}
    assert not open_, f"positions still open at the exchange: {open_}"
