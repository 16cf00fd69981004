"""Logs: few errors in the last minute, and the services' start lines are there."""

import datetime

import pytest

pytestmark = [pytest.mark.logs, pytest.mark.restart, pytest.mark.deploy, pytest.mark.rollback,
              pytest.mark.scenario01, pytest.mark.scenario02, pytest.mark.scenario15]

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


def test_few_errors_in_the_last_minute(host, hostvars, services, setting):
    """Fewer than check_errors_per_minute_max " ERROR " lines per service log in the last minute."""
    limit = setting("errors_per_minute_max", 5)
    logs = f"{hostvars['titan_home']}/logs"
    now = float(host.check_output("date -u +%s"))
    noisy = {}
    for service in services:
        out = host.run("tail -n %s %s", str(TAIL_LINES), f"{logs}/{service}.log")
        recent = [line for line in out.stdout.splitlines() if " ERROR " in line
                  and (ts := _stamp(line)) is not None and now - ts <= 60]
        if len(recent) >= limit:
            noisy[service] = len(recent)
    assert not noisy, f"too many errors in the last minute on {host.backend.hostname} " + (
        f"(limit {limit}): ") + ", ".join(
        f"{service}.log {count} ERROR lines" for service, count in sorted(noisy.items()))


def test_services_logged_their_start(host, hostvars):
    """Each Titan service (those with a health URL) logged "Starting <service>" (runbook:
    "Logs show 'System initialized successfully'"), in its log or a rotated one."""
    logs = f"{hostvars['titan_home']}/logs"
    titan = sorted(hostvars.get("health_urls") or {})
    if not titan:
        pytest.skip("no Titan services on this host")
    missing = []
    for service in titan:
        log = f"{logs}/{service}.log"
        found = host.run("cat %s %s.[0-9]* 2>/dev/null | grep -c -F -e %s", log, log,
                         f"Starting {service}")
        if found.stdout.strip() in ("", "0"):
            missing.append(service)
    assert not missing, (f"no start line on {host.backend.hostname} in " + ", ".join(
        f"{logs}/{s}.log ('Starting {s}')" for s in missing))
