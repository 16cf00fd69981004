"""Drift: the host's .env and release are what the inventory says they should be.
"""

import pytest

pytestmark = [pytest.mark.drift, pytest.mark.deploy, pytest.mark.rollback, pytest.mark.rotate,
              pytest.mark.audit, pytest.mark.scenario19]

# Keys every host's .env needs, and those its role adds (roles told by the services it runs).
COMMON_KEYS = ("TITAN_HOST", "TITAN_ROLE", "NATS_URL", "REDIS_URL", "TITAN_DB_HOST",
               "TITAN_DB_PORT", "TITAN_DB_NAME", "TITAN_DB_USER", "TITAN_DB_PASSWORD",
               "EXCHANGE_URL", "EXCHANGE_API_KEY", "TITAN_HMAC_SECRET", "TITAN_HALT_FILE")
ROLE_KEYS = {
    "titan-brain": ("EXCHANGE_OPS_API_KEY", "TITAN_SYMBOLS"),
    "titan-market-data": ("TITAN_SYMBOLS",),
    "titan-execution": ("BRAIN_URL", "TITAN_SYMBOLS"),
}


def required_keys(hostvars) -> set[str]:
    keys = set(hostvars.get("env_required_keys") or COMMON_KEYS)
    for service in hostvars.get("services") or []:
        keys.update(ROLE_KEYS.get(service, ()))
    return keys


def test_env_has_required_keys(host, hostvars):
    """Every required key is set to a non-empty value (only key names leave the host)."""
    env = host.file(hostvars["env_file"])
    assert env.exists, f"{env.path} is missing on {host.backend.hostname}"
    names = host.check_output(r"sed -n 's/^\(export \)\{0,1\}\([A-Za-z_][A-Za-z0-9_]*\)=..*/\2/p' %s",
                              env.path).split()
    missing = sorted(required_keys(hostvars) - set(names))
    assert not missing, (f"{env.path} on {host.backend.hostname} lacks (or has empty) "
                         + ", ".join(missing))


def test_env_mode_is_600(host, hostvars):
    env = host.file(hostvars["env_file"])
    assert env.exists, f"{env.path} is missing on {host.backend.hostname}"
    assert env.mode == 0o600, (f"{env.path} on {host.backend.hostname} has mode {env.mode:o}, "
                               "not 600")


def test_current_release_is_the_inventory_version(host, hostvars):
    version = hostvars.get("titan_version")
    if not version:
        pytest.skip("no titan_version in the inventory")
    home = hostvars["titan_home"]
    current = host.file(f"{home}/current")
    assert current.is_symlink, f"{current.path} on {host.backend.hostname} is not a symlink"
    # What the link says, where it leads, and where releases/<version> leads: one command.
    target, actual, wanted = host.check_output(
        "readlink %s && readlink -f %s %s", current.path, current.path,
        f"{home}/releases/{version}").splitlines()
    assert actual == wanted, (f"{current.path} on {host.backend.hostname} points at {target}, "
                              f"not releases/{version}")
    assert host.file(wanted).is_directory, f"release {wanted} is missing on {host.backend.hostname}"
