"""file, copy, template, env, stat, fetch against the sandbox fleet.

Every effect is read back over the system ssh client (the `access` fixture), never only from the
module's own result. Each test works in a scratch directory under exec-1's titan_home, removed
afterwards.
"""

from __future__ import annotations

import hashlib
import shlex
import uuid
from pathlib import Path

import pytest

from ripcord import dotenv
from ripcord.modules import REGISTRY, TaskContext
from ripcord.templating import Secrets, Templar, resolve_vars

HOST = "exec-1"


def q(value) -> str:
    return shlex.quote(str(value))


@pytest.fixture
def call(inventory, connect, tmp_path):
    """call(module, args, check=, diff=, playbook_dir=, vars=) -> (Result, TaskContext)."""

    def run(name: str, args: dict, *, check: bool = False, diff: bool = False,
            playbook_dir: Path | None = None, extra_vars: dict | None = None):
        module = REGISTRY[name]
        problems = module.check_args(args)
        assert not problems, problems
        secrets = Secrets()
        variables = resolve_vars(Templar(), {**inventory.host_vars(HOST), **(extra_vars or {})})
        ctx = TaskContext(host=HOST, vars=variables,
                          conn=connect(HOST), check=check, diff=diff, timeout=30,
                          templar=Templar(secrets), secrets=secrets,
                          playbook_dir=str(playbook_dir or tmp_path))
        return module().run(ctx, module.with_defaults(args)), ctx

    return run


@pytest.fixture
def scratch(access, inventory):
    path = f"{inventory.host_vars(HOST)['titan_home']}/scratch-files-{uuid.uuid4().hex[:8]}"
    access.ssh(HOST, f"mkdir -p {q(path)}")
    yield path
    access.ssh(HOST, f"rm -rf -- {q(path)}")


class Host:
    """What the system ssh client sees on exec-1."""

    def __init__(self, access):
        self.access = access

    def sh(self, command: str, check: bool = True) -> str:
        return self.access.ssh(HOST, command, check=check).stdout

    def exists(self, path: str) -> bool:
        return self.access.ssh(HOST, f"test -e {q(path)}", check=False).returncode == 0

    def cat(self, path: str) -> str:
        return self.sh(f"cat -- {q(path)}")

    def mode(self, path: str) -> str:
        return self.sh(f"stat -c %a -- {q(path)}").strip()

    def mtime(self, path: str) -> str:
        return self.sh(f"stat -c %.9Y -- {q(path)}").strip()

    def sha256(self, path: str) -> str:
        return self.sh(f"sha256sum < {q(path)}").split()[0]

    def backups(self, path: str) -> list[str]:
        out = self.sh(f"ls -1 -- {q(path)}.*.bak 2>/dev/null", check=False)
        return sorted(out.split())


@pytest.fixture
def host(access) -> Host:
    return Host(access)


# --- file ---------------------------------------------------------------------------------------

def test_file_touch_creates_once_and_sets_mode(call, host, scratch):
    flag = f"{scratch}/system.flag"
    result, _ = call("file", {"path": flag, "state": "touch"}, check=True)
    assert result.changed and not result.failed
    assert not host.exists(flag), "--check created the file"

    result, _ = call("file", {"path": flag, "state": "touch"})
    assert result.changed and host.exists(flag)
    before = host.mtime(flag)
    result, _ = call("file", {"path": flag, "state": "touch"})
    assert not result.changed, result.msg
    assert host.mtime(flag) == before, "a second touch must leave the file alone"

    result, _ = call("file", {"path": flag, "state": "touch", "mode": "0640"})
    assert result.changed and host.mode(flag) == "640"
    assert not call("file", {"path": flag, "state": "touch", "mode": "0640"})[0].changed
    result, _ = call("file", {"path": flag, "mode": 0o600}, check=True)
    assert result.changed and host.mode(flag) == "640", "--check changed the mode"
    result, _ = call("file", {"path": flag, "mode": 0o600})
    assert result.changed and host.mode(flag) == "600" and result.data["mode"] == "0600"


def test_file_directory_and_absent(call, host, scratch):
    tree = f"{scratch}/a/b"
    result, _ = call("file", {"path": tree, "state": "directory", "mode": "0750"})
    assert result.changed
    assert host.sh(f"test -d {q(tree)} && stat -c %a {q(tree)}").strip() == "750"
    assert not call("file", {"path": tree, "state": "directory", "mode": "0750"})[0].changed
    host.sh(f"touch {q(tree)}/inside")

    top = f"{scratch}/a"
    result, _ = call("file", {"path": top, "state": "absent"}, check=True)
    assert result.changed and host.exists(f"{tree}/inside"), "--check removed the tree"
    result, _ = call("file", {"path": top, "state": "absent"})
    assert result.changed and not host.exists(top)
    assert not call("file", {"path": top, "state": "absent"})[0].changed


def test_file_state_file_asserts_a_file(call, host, scratch):
    result, _ = call("file", {"path": f"{scratch}/missing"})
    assert result.failed and "does not exist" in result.msg
    assert not host.exists(f"{scratch}/missing"), "state=file must not create"
    result, _ = call("file", {"path": scratch, "state": "touch"})
    assert result.failed and "is a directory" in result.msg
    result, _ = call("file", {"path": "/", "state": "absent"})
    assert result.failed and "refusing" in result.msg


# --- copy ---------------------------------------------------------------------------------------

def test_copy_content_check_idempotence_backup_diff(call, host, scratch):
    dest = f"{scratch}/app.conf"
    args = {"dest": dest, "content": "a = 1\nb = 2\n", "mode": "0600"}
    result, _ = call("copy", args, check=True, diff=True)
    assert result.changed and "+a = 1" in result.diff
    assert not host.exists(dest), "--check wrote the file"

    result, _ = call("copy", args)
    assert result.changed
    assert host.cat(dest) == "a = 1\nb = 2\n" and host.mode(dest) == "600"
    assert result.data["checksum"] == host.sha256(dest)
    mtime = host.mtime(dest)
    assert not call("copy", args)[0].changed
    assert host.mtime(dest) == mtime

    changed = {**args, "content": "a = 1\nb = 3\n", "backup": True}
    result, _ = call("copy", changed, check=True, diff=True)
    assert result.changed and "-b = 2" in result.diff and "+b = 3" in result.diff
    assert host.mtime(dest) == mtime and host.backups(dest) == []

    result, _ = call("copy", changed, diff=True)
    assert result.changed and "-b = 2" in result.diff
    assert host.cat(dest) == "a = 1\nb = 3\n"
    assert host.backups(dest) == [result.data["backup_file"]]
    assert host.cat(result.data["backup_file"]) == "a = 1\nb = 2\n"
    assert not call("copy", changed)[0].changed
    assert len(host.backups(dest)) == 1, "no change, no new backup"
    assert host.sh(f"ls -A {q(scratch)}").split() == sorted(
        ["app.conf", result.data["backup_file"].rsplit("/", 1)[1]]), "temporary files left behind"


def test_copy_keeps_an_existing_mode_and_copies_src(call, host, scratch, tmp_path):
    dest = f"{scratch}/secret.conf"
    host.sh(f"printf 'old\\n' > {q(dest)} && chmod 600 {q(dest)}")
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "secret.conf").write_bytes(b"new\x00binary\n")
    result, _ = call("copy", {"src": "secret.conf", "dest": dest}, playbook_dir=tmp_path)
    assert result.changed, result.msg
    assert host.sha256(dest) == hashlib.sha256(b"new\x00binary\n").hexdigest()
    assert host.mode(dest) == "600", "replacing a file must keep its mode"
    assert not call("copy", {"src": "secret.conf", "dest": dest}, playbook_dir=tmp_path)[0].changed

    result, _ = call("copy", {"src": "nope.conf", "dest": dest}, playbook_dir=tmp_path)
    assert result.failed and "cannot read src" in result.msg
    result, _ = call("copy", {"content": "x", "dest": f"{scratch}/no/such/dir/file"})
    assert result.failed and "No such file" in result.msg


# --- template -----------------------------------------------------------------------------------

def test_template_renders_host_vars(call, host, scratch, tmp_path, inventory):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "app.env.j2").write_text(
        "HOME_DIR={{ titan_home }}\nLEVEL={{ level }}\n{% include 'tail.j2' %}")
    (tmp_path / "templates" / "tail.j2").write_text("# end\n")
    dest = f"{scratch}/app.env"
    args = {"src": "app.env.j2", "dest": dest, "mode": "0640"}
    home = inventory.host_vars(HOST)["titan_home"]

    result, _ = call("template", args, check=True, extra_vars={"level": "info"})
    assert result.changed and not host.exists(dest)
    result, _ = call("template", args, extra_vars={"level": "info"})
    assert result.changed, result.msg
    assert host.cat(dest) == f"HOME_DIR={home}\nLEVEL=info\n# end\n"
    assert host.mode(dest) == "640"
    assert not call("template", args, extra_vars={"level": "info"})[0].changed
    assert host.backups(dest) == []

    result, _ = call("template", args, diff=True, extra_vars={"level": "debug"})
    assert result.changed and "-LEVEL=info" in result.diff and "+LEVEL=debug" in result.diff
    assert host.cat(dest).endswith("LEVEL=debug\n# end\n")
    backups = host.backups(dest)
    assert backups == [result.data["backup_file"]], "template keeps a backup by default"
    assert "LEVEL=info" in host.cat(backups[0]) and host.mode(backups[0]) == "640"


def test_template_undefined_variable_fails_without_writing(call, host, scratch, tmp_path):
    (tmp_path / "broken.j2").write_text("A={{ titan_home }}\nB={{ not_defined_anywhere }}\n")
    dest = f"{scratch}/broken"
    result, _ = call("template", {"src": "broken.j2", "dest": dest}, playbook_dir=tmp_path)
    assert result.failed and "not_defined_anywhere" in result.msg and "broken.j2" in result.msg
    assert not host.exists(dest)


# --- env ----------------------------------------------------------------------------------------

SECRET = "s3cr3t $HOME \"dq\" 'sq' \\back `tick` *glob #hash"


def _no_secret(result, *values: str) -> None:
    shown = repr((result.msg, result.diff, result.data))
    for value in values:
        assert value not in shown, "a .env value leaked into the result"


def test_env_sets_a_key_in_place_keeping_600_and_a_backup(call, host, scratch):
    envf = f"{scratch}/.env"
    host.sh(f'cp "$TITAN_HOME/.env" {q(envf)} && chmod 600 {q(envf)}')
    original = host.cat(envf)
    lines = original.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("TITAN_HMAC_SECRET="))
    key, old_value = lines[index].split("=", 1)
    assert index > 0 and len(old_value) >= 16
    others = [line.split("=", 1)[1] for line in lines
              if line.split("=", 1)[0] in ("TITAN_DB_PASSWORD", "EXCHANGE_API_KEY")]
    original_sha = host.sha256(envf)
    mtime = host.mtime(envf)

    # --check: reports, changes nothing
    result, ctx = call("env", {"path": envf, "key": key, "value": SECRET}, check=True, diff=True)
    assert result.changed and f"{key}=********" in result.diff
    assert host.sha256(envf) == original_sha and host.mtime(envf) == mtime
    assert host.backups(envf) == []
    _no_secret(result, SECRET, old_value, *others)

    # update an existing key: same line, everything else untouched
    result, ctx = call("env", {"path": envf, "key": key, "value": SECRET}, diff=True)
    assert result.changed and key in result.msg
    assert f"-{key}=********" in result.diff and f"+{key}=********" in result.diff
    _no_secret(result, SECRET, old_value, *others)
    assert SECRET in ctx.secrets.values
    after = host.cat(envf).splitlines()
    assert after[index] == f"{key}={dotenv.quote(SECRET)}", "the key must stay on its line"
    assert host.sh(f'set -a; . {q(envf)}; printf %s "${key}"') == SECRET, "sourced back as written"
    assert after[:index] + after[index + 1:] == lines[:index] + lines[index + 1:]
    assert host.mode(envf) == "600"
    backups = host.backups(envf)
    assert backups == [result.data["backup_file"]]
    assert host.sha256(backups[0]) == original_sha and host.mode(backups[0]) == "600"

    # run again: nothing to do, no new backup
    result, _ = call("env", {"path": envf, "key": key, "value": SECRET})
    assert not result.changed, result.msg
    assert host.backups(envf) == backups

    # a new key is appended; absent removes it, once
    result, _ = call("env", {"path": envf, "key": "RIPCORD_TEST_TOKEN", "value": "tok-123456"},
                     diff=True)
    assert result.changed and host.cat(envf).splitlines()[-1] == "RIPCORD_TEST_TOKEN=tok-123456"
    assert "+RIPCORD_TEST_TOKEN=********" in result.diff
    _no_secret(result, "tok-123456")
    result, _ = call("env", {"path": envf, "key": "RIPCORD_TEST_TOKEN", "state": "absent"},
                     diff=True)
    assert result.changed and "-RIPCORD_TEST_TOKEN=********" in result.diff
    assert "RIPCORD_TEST_TOKEN" not in host.cat(envf)
    assert not call("env", {"path": envf, "key": "RIPCORD_TEST_TOKEN", "state": "absent"})[0].changed
    assert host.cat(envf).splitlines() == after


def test_env_creates_600_fixes_mode_and_drops_duplicates(call, host, scratch):
    envf = f"{scratch}/new.env"
    result, _ = call("env", {"path": envf, "key": "PORT", "value": 5432}, check=True)
    assert result.changed and not host.exists(envf)
    result, _ = call("env", {"path": envf, "key": "PORT", "value": 5432})
    assert result.changed and host.cat(envf) == "PORT=5432\n" and host.mode(envf) == "600"
    assert host.backups(envf) == [], "nothing to back up for a new file"

    host.sh(f"printf 'A=1\\nPORT=1\\nB=2\\nPORT=2' > {q(envf)} && chmod 644 {q(envf)}")
    result, _ = call("env", {"path": envf, "key": "PORT", "value": 5432}, diff=True)
    assert result.changed
    assert host.cat(envf) == "A=1\nPORT=5432\nB=2\n" and host.mode(envf) == "600"
    assert host.mode(result.data["backup_file"]) == "600", "a backup of secrets must be private"
    assert result.diff.count("-PORT=********") == 2

    host.sh(f"chmod 640 {q(envf)}")
    result, _ = call("env", {"path": envf, "key": "PORT", "value": 5432})
    assert result.changed and "mode" in result.msg and host.mode(envf) == "600"
    assert not call("env", {"path": envf, "key": "PORT", "value": 5432})[0].changed

    result, _ = call("env", {"path": f"{scratch}/nope/x.env", "key": "A", "value": "b"})
    assert result.failed and "does not exist" in result.msg


# --- stat ---------------------------------------------------------------------------------------

def test_stat_reports_what_the_host_sees(call, host, scratch):
    path = f"{scratch}/data.log"
    host.sh(f"printf 'hello\\n' > {q(path)} && chmod 640 {q(path)}")
    result, _ = call("stat", {"path": path})
    assert not result.changed and not result.failed
    data = result.data
    assert data["exists"] and data["stat"]["exists"] and data["isreg"] and not data["isdir"]
    assert data["size"] == 6 and data["mode"] == "0640"
    assert data["sha256"] == host.sha256(path)
    assert abs(data["mtime"] - float(host.mtime(path))) < 1e-6

    result, _ = call("stat", {"path": scratch, "get_checksum": True})
    assert result.data["isdir"] and "sha256" not in result.data
    result, _ = call("stat", {"path": f"{scratch}/missing"})
    assert result.data["exists"] is False and not result.failed and not result.changed


# --- fetch --------------------------------------------------------------------------------------

def test_fetch_brings_files_back(call, host, scratch, tmp_path):
    src = f"{scratch}/diag.log"
    host.sh(f"printf 'line 1\\n' > {q(src)} && chmod 600 {q(src)}")
    out = tmp_path / "collected"
    local = out / HOST / src.lstrip("/")

    result, _ = call("fetch", {"src": src, "dest": "collected"}, check=True)
    assert result.changed and not local.exists() and not out.exists()
    result, _ = call("fetch", {"src": src, "dest": "collected"})
    assert result.changed and result.data["dest"] == str(local)
    assert local.read_text() == host.cat(src) and local.stat().st_mode & 0o777 == 0o600
    assert not call("fetch", {"src": src, "dest": "collected"})[0].changed

    host.sh(f"printf 'line 2\\n' >> {q(src)}")
    result, _ = call("fetch", {"src": src, "dest": "collected"}, check=True)
    assert result.changed and local.read_text() == "line 1\n", "--check wrote locally"
    result, _ = call("fetch", {"src": src, "dest": "collected"})
    assert result.changed and local.read_text() == "line 1\nline 2\n"

    result, _ = call("fetch", {"src": src, "dest": f"{tmp_path}/flat/", "flat": True})
    assert result.changed and (tmp_path / "flat" / "diag.log").read_text() == "line 1\nline 2\n"
    assert [p.name for p in (tmp_path / "flat").iterdir()] == ["diag.log"]

    result, _ = call("fetch", {"src": f"{scratch}/missing", "dest": "collected"})
    assert result.failed and "does not exist" in result.msg
    result, _ = call("fetch", {"src": f"{scratch}/missing", "dest": "collected",
                               "fail_on_missing": False})
    assert not result.failed and not result.changed


def test_awkward_names_are_quoted(call, host, scratch):
    """Spaces, quotes, $() and a leading dash reach the host as one literal name."""
    name = f"{scratch}/-it's a \"flag\" $(touch pwned) `id`;.txt"
    assert call("file", {"path": name, "state": "touch", "mode": "0600"})[0].changed
    assert call("copy", {"dest": name, "content": "x\n"})[0].changed
    assert call("stat", {"path": name})[0].data["size"] == 2
    assert call("env", {"path": name, "key": "A", "value": "1"})[0].changed
    assert host.cat(name) == "x\nA=1\n" and host.mode(name) == "600"
    listing = host.sh(f"ls -A {q(scratch)}").splitlines()
    assert "pwned" not in listing and not host.exists(f"{host.sh('echo $HOME').strip()}/pwned")
    assert call("file", {"path": name, "state": "absent"})[0].changed and not host.exists(name)
