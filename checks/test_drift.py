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


@pytest.fixture(scope="module")
def env(host, hostvars) -> tuple[str, int | None, list[str] | None, str]:
    """(path, mode or None when missing, the names of the keys set non-empty or None when
    unreadable, why), in one read for the two .env checks; only key names leave the host."""
    path = hostvars["env_file"]
    out = host.run(r"stat -Lc %%a %s && sed -n 's/^\(export \)\{0,1\}\([A-Za-z_][A-Za-z0-9_]*\)=..*/\2/p' %s",
                   path, path)
    mode, _, names = out.stdout.partition("\n")
    if not mode.strip().isdigit():
        return path, None, None, out.stderr.strip()
    return path, int(mode, 8), names.split() if out.rc == 0 else None, out.stderr.strip()


def test_env_has_required_keys(host, hostvars, env):
    """Every required key is set to a non-empty value (only key names leave the host)."""
    path, mode, names, why = env
    assert mode is not None, f"{path} is missing on {host.backend.hostname}"
    assert names is not None, f"cannot read {path} on {host.backend.hostname}: {why}"
    missing = sorted(required_keys(hostvars) - set(names))
    assert not missing, (f"{path} on {host.backend.hostname} lacks (or has empty) "
                         + ", ".join(missing))


def test_env_mode_is_600(host, env):
    path, mode, _, _ = env
    assert mode is not None, f"{path} is missing on {host.backend.hostname}"
    assert mode == 0o600, f"{path} on {host.backend.hostname} has mode {mode:o}, not 600"


def test_current_release_is_the_inventory_version(host, hostvars):
    version = hostvars.get("titan_version")
    if not version:
        pytest.skip("no titan_version in the inventory")
    home = hostvars["titan_home"]
    current, wanted = f"{home}/current", f"{home}/releases/{version}"
    # One read: is it a link, is the release a directory, what the link says, where the link
    # and releases/<version> lead (each on its own line, empty when it cannot be read).
    lines = host.run("test -L %s && echo 1 || echo 0; test -d %s && echo 1 || echo 0; "
                     'printf "%%s\\n" "$(readlink %s)" "$(readlink -f %s)" "$(readlink -f %s)"',
                     current, wanted, current, current, wanted).stdout.split("\n")
    is_link, is_dir, target, actual, resolved = (lines + [""] * 5)[:5]
    assert is_link == "1", f"{current} on {host.backend.hostname} is not a symlink"
    assert actual and actual == resolved, (f"{current} on {host.backend.hostname} points at "
                                           f"{target}, not releases/{version}")
    assert is_dir == "1", f"release {resolved} is missing on {host.backend.hostname}"
