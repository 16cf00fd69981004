"""Logs: few errors in the last minute, and the services' start lines are there."""

import datetime
import re

import pytest

pytestmark = [pytest.mark.logs, pytest.mark.restart, pytest.mark.deploy, pytest.mark.rollback,
              pytest.mark.scenario01, pytest.mark.scenario02, pytest.mark.scenario12,
              pytest.mark.scenario15]

TAIL_LINES = 20000  # enough for a minute of any service's log


def _stamp(line: str) -> float | None:
    """The ISO-8601 timestamp a Titan log line starts with (2026-11-21T08:33:07.766Z), as epoch."""
    word = line.split(" ", 1)[0]
    if "T" not in word:  # a date alone ("2026-11-21 08:33:05,954 ...") is not a Titan stamp
        return None
    try:
        stamp = datetime.datetime.fromisoformat(word.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp.replace(tzinfo=stamp.tzinfo or datetime.UTC).timestamp()


def _logs(hostvars) -> dict[str, str]:
    return {s: f"{hostvars['titan_home']}/logs/{s}.log" for s in hostvars.get("services") or []}


@pytest.fixture(scope="session")
def log_tails(read_all):
    """The host's clock, then one tail for every service log; -v heads each with "==> path
    <==" (a missing log has no section). Every host at once."""
    return read_all(lambda host, hostvars: host.run(
        "date -u +%%s && tail -v -n %s" + " %s" * len(_logs(hostvars)), str(TAIL_LINES),
        *_logs(hostvars).values()) if _logs(hostvars) else None)


@pytest.fixture(scope="session")
def start_counts(read_all):
    """For each Titan service, the start lines in its log and its rotated logs (one shell loop
    a host, every host at once)."""
    def fetch(host, hostvars):
        logs = f"{hostvars['titan_home']}/logs"
        titan = sorted(hostvars.get("health_urls") or {})
        if not titan:
            return None
        script = ("for s in" + " %s" * len(titan) + "; do "
                  'cat %s/"$s".log %s/"$s".log.[0-9]* 2>/dev/null | grep -c -F -e "Starting $s"; done')
        return host.run(script, *titan, logs, logs)
    return read_all(fetch)


def test_few_errors_in_the_last_minute(host, hostvars, services, setting, log_tails):
    """Fewer than check_errors_per_minute_max " ERROR " lines per service log in the last minute."""
    if not services:
        pytest.skip("no services on this host")
    limit = setting("errors_per_minute_max", 5)
    logs = _logs(hostvars)
    out = log_tails.of(host)
    clock, _, text = out.stdout.partition("\n")
    assert clock.isdigit(), f"cannot read the clock on {host.backend.hostname}: {out.stderr.strip()}"
    now = float(clock)
    sections = re.split(r"^==> (.*) <==$", text, flags=re.MULTILINE)  # "", path, text, ...
    tails = dict(zip(sections[1::2], sections[2::2], strict=True))
    noisy = {}
    for service, log in logs.items():
        recent = [line for line in tails.get(log, "").splitlines() if " ERROR " in line
                  and (ts := _stamp(line)) is not None and now - ts <= 60]
        if len(recent) >= limit:
            noisy[service] = len(recent)
    assert not noisy, f"too many errors in the last minute on {host.backend.hostname} " + (
        f"(limit {limit}): ") + ", ".join(
        f"{service}.log {count} ERROR lines" for service, count in sorted(noisy.items()))


def test_services_logged_their_start(host, hostvars, start_counts):
    """Each Titan service (those with a health URL) logged "Starting <service>" (runbook:
    "Logs show 'System initialized successfully'"), in its log or a rotated one."""
    logs = f"{hostvars['titan_home']}/logs"
    titan = sorted(hostvars.get("health_urls") or {})
    if not titan:
        pytest.skip("no Titan services on this host")
    counts = dict(zip(titan, start_counts.of(host).stdout.split(), strict=False))
    missing = [service for service in titan if counts.get(service, "0") == "0"]
    assert not missing, (f"no start line on {host.backend.hostname} in " + ", ".join(
        f"{logs}/{s}.log ('Starting {s}')" for s in missing))
