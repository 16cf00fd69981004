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
# Debian's `psql` is a Perl wrapper (pg_wrapper) costing ~30 ms a call before it runs the newest
# client installed (for a connection with -h); run that client directly where it is installed so.
PSQL = '"$(ls -v /usr/lib/postgresql/*/bin/psql 2>/dev/null | tail -n 1 | grep . || echo psql)"'


@pytest.fixture(scope="module")
def psql_out(host, hostvars):
    """One psql for both checks, connecting as the host's services do (each psql costs a process
    start and a login): `SELECT 1`, then the invariant counts. Each is its own -c, and
    ON_ERROR_STOP ends the run at the first error, so a reachable database whose invariants
    cannot be read still answers the first."""
    services = set(hostvars.get("services") or [])
    if not services & {"postgresql", "titan-execution"}:
        pytest.skip("neither the database nor an execution engine runs on this host")
    return host.run(
        'set -a; . %s; set +a; PGPASSWORD="$TITAN_DB_PASSWORD" PGCONNECT_TIMEOUT=5 '
        + PSQL + " -X -w -q -tA -v ON_ERROR_STOP=1 -h %s -p %s -U %s -d %s -c %s -c %s",
        hostvars["env_file"], str(hostvars.get("postgres_host", "127.0.0.1")),
        str(hostvars["postgres_port"]), hostvars.get("postgres_user", "titan"),
        hostvars.get("postgres_db", "titan"), "SELECT 1", invariant_counts(host, hostvars))


def invariant_counts(host, hostvars) -> str:
    """One SELECT of every invariant's count: on db hosts over every row; on exec hosts over the
    rows of that host's own engine."""
    on_db = "postgresql" in (hostvars.get("services") or [])
    counts = []
    for sql in INVARIANTS.values():
        table_host = "o.host" if " o " in sql else "host"
        where = "" if on_db else f" AND {table_host} = '{host.backend.hostname}'"
        counts.append("(" + sql % {"host": where} + ")")
    return "SELECT " + ", ".join(counts)


def _last_error(out) -> str:
    return (out.stderr.strip().splitlines() or ["no answer"])[-1]


def test_database_is_reachable(host, hostvars, psql_out):
    where = f"{hostvars.get('postgres_host')}:{hostvars['postgres_port']}"
    assert psql_out.stdout.splitlines()[:1] == ["1"], (
        f"PostgreSQL at {where} not reachable from {host.backend.hostname}: {_last_error(psql_out)}")


def test_row_invariants(host, hostvars, psql_out):
    name = host.backend.hostname
    assert psql_out.rc == 0, f"cannot check the invariants on {name}: {_last_error(psql_out)}"
    found = [int(n or 0) for n in psql_out.stdout.splitlines()[1].split("|")]
    broken = {what: n for what, n in zip(INVARIANTS, found, strict=True) if n}
    on_db = "postgresql" in (hostvars.get("services") or [])
    scope = "all hosts" if on_db else f"{name}'s orders and positions"
    assert not broken, f"database invariants broken ({scope}): " + ", ".join(
        f"{count} {what}" for what, count in broken.items())
