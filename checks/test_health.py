"""Service health: every service with a health endpoint answers it and says "ok"."""

import pytest

pytestmark = [pytest.mark.health, pytest.mark.restart, pytest.mark.scenario01]


def test_every_service_is_healthy(host, hostvars, health):
    unhealthy = {}
    for service in (hostvars.get("health_urls") or {}):
        answer = health(service)
        if answer is None or answer.get("status") != "ok":
            unhealthy[service] = "no answer" if answer is None else answer.get("status")
    assert not unhealthy, f"unhealthy on {host.backend.hostname}: " + ", ".join(
        f"{name} ({why})" for name, why in sorted(unhealthy.items()))
