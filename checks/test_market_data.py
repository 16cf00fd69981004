"""Market data: the cached order books are fresh (runbook scenario 3: price timestamps < 2 s;
scenario 13: one book left behind while the others update)."""

import json

import pytest

pytestmark = [pytest.mark.health, pytest.mark.restart, pytest.mark.scenario03,
              pytest.mark.scenario13]
FEED = "titan-market-data"


def test_order_books_are_fresh(host, hostvars, setting):
    """orderbook:<SYMBOL> in Redis, for each of TITAN_SYMBOLS, has a ts under check_price_max_age_s."""
    if FEED not in (hostvars.get("services") or []):
        pytest.skip("no market data feed on this host")
    limit = setting("price_max_age_s", 2.0)
    from urllib.parse import urlsplit

    redis = urlsplit(hostvars["redis_url"])
    symbols = host.check_output("set -a; . %s; set +a; printf %%s \"$TITAN_SYMBOLS\"",
                                hostvars["env_file"]).replace(",", " ").split()
    assert symbols, f"TITAN_SYMBOLS is empty in {hostvars['env_file']}"
    # One read of every book against one clock: a feed that stopped leaves them all the same age.
    out = host.run("date +%%s%%3N; redis-cli -h %s -p %s --raw MGET" + " %s" * len(symbols),
                   redis.hostname, str(redis.port or 6379), *(f"orderbook:{s}" for s in symbols))
    now, *books = out.stdout.split("\n")
    stale = {}
    for symbol, book in zip(symbols, books + [""] * len(symbols), strict=False):  # padded: all read
        if out.rc != 0 or not book.startswith("{"):
            stale[symbol] = "no order book in Redis"
            continue
        age = int(now) / 1000 - float(json.loads(book)["ts"])
        if age >= limit:
            stale[symbol] = f"{age:.1f}s old"
    assert not stale, stale_message(host.backend.hostname, limit, symbols, stale)


def stale_message(hostname: str, limit: float, symbols: list[str], stale: dict[str, str]) -> str:
    """Every book stale is a feed lost (scenario 3); some stale while the others update, books out
    of sync with the market (scenario 13): triage tells them apart by these words."""
    which = ("every order book" if len(stale) == len(symbols)
             else f"order books out of sync, {len(symbols) - len(stale)} of {len(symbols)} updating")
    return (f"stale market data on {hostname} (limit {limit:g}s), {which}: "
            + ", ".join(f"{s} {why}" for s, why in sorted(stale.items())))
