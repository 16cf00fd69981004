"""ripcord installed as a tool (`pipx install .`, `pip install` of the wheel): the wheel is built,
installed into a fresh virtualenv, and run from a directory outside the checkout against the
sandbox fleet, as an SRE runs it from their own infrastructure repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from ripcord import __version__

REPO = Path(__file__).resolve().parents[2]
# What the build reads; copied so that building leaves no build/ or egg-info in the checkout.
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "ripcord", "playbooks", "checks",
           "templates", "migrations", "inventory/topology.yml", "inventory/prod.example.yml",
           "inventory/escalation.yml",
           "sandbox/titan"]
# Every task the checkout's tasks.py had before ripcord/tasks/ existed: none may go missing.
TASKS = {"sandbox.up", "sandbox.down", "sandbox.status", "play", "inventory", "verify", "drill",
         "halt", "resume", "flatten", "cancel-all", "master-arm", "breaker", "isolate", "restart",
         "recover-crash", "status", "approve"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the working tree."""
    work = tmp_path_factory.mktemp("build")
    for name in SOURCES:
        source, target = REPO / name, work / "src" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, target)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                    "--disable-pip-version-check", "-w", str(work / "dist"), str(work / "src")],
                   check=True, capture_output=True, timeout=300)
    return next((work / "dist").glob("ripcord-*.whl"))


@pytest.fixture(scope="module")
def venv(built, tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel and its pinned dependencies installed, nothing else."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"),
                              "install", "--quiet", "--disable-pip-version-check", str(built)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    return root


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """A directory outside the checkout, as an operator's infrastructure repository."""
    directory = tmp_path / "infra"
    directory.mkdir()
    assert not directory.resolve().is_relative_to(REPO)
    return directory


@pytest.fixture
def ripcord(venv, elsewhere, tmp_path):
    """ripcord(*args) -> CompletedProcess of the installed `ripcord`, run in `elsewhere` with no
    trace of the checkout (no PYTHONPATH, no user config, state in tmp_path)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RIPCORD_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "xdg"), RIPCORD_STATE_DIR=str(tmp_path / "state"),
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["ripcord", *args], cwd=elsewhere, env=env, capture_output=True,
                                text=True, timeout=180, stdin=subprocess.DEVNULL)
        assert not check or result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-2000:])
        return result

    return run


def test_the_wheel_carries_all_of_ripcord_and_its_data(built):
    names = set(zipfile.ZipFile(built).namelist())
    wanted = {str(p.relative_to(REPO)) for p in (REPO / "ripcord").rglob("*.py")}
    for directory in ("playbooks", "checks", "migrations"):
        wanted |= {f"ripcord/{directory}/{p.name}" for p in (REPO / directory).iterdir()
                   if p.suffix in (".yml", ".py", ".sql")}
    wanted |= {"ripcord/templates/README.md", "ripcord/inventory_data/topology.yml",
               "ripcord/inventory_data/escalation.yml", "ripcord/templates/postmortem.md.j2"}
    # the sandbox's stand-in Titan services, schema and seed: `ripcord sandbox.up` deploys them
    wanted |= {f"ripcord/standins/{p.name}" for p in (REPO / "sandbox" / "titan").iterdir()
               if p.suffix in (".py", ".sql") or p.name == "VERSION"}
    assert wanted <= names, f"missing from the wheel (pyproject packages?): {sorted(wanted - names)}"
    assert not any("sandbox.yml" in n or "__pycache__" in n for n in names)


def test_version_list_completion_and_config(ripcord, venv, elsewhere):
    assert "version" in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dynamic"]
    version = __version__  # pyproject reads it from ripcord/__init__.py: one place
    assert ripcord("--version").stdout.strip() == f"ripcord {version}"
    assert f"## {version}" in (REPO / "CHANGELOG.md").read_text()

    listed = {line.split()[0] for line in ripcord("--list").stdout.splitlines()[1:] if line.strip()
              and line.startswith("  ") and not line.startswith("   ")}
    checkout = subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), "--list"],
                              capture_output=True, text=True, timeout=60, check=True).stdout
    in_checkout = {line.split()[0] for line in checkout.splitlines()[1:] if line.startswith("  ")
                   and not line.startswith("   ")}
    assert TASKS <= listed and listed == in_checkout

    # the package's own data, not the checkout's
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "from ripcord.paths import data_dir; print(data_dir('checks'))"],
                           cwd=elsewhere, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(venv) and (Path(where) / "test_health.py").is_file()
    # sandbox.up from the installed package: its stand-ins, and an inventory outside the package
    sandbox = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "from pathlib import Path; from ripcord.sandbox import fleet, provision; "
                              "print(provision.STANDINS); print(fleet.default_inventory(Path('/fleet')))"],
                             cwd=elsewhere, capture_output=True, text=True, check=True).stdout.split()
    assert Path(sandbox[0]).is_relative_to(venv) and (Path(sandbox[0]) / "execution.py").is_file()
    assert sandbox[1] == "/fleet/inventory.yml"

    assert "complete -F _complete_ripcord" in ripcord("--print-completion-script", "bash").stdout
    assert "compctl" in ripcord("--print-completion-script", "zsh").stdout
    options = ripcord("--complete", "--", "ripcord", "halt", "-").stdout.split()
    assert {"-i", "-l", "--limit", "-C", "-v", "--debug"} <= set(options) and "-d" not in options

    # ansible-doc's habit: `ripcord doc` lists the modules, `ripcord doc MODULE` shows one
    assert any(line.startswith("halt ") for line in ripcord("doc").stdout.splitlines())
    page = ripcord("doc", "wait_for").stdout
    assert page.startswith("wait_for: ") and "  timeout: integer or number; default: 30" in page

    # installed, with no inventory anywhere: one line that says how to give one, exit 2
    missing = ripcord("inventory", "--list", check=False)
    assert missing.returncode == 2 and "no inventory" in missing.stderr and "-i FILE" in missing.stderr


def test_inventory_and_verify_against_the_sandbox(ripcord, fleet, elsewhere):
    inventory = str(fleet.inventory)
    listed = json.loads(ripcord("inventory", "--list", "-i", inventory).stdout)
    assert set(listed["_meta"]["hostvars"]) == {h.name for h in fleet.plan.hosts}
    ports = {name: v["ansible_port"] for name, v in listed["_meta"]["hostvars"].items()}
    assert ports == {h.name: h.ssh_port for h in fleet.plan.hosts}

    result = ripcord("verify", "-i", inventory, "--host", "sandbox", "--json")
    checks = json.loads(result.stdout)["checks"]
    assert checks["failed"] == 0 and checks["passed"] > 0
    files = {r["id"].split("::")[0] for r in checks["results"]}
    assert {"test_health.py", "test_halt.py"} <= files
    assert {h.name for h in fleet.plan.hosts} <= {r["host"] for r in checks["results"]}

    # -v: every passed check is listed too, not only the failures
    quiet = ripcord("verify", "-i", inventory, "-l", "exec-1", "--checks", "test_health.py").stdout
    detailed = ripcord("verify", "-i", inventory, "-l", "exec-1", "--checks", "test_health.py",
                       "-v").stdout
    assert "passed: [exec-1] test_health.py::" not in quiet
    assert "passed: [exec-1] test_health.py::" in detailed


def test_operator_playbooks_checks_and_inventory_from_ripcord_yaml(ripcord, fleet, access, elsewhere):
    """ripcord.yaml in the operator's repository: the inventory, their own playbook directory
    (`play NAME`) and check directory (run by verify beside the shipped checks)."""
    (elsewhere / "plays").mkdir()
    (elsewhere / "plays" / "mark.yml").write_text(
        "- hosts: exec-1\n  tasks:\n    - name: leave a mark\n"
        "      shell:\n        cmd: touch \"$TITAN_HOME/install-test-mark\"\n")
    (elsewhere / "own-checks").mkdir()
    (elsewhere / "own-checks" / "test_own.py").write_text(
        "def test_the_mark_is_there(host, hostvars):  # hostvars: the shipped checks' fixture\n"
        "    assert host.file(hostvars['titan_home'] + '/install-test-mark').exists\n")
    (elsewhere / "ripcord.yaml").write_text(
        f"inventory: {fleet.inventory}\nplaybook_dirs: plays\ncheck_dirs: [own-checks]\n"
        "operator: install-test\n")
    access.ssh("exec-1", 'rm -f "$TITAN_HOME/install-test-mark"')
    try:
        shown = json.loads(ripcord("config", "--json").stdout)["settings"]
        assert shown["operator"]["source"] == f"{elsewhere / 'ripcord.yaml'}:4"
        ripcord("play", "mark", "-l", "exec-1")
        assert access.ssh("exec-1", 'test -e "$TITAN_HOME/install-test-mark"', check=False).returncode == 0
        result = ripcord("verify", "-l", "exec-1", "--checks", "test_own.py", "--json")
        own = [r for r in json.loads(result.stdout)["checks"]["results"]]
        assert [(r["host"], r["id"], r["outcome"]) for r in own] == [
            ("exec-1", "test_own.py::test_the_mark_is_there", "passed")]
    finally:
        access.ssh("exec-1", 'rm -f "$TITAN_HOME/install-test-mark"')


def test_a_bad_ripcord_yaml_is_refused_before_any_host_is_touched(ripcord, fleet, elsewhere):
    (elsewhere / "ripcord.yaml").write_text(f"inventory: {fleet.inventory}\ncheck_dir: [typo]\n")
    log = fleet.plan.control_dir / "logs" / "sshd-exec-1.log"
    logins = log.read_text().count("Accepted publickey")
    result = ripcord("verify", "-i", str(fleet.inventory), "-l", "exec-1", check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {elsewhere / 'ripcord.yaml'}:2: unknown setting 'check_dir'")
    assert log.read_text().count("Accepted publickey") == logins  # no SSH login was made
