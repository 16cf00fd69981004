"""Exchange: reachable from the host, the host's API key accepted, few open orders.

The API key is read from env_file inside the remote shell and given to curl as a header on
stdin (-H @-): it is never in a command line, in output, or in a message.
"""

import json

import pytest

pytestmark = [pytest.mark.exchange, pytest.mark.restart, pytest.mark.resume,
              pytest.mark.rotate, pytest.mark.scenario02, pytest.mark.scenario07,
              pytest.mark.scenario09, pytest.mark.scenario14]
TRADERS = {"titan-execution", "titan-brain", "titan-market-data"}


def _get(host, hostvars, path: str, auth: bool = True):
    url = hostvars["exchange_url"].rstrip("/") + path
    if not auth:
        out = host.run("curl -sS --max-time 3 -w '\\n%%{http_code}' %s", url)
    else:
        out = host.run(
            'set -a; . %s; set +a; printf "X-API-KEY: %%s\\n" "$EXCHANGE_API_KEY" | '
            "curl -sS --max-time 3 -H @- -w '\\n%%{http_code}' %s", hostvars["env_file"], url)
    body, _, code = out.stdout.rpartition("\n")
    return (int(code) if code.strip().isdigit() else 0), body, out.stderr.strip()


@pytest.fixture(scope="session")
def answers(read_all):
    """Every trading host's two exchange answers: the time (no key), its own open orders."""
    return read_all(lambda host, hostvars: {
        "time": _get(host, hostvars, "/api/v1/time", auth=False),
        "orders": _get(host, hostvars, f"/api/v1/openOrders?clientPrefix={host.backend.hostname}-")}
        if TRADERS & set(hostvars.get("services") or []) else None)


@pytest.fixture(scope="module")
def exchange(host, hostvars, answers):
    if not TRADERS & set(hostvars.get("services") or []):
        pytest.skip("no service on this host talks to the exchange")
    return answers.of(host)


def test_exchange_is_reachable(host, hostvars, exchange):
    code, body, error = exchange["time"]
    assert code == 200 and "serverTime" in body, (
        f"exchange {hostvars['exchange_url']} not reachable from {host.backend.hostname}: "
        + (f"HTTP {code}" if code else error or "no answer"))


@pytest.fixture(scope="module")
def own_orders(host, exchange):
    """This host's open orders (clientOrderId prefix "<host>-"), listed with its API key as its
    engine lists them: one authenticated call that both checks below read."""
    return exchange["orders"]


def test_api_key_is_accepted(host, hostvars, own_orders):
    code, _, error = own_orders
    assert code != 0, f"exchange not reachable from {host.backend.hostname}: {error}"
    assert code == 200, (f"the exchange refuses {host.backend.hostname}'s EXCHANGE_API_KEY "
                         f"(from {hostvars['env_file']}): HTTP {code}")


@pytest.mark.scenario08  # position size violation
@pytest.mark.scenario20  # emergency market conditions
def test_open_orders_below_limit(host, hostvars, own_orders, setting):
    """This engine's open orders (clientOrderId prefix "<host>-") under check_open_orders_max."""
    if "titan-execution" not in (hostvars.get("services") or []):
        pytest.skip("no execution engine on this host")
    limit = setting("open_orders_max", 100)
    code, body, _ = own_orders
    assert code == 200, f"cannot list open orders of {host.backend.hostname}: HTTP {code}"
    count = len(json.loads(body))
    assert count < limit, (f"{count} open orders at the exchange for {host.backend.hostname}'s "
                           f"engine: the limit is {limit}")
