"""ripcord.keyring: the signing secret from the kernel keyring, put there with keyctl (keyutils),
an independent path; each key has a name of its own and is unlinked afterwards."""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest

from ripcord import fasthalt
from ripcord.keyring import KeyringError, keyring_secret
from ripcord.modules.base import TaskContext
from ripcord.modules.diagnostics import host_secrets
from ripcord.modules.trading import fleet_secret
from ripcord.templating import Secrets


@pytest.fixture
def user_key():
    """add(value) -> the description of a new `user` key in @u holding value (stdin, not argv)."""
    added = []

    def add(value: str) -> str:
        description = f"ripcord-test-{os.getpid()}-{secrets.token_hex(4)}"
        key = subprocess.run(["keyctl", "padd", "user", description, "@u"], input=value, text=True,
                             capture_output=True, check=True).stdout.strip()
        added.append(key)
        return description
    yield add
    for key in added:
        subprocess.run(["keyctl", "unlink", key, "@u"], capture_output=True, check=False)


def test_the_key_the_inventory_names_is_read(user_key):
    description = user_key("s3cret-in-the-keyring\n")
    assert keyring_secret({"titan_hmac_secret_keyring": description}) == "s3cret-in-the-keyring"
    assert fasthalt.controller_secret({"titan_hmac_secret_keyring": description}) == "s3cret-in-the-keyring"
    assert keyring_secret({}) is None and keyring_secret({"titan_hmac_secret_keyring": "{{ k }}"}) is None


def test_a_missing_or_revoked_key_names_the_variable_and_the_key_not_a_value(user_key):
    description = user_key("s3cret-revoked")
    key = subprocess.run(["keyctl", "search", "@u", "user", description], capture_output=True, text=True,
                         check=True).stdout.strip()
    subprocess.run(["keyctl", "revoke", key], check=True)
    for name, why in ((description, "the key was revoked"), (f"{description}-absent", "no such key")):
        with pytest.raises(KeyringError) as raised:
            fasthalt.controller_secret({"titan_hmac_secret_keyring": name})
        said = str(raised.value)
        assert said.startswith(f"titan_hmac_secret_keyring: cannot read the kernel key user:'{name}'")
        assert why in str(raised.value) and "s3cret" not in str(raised.value)
        assert raised.value.exit_code == 2


def test_the_halt_modules_secret_and_diagnostics_take_it_and_register_it_for_redaction(user_key):
    """fleet_secret (the halt module's rung, resume, flatten, cancel-all) reads the same key, needs
    no host (no connection here), and registers the value as a secret of the run."""
    description = user_key("s3cret-for-the-run")
    ctx = TaskContext("exec-1", {"titan_hmac_secret_keyring": description}, None, secrets=Secrets())
    assert fleet_secret({"exec-1": ctx}) == "s3cret-for-the-run"
    assert "s3cret-for-the-run" in ctx.secrets.values
    seen = TaskContext("exec-1", {"titan_hmac_secret_keyring": description}, None, secrets=Secrets())
    found = host_secrets(seen, {})  # the description too: its variable's name looks like a secret's
    assert found == {"s3cret-for-the-run", description} and seen.secrets.values == found
