"""Database: reachable with the host's own credentials, and the trading tables' invariants hold.

The password is read from the host's env_file inside the remote shell and handed to psql in
PGPASSWORD: it is never in a command line, in output, or in a message.
"""

import pytest

pytestmark = [pytest.mark.database, pytest.mark.restore, pytest.mark.restart,
              pytest.mark.flatten, pytest.mark.scenario04, pytest.mark.scenario01,
              pytest.mark.scenario08, pytest.mark.scenario18]

STATUSES = ("NEW", "FILLED", "CANCELED", "REJECTED")
# Each invariant: what is wrong, and SQL counting the offending rows (%(host)s: a host filter).
INVARIANTS = {
    "positions with NULL qty":
        "SELECT count(*) FROM positions WHERE qty IS NULL%(host)s",
    "orders with a status outside " + "/".join(STATUSES):
        "SELECT count(*) FROM orders WHERE status NOT IN ("
        + ",".join(f"'{s}'" for s in STATUSES) + ")%(host)s",
    "FILLED orders without a fill":
        "SELECT count(*) FROM orders o WHERE o.status = 'FILLED'"
        " AND NOT EXISTS (SELECT 1 FROM fills f WHERE f.order_id = o.id)%(host)s",
}


@pytest.fixture(scope="module")
def psql(host, hostvars):
    """psql(sql) -> CommandResult, connecting as the host's services do."""
    services = set(hostvars.get("services") or [])
    if not services & {"postgresql", "titan-execution"}:
        pytest.skip("neither the database nor an execution engine runs on this host")

    def run(sql: str):
        return host.run(
            'set -a; . %s; set +a; PGPASSWORD="$TITAN_DB_PASSWORD" PGCONNECT_TIMEOUT=5 '
            "psql -X -w -q -tA -v ON_ERROR_STOP=1 -h %s -p %s -U %s -d %s -c %s",
            hostvars["env_file"], str(hostvars.get("postgres_host", "127.0.0.1")),
            str(hostvars["postgres_port"]), hostvars.get("postgres_user", "titan"),
            hostvars.get("postgres_db", "titan"), sql)
    return run


def test_database_is_reachable(host, hostvars, psql):
    out = psql("select 1")
    where = f"{hostvars.get('postgres_host')}:{hostvars['postgres_port']}"
    assert out.rc == 0 and out.stdout.strip() == "1", (
        f"PostgreSQL at {where} not reachable from {host.backend.hostname}: "
        + (out.stderr.strip().splitlines() or ["no answer"])[-1])


def test_row_invariants(host, hostvars, psql):
    """On db hosts every row; on exec hosts the rows of that host's own engine."""
    name = host.backend.hostname
    on_db = "postgresql" in (hostvars.get("services") or [])
    counts = []  # one psql for all invariants: each psql costs a process start on the host
    for sql in INVARIANTS.values():
        table_host = "o.host" if " o " in sql else "host"
        counts.append("(" + sql % {"host": "" if on_db else f" AND {table_host} = '{name}'"} + ")")
    out = psql("SELECT " + ", ".join(counts))
    assert out.rc == 0, f"cannot check the invariants on {name}: " + (
        out.stderr.strip().splitlines() or ["no answer"])[-1]
    found = [int(n or 0) for n in out.stdout.strip().split("|")]
    broken = {what: n for what, n in zip(INVARIANTS, found, strict=True) if n}
    scope = "all hosts" if on_db else f"{name}'s orders and positions"
    assert not broken, f"database invariants broken ({scope}): " + ", ".join(
        f"{count} {what}" for what, count in broken.items())
