"""Secrets in force: each service that reads a secret (inventory `secret_readers`) runs with the
value its host's .env holds now, and no rotation was left half done (`invoke rotate`).

A service shows what it read as a fingerprint in its /health (a labelled sha256, never the
value). The .env's fingerprints are computed on the host, in its shell, so no value leaves it.
"""

import pytest

pytestmark = [pytest.mark.rotate, pytest.mark.security]
LABEL = "titan-secret-fingerprint"  # as sandbox/titan/common.py and ripcord/modules/rotate.py


def env_fingerprints(host, env_file: str, keys: list[str]) -> dict[str, str]:
    """{key: fingerprint} of the non-empty keys of env_file, computed on the host."""
    script = ("set -a; . %s >/dev/null 2>&1; set +a; for k in " + " ".join(keys) + "; do "
              'v=$(printenv "$k") || continue; [ -n "$v" ] || continue; '
              f"printf '%%s ' \"$k\"; printf '{LABEL}\\000%%s\\000%%s' \"$k\" \"$v\" | "
              "sha256sum | cut -c1-12; done")
    out = host.run(script, env_file)
    assert out.rc == 0, f"cannot read {env_file} on {host.backend.hostname}: {out.stderr.strip()}"
    return dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)


def _wanted(hostvars) -> dict[str, list[str]]:
    readers = hostvars.get("secret_readers")
    if not isinstance(readers, dict):
        return {}
    running = set(hostvars.get("services") or [])
    wanted = {k: [s for s in v if s in running] for k, v in readers.items() if isinstance(v, list)}
    return {k: v for k, v in wanted.items() if v}


@pytest.fixture(scope="session")
def fingerprints(read_all):
    """Every host's .env fingerprints of the secrets its services read, computed at once."""
    return read_all(lambda host, hostvars: env_fingerprints(host, hostvars["env_file"],
                                                             sorted(_wanted(hostvars)))
                    if _wanted(hostvars) else None)


def test_readers_run_with_the_env_secrets(host, hostvars, health, fingerprints):
    """Every reader's /health fingerprint of each secret matches the .env's: none runs an old one."""
    if not isinstance(hostvars.get("secret_readers"), dict):
        pytest.skip("no secret_readers in the inventory")
    wanted = _wanted(hostvars)
    if not wanted:
        pytest.skip("no service on this host reads a secret")
    expected = fingerprints.of(host)
    wrong = []
    for key, services in sorted(wanted.items()):
        for service in services:
            answer = health(service)
            shown = (answer or {}).get("secret_fingerprints")
            if not isinstance(shown, dict):
                wrong.append(f"{service} shows no secret_fingerprints")
            elif shown.get(key) != expected.get(key):
                wrong.append(f"{service} runs another {key} than {hostvars['env_file']} holds "
                             "(restart it, or finish the rotation: invoke rotate)")
    assert not wrong, f"on {host.backend.hostname}: " + "; ".join(wrong)


@pytest.fixture(scope="session")
def previous(read_all):
    """Every host's *_PREVIOUS keys still set in its .env (names only), read at once."""
    return read_all(lambda host, hostvars: host.run(
        r"sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*_PREVIOUS\)=..*/\1/p' %s", hostvars["env_file"]))


def test_no_previous_secret_left(host, hostvars, previous):
    """A *_PREVIOUS key still set means a rotation was left half done: the old secret is accepted."""
    out = previous.of(host)
    assert out.rc == 0, f"cannot read {hostvars['env_file']} on {host.backend.hostname}"
    left = out.stdout.split()
    assert not left, (f"{hostvars['env_file']} on {host.backend.hostname} still sets "
                      f"{', '.join(left)}: finish the rotation (invoke rotate)")
