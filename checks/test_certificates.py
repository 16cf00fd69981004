"""Certificates: every TLS certificate in the inventory is valid long enough (scenario 9)."""

import pytest

pytestmark = [pytest.mark.certificates, pytest.mark.audit, pytest.mark.rotate,
              pytest.mark.scenario09]


def test_certificates_valid_long_enough(host, hostvars, setting):
    """Each path in tls_certificates is valid for more than check_cert_min_days (runbook: 30)."""
    paths = list(hostvars.get("tls_certificates") or [])
    if not paths:
        pytest.skip("no tls_certificates for this host")
    days = setting("cert_min_days", 30)
    problems = []
    for path in paths:
        out = host.run("openssl x509 -noout -enddate -checkend %s -in %s", str(days * 86400), path)
        end = next((line.split("=", 1)[1] for line in out.stdout.splitlines()
                    if line.startswith("notAfter=")), None)
        if end is None:
            problems.append(f"{path} unreadable ({(out.stderr.strip().splitlines() or ['?'])[0]})")
        elif out.rc != 0:
            problems.append(f"{path} expires {end}")
    assert not problems, (f"certificates on {host.backend.hostname} not valid for {days} more "
                          "days: " + "; ".join(problems))
