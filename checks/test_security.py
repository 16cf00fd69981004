"""Security: the .env is private, private keys are private, and no secret leaked into a log.

Secret values are read from env_file inside the remote shell and handed to grep on stdin
(-f -): they never appear in a command line, in output, or in a message; only key names do.
"""

import pytest

pytestmark = [pytest.mark.security, pytest.mark.audit, pytest.mark.rotate,
              pytest.mark.scenario14, pytest.mark.scenario18]
SECRET_KEYS = ("TITAN_HMAC_SECRET", "TITAN_HMAC_SECRET_PREVIOUS", "TITAN_DB_PASSWORD",
               "EXCHANGE_API_KEY", "EXCHANGE_OPS_API_KEY")


@pytest.fixture(scope="session")
def env_stats(read_all):
    """Every host's .env mode and owner, and its login user: one command a host, all at once."""
    return read_all(lambda host, hostvars: host.run("stat -Lc '%%a %%U' %s && id -un",
                                                    hostvars["env_file"]))


@pytest.fixture(scope="session")
def keys_found(read_all):
    """Every host's private keys under titan_home readable by group or others, found at once."""
    return read_all(lambda host, hostvars: host.run(
        r"find %s -type f \( -name 'id_*' ! -name '*.pub' -o -name '*.key' "
        r"-o -name '*_key' \) -perm /077 -printf '%%m %%p\n'", hostvars["titan_home"]))


@pytest.fixture(scope="session")
def leaks(read_all):
    """Every host's logs holding a value of SECRET_KEYS (key and path only), searched at once."""
    def fetch(host, hostvars):
        script = (
            "set -a; . %s; set +a; "
            "for k in " + " ".join(SECRET_KEYS) + "; do "
            'v=$(printenv "$k") || continue; [ ${#v} -ge 8 ] || continue; '
            'printf "%%s\\n" "$v" | grep -rlF -f - %s | sed "s|^|$k |"; '
            "done; true")
        return host.run(script, hostvars["env_file"], f"{hostvars['titan_home']}/logs")
    return read_all(fetch)


def test_env_is_private(host, hostvars, env_stats):
    """env_file: mode 600, owned by the login user."""
    path = hostvars["env_file"]
    out = env_stats.of(host)
    lines = out.stdout.split()
    assert out.rc == 0 and len(lines) == 3, f"{path} is missing on {host.backend.hostname}"
    mode, owner, login = int(lines[0], 8), lines[1], lines[2]
    user = hostvars.get("ansible_user") or login
    problems = []
    if mode != 0o600:
        problems.append(f"mode {mode:o}, not 600")
    if owner != user:
        problems.append(f"owned by {owner}, not {user}")
    assert not problems, f"{path} on {host.backend.hostname}: " + ", ".join(problems)


def test_private_keys_are_private(host, hostvars, keys_found):
    """No SSH or TLS private key under titan_home readable by group or others."""
    found = keys_found.of(host)
    exposed = found.stdout.split("\n")
    exposed = [line for line in exposed if line.strip()]
    assert not exposed, (f"private keys readable by group/others on {host.backend.hostname}: "
                         + ", ".join(f"{p} (mode {m})" for m, p in
                                     (line.split(" ", 1) for line in exposed)))


def test_no_secret_in_logs(host, hostvars, leaks):
    """No value of SECRET_KEYS from env_file appears in any log under titan_home/logs."""
    out = leaks.of(host)
    assert out.rc == 0, f"cannot search the logs on {host.backend.hostname}: {out.stderr.strip()}"
    leaks = [line.split(" ", 1) for line in out.stdout.splitlines() if " " in line]
    assert not leaks, (f"secrets in logs on {host.backend.hostname}: " + ", ".join(
        f"{key} in {path}" for key, path in leaks))
