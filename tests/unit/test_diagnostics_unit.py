"""diagnostics: which values count as secrets, and the bundle holds none of them."""

import os
import tarfile
from types import SimpleNamespace

from ripcord.modules.base import TaskContext
from ripcord.modules.diagnostics import host_secrets, write_bundle
from ripcord.templating import Secrets

ENV = "TITAN_HOST=exec-1\nTITAN_DB_PASSWORD=pw-123456\nEXCHANGE_API_KEY='k ey'\nTITAN_HMAC_SECRET_PREVIOUS=\n"


def context(tmp_path, **hostvars) -> TaskContext:
    ctx = TaskContext("exec-1", {"env_file": "/h/.env", **hostvars}, None, secrets=Secrets())
    ctx.run = lambda command, **_: SimpleNamespace(rc=0, stdout=ENV, stderr="")
    return ctx


def test_secrets_are_env_values_of_secret_keys_inventory_secrets_and_the_controllers_copy(tmp_path):
    held = tmp_path / "hmac"
    held.write_text("controller-secret\n")
    os.chmod(held, 0o600)
    ctx = context(tmp_path, ansible_become_password="become-pw", titan_hmac_secret_file=str(held),
                  titan_home="/h")
    files: dict[str, str] = {}
    found = host_secrets(ctx, files)
    assert found == {"pw-123456", "k ey", "become-pw", "controller-secret", str(held)}
    assert ctx.secrets.values == found and files["env.txt"] == ENV


def test_the_bundle_is_mode_600_and_redacted(tmp_path):
    path = write_bundle(str(tmp_path / "d"), {"exec-1": ({"env.txt": ENV, "logs/x.log": "pw-123456\n"},
                                                          "exec-1: ok", set())}, "exec-1: ok\n",
                        {"pw-123456", "k ey"})
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent == tmp_path / "d"
    with tarfile.open(path) as tar:
        data = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()}
    assert set(data) == {"summary.txt", "exec-1/env.txt", "exec-1/logs/x.log"}
    assert b"TITAN_DB_PASSWORD=********" in data["exec-1/env.txt"]
    assert b"pw-123456" not in b"".join(data.values())
    assert b"k ey" not in data["exec-1/env.txt"]
