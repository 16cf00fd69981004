"""Clock: the host's clock agrees with the exchange's server time (scenario 14: drift > 1 s).
"""

import json

import pytest

pytestmark = [pytest.mark.clock, pytest.mark.restart, pytest.mark.audit, pytest.mark.scenario14]


def _read_clock(host, hostvars):
    url = hostvars.get("exchange_url")
    if not url:
        return None
    return host.run("a=$(date +%%s%%3N); s=$(curl -fsS --max-time 3 %s); b=$(date +%%s%%3N); "
                    'printf "%%s %%s %%s\\n" "$a" "$b" "$s"', url.rstrip("/") + "/api/v1/time")


@pytest.fixture(scope="session")
def clocks(read_all):
    """Every host's clock around the exchange's answer, read on every host at once."""
    return read_all(_read_clock)


def test_clock_matches_exchange(host, hostvars, setting, clocks):
    """|host time - exchange serverTime| under check_clock_max_drift_s, both read on the host."""
    if not hostvars.get("exchange_url"):
        pytest.skip("no exchange_url for this host")
    limit = setting("clock_max_drift_s", 1.0)
    out = clocks.of(host)
    before, after, answer = (out.stdout.strip().split(" ", 2) + ["", ""])[:3]
    assert answer.startswith("{"), (f"cannot read the exchange's time from "
                                    f"{host.backend.hostname}: {out.stderr.strip() or 'no answer'}")
    server_ms = int(json.loads(answer)["serverTime"])
    drift = (int(before) + int(after)) / 2000 - server_ms / 1000
    assert abs(drift) < limit, (f"clock on {host.backend.hostname} is {abs(drift):.2f}s "
                                f"{'ahead of' if drift > 0 else 'behind'} the exchange's: "
                                f"the limit is {limit:g}s")
