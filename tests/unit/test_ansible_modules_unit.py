"""Ansible's modules in ripcord: the ansible.builtin. prefix, refused package managers, lineinfile
against Ansible's own lineinfile (the oracle: the same edit through both on local files), pause,
ping, and the systemd/service_facts command lines and readings per service manager."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from ansible.modules import lineinfile as ansible_lineinfile

from ripcord import procedures
from ripcord.connection import CommandResult
from ripcord.errors import DeclinedError
from ripcord.execute import confirmer
from ripcord.modules import REGISTRY, TaskContext
from ripcord.modules.ansiblecompat import list_services
from ripcord.modules.base import ANSIBLE_NAMES, PACKAGE_MANAGERS
from ripcord.modules.lineinfile import absent, present, split_lines
from ripcord.playbook import PlaybookError, load_playbook
from ripcord.services import DockerCompose, Pm2, Supervisor, Systemd
from ripcord.templating import Secrets, Templar

# --- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["ansible.builtin.", "ansible.legacy."])
def test_ansible_prefix_resolves_to_ripcords_module(prefix):
    for name in ANSIBLE_NAMES:
        assert prefix + name in REGISTRY
        assert REGISTRY[prefix + name] is REGISTRY[name]
    assert REGISTRY["ansible.builtin.systemd_service"] is REGISTRY["systemd"]
    # ripcord's own modules are not Ansible's: no prefix makes them so
    assert "ansible.builtin.titan_command" not in REGISTRY
    assert not any(name.startswith("ansible.") for name in REGISTRY)


def test_prefixed_modules_validate_as_the_plain_ones(tmp_path):
    book = tmp_path / "p.yml"
    book.write_text(
        "- hosts: all\n  tasks:\n"
        "    - ansible.builtin.command: echo hi\n"
        "    - ansible.builtin.lineinfile: {path: /tmp/x, line: a}\n"
        "    - ansible.legacy.ping:\n"
        "    - ansible.builtin.lineinfile: {path: /tmp/x, line: a, bogus: 1}\n")
    with pytest.raises(PlaybookError) as caught:
        load_playbook(book)
    assert [str(p) for p in caught.value.problems] == [
        f"{book}:6: module 'ansible.builtin.lineinfile': unknown argument 'bogus' (expected: "
        "backrefs, backup, create, dest, firstmatch, insertafter, insertbefore, line, mode, path, "
        "regexp, search_string, state)"]


@pytest.mark.parametrize("name", [*PACKAGE_MANAGERS, "ansible.builtin.yum"])
def test_package_managers_are_refused_with_the_reason(tmp_path, name):
    book = tmp_path / "p.yml"
    book.write_text(f"- hosts: all\n  tasks:\n    - debug: {{msg: x}}\n    - {name}: name=nginx\n")
    with pytest.raises(PlaybookError) as caught:
        load_playbook(book)
    assert caught.value.exit_code == 2
    assert [str(p) for p in caught.value.problems] == [
        f"{book}:4: module {name!r}: not supported by ripcord: package managers: ripcord "
        "remediates incidents; install packages with your configuration management"]
    assert name not in list(REGISTRY)  # refused, never offered as a known module


@pytest.mark.parametrize("name, reason", [
    ("ansible.builtin.user", "configuration management: ripcord remediates incidents"),
    ("cron", "configuration management"),
    ("blockinfile", "this file edit: use lineinfile for a line, template or copy for the whole file"),
    ("reboot", "rebooting hosts: ripcord restarts services (service, systemd, restart), never machines"),
])
def test_other_ansible_modules_ripcord_will_not_run_say_why(tmp_path, name, reason):
    book = tmp_path / "p.yml"
    book.write_text(f"- hosts: all\n  tasks:\n    - {name}: {{name: x}}\n")
    with pytest.raises(PlaybookError) as caught:
        load_playbook(book)
    [problem] = caught.value.problems
    assert str(problem).startswith(f"{book}:3: module {name!r}: not supported by ripcord: {reason}")


def test_prefixed_and_systemd_tasks_count_as_the_procedures_acts():
    """The two-person rule sees through the spelling: ansible.builtin.uri POST is the breaker's
    act, and a systemd restart is recover-crash's service restart."""
    def act(module, args):
        return procedures.act(SimpleNamespace(module=module, args=args))
    assert act("ansible.builtin.uri", {"url": "http://x", "method": "POST"}) == ("uri", "POST")
    assert act("systemd", {"name": "titan-execution", "state": "restarted"}) == \
        ("service", "restarted")
    assert act("ansible.builtin.systemd_service", {"name": "x", "state": "stopped"}) == \
        ("service", "stopped")
    assert act("ansible.builtin.command", {"cmd": "x"}) is None


# --- lineinfile: the edit, against Ansible's -------------------------------------------------


class _Exit(Exception):
    def __init__(self, **kw):
        self.kw = kw


class AnsibleStandIn:
    """Just enough of AnsibleModule for lineinfile's present()/absent() on a local file."""

    def __init__(self, tmpdir: Path):
        self.tmpdir = str(tmpdir)
        self.check_mode = False
        self._diff = False
        self.params = {"validate": None, "unsafe_writes": False}

    def fail_json(self, **kw):
        raise _Exit(failed=True, **kw)

    def exit_json(self, **kw):
        raise _Exit(**kw)

    def atomic_move(self, src, dest, unsafe_writes=False):
        os.replace(src, dest)

    def load_file_common_arguments(self, params):
        return {}

    def set_fs_attributes_if_different(self, args, changed, diff=None):
        return False

    def backup_local(self, dest):
        return ""

    def warn(self, msg):
        pass


def ansible_edit(tmp_path: Path, content: bytes, params: dict) -> tuple[bytes, bool, str]:
    """Ansible's lineinfile on a local file holding content: (content after, changed, msg)."""
    work = tmp_path / "ansible"
    work.mkdir(exist_ok=True)
    target = work / "file"
    target.write_bytes(content)
    module = AnsibleStandIn(work)
    try:
        if params.get("state", "present") == "present":
            ins_bef, ins_aft = params.get("insertbefore"), params.get("insertafter")
            if ins_bef is None and ins_aft is None:
                ins_aft = "EOF"
            ansible_lineinfile.present(module, str(target), params.get("regexp"),
                                       params.get("search_string"), params["line"], ins_aft, ins_bef,
                                       False, False, params.get("backrefs", False),
                                       params.get("firstmatch", False))
        else:
            ansible_lineinfile.absent(module, str(target), params.get("regexp"),
                                      params.get("search_string"), params.get("line"), False)
    except _Exit as done:
        assert not done.kw.get("failed"), done.kw
        return target.read_bytes(), done.kw["changed"], done.kw["msg"]
    raise AssertionError("Ansible's lineinfile did not exit")


def ripcord_edit(content: bytes, params: dict) -> tuple[bytes, bool, str]:
    lines = split_lines(content)
    if params.get("state", "present") == "present":
        kwargs = {k: params[k] for k in ("regexp", "search_string", "insertafter", "insertbefore",
                                         "backrefs", "firstmatch") if k in params}
        after, msg = present(lines, params["line"], **kwargs)
    else:
        after, found = absent(lines, line=params.get("line"), regexp=params.get("regexp"),
                              search_string=params.get("search_string"))
        msg = f"{found} line(s) removed" if found else ""
    result = b"".join(after)
    return result, result != content, msg


CONF = b"# settings\nport=8080\n#max_conn=10\nhost=0.0.0.0\n[section]\nport=9090\n"
CASES = [
    {"line": "port=8081", "regexp": "^port="},
    {"line": "port=8081", "regexp": "^port=", "firstmatch": True},
    {"line": "max_conn=20", "regexp": "^#?max_conn="},
    {"line": "timeout=5"},
    {"line": "timeout=5", "insertafter": "^host="},
    {"line": "timeout=5", "insertafter": "^port=", "firstmatch": True},
    {"line": "timeout=5", "insertbefore": r"^\[section\]"},
    {"line": "timeout=5", "insertbefore": "^port=", "firstmatch": True},
    {"line": "timeout=5", "insertbefore": "BOF"},
    {"line": "timeout=5", "insertafter": "BOF"},
    {"line": "timeout=5", "insertafter": "^nomatch"},
    {"line": "timeout=5", "insertbefore": "^nomatch"},
    {"line": "host=0.0.0.0"},
    {"line": "host=0.0.0.0", "insertbefore": "BOF"},
    {"line": "# settings", "insertafter": "^port"},
    {"line": r"port=\g<1>1", "regexp": r"^port=(\d+)", "backrefs": True},
    {"line": r"x=\1", "regexp": r"^nomatch(.*)", "backrefs": True},
    {"line": "listen=1", "search_string": "0.0.0.0"},
    {"line": "port=8080", "regexp": "^port=8080$"},
    {"state": "absent", "regexp": "^port="},
    {"state": "absent", "line": "host=0.0.0.0"},
    {"state": "absent", "search_string": "max_conn"},
    {"state": "absent", "regexp": "^nothing"},
]


@pytest.mark.parametrize("content", [CONF, CONF.rstrip(b"\n"), b"", b"a\r\nport=1\r\n"])
@pytest.mark.parametrize("params", CASES, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()))
def test_lineinfile_edits_as_ansible_does(tmp_path, content, params):
    assert ripcord_edit(content, params) == ansible_edit(tmp_path, content, params)


def test_lineinfile_edits_as_ansible_does_on_random_files(tmp_path):
    """Random small files and arguments (seeded: the same every run), both edits compared."""
    rng = random.Random(17)
    words = ["a", "b", "port=1", "port=2", "#c", ""]
    patterns = ["^port", "^a$", "b", "^#", "^zz", "="]
    for _ in range(400):
        content = "".join(rng.choice(words) + rng.choice(["\n", "\n", ""])
                          for _ in range(rng.randint(0, 6))).encode()
        params: dict = {"line": rng.choice(words[:5] + ["new"])}
        if rng.random() < 0.2:
            params = {"state": "absent", rng.choice(["line", "regexp", "search_string"]):
                      rng.choice(patterns if rng.random() < 0.5 else words[:5])}
        else:
            if rng.random() < 0.5:
                params["regexp"] = rng.choice(patterns)
            where = rng.choice([None, "insertafter", "insertbefore"])
            if where:
                params[where] = rng.choice([*patterns, "BOF", "EOF" if where == "insertafter" else "BOF"])
            if rng.random() < 0.3:
                params["firstmatch"] = True
        assert ripcord_edit(content, params) == ansible_edit(tmp_path, content, params), \
            (content, params)


# --- lineinfile: the module on a local "host" ------------------------------------------------


class LocalConn:
    """A host that is this machine: /bin/sh for commands, the filesystem for SFTP."""

    def __init__(self):
        self.commands: list[str] = []

    def run(self, command, timeout=None, stdin=None):
        self.commands.append(command)
        out = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                             input=stdin, timeout=30)
        return CommandResult(out.returncode, out.stdout, out.stderr)

    def read(self, path):
        return Path(path).read_bytes()

    def write(self, path, data, mode=0o644):
        tmp = Path(f"{path}.tmp-test")
        tmp.write_bytes(data)
        tmp.chmod(mode)
        os.replace(tmp, path)


def run_module(name: str, args: dict, *, check=False, diff=False, conn=None, vars=None):
    conn = conn or LocalConn()
    ctx = TaskContext(host="h1", vars=vars or {}, conn=conn, check=check, diff=diff,
                      templar=Templar(), secrets=Secrets())
    assert REGISTRY[name].check_args(args) == []
    return REGISTRY[name]().run(ctx, REGISTRY[name].with_defaults(args))


def test_lineinfile_module_is_idempotent_and_honest_under_check(tmp_path):
    path = tmp_path / "app.conf"
    path.write_bytes(CONF)
    args = {"path": str(path), "regexp": "^port=", "line": "port=9999", "backup": True}
    checked = run_module("lineinfile", args, check=True, diff=True)
    assert checked.changed and path.read_bytes() == CONF  # --check wrote nothing
    assert "-port=9090\n+port=9999\n" in checked.diff
    first = run_module("lineinfile", args)
    expected, _, _ = ansible_edit(tmp_path, CONF, args)
    assert first.changed and first.msg == "line replaced" and path.read_bytes() == expected
    assert Path(first.data["backup"]).read_bytes() == CONF
    second = run_module("lineinfile", args)
    assert not second.changed and path.read_bytes() == expected
    assert not run_module("lineinfile", args, check=True).changed


def test_lineinfile_creates_only_when_asked_and_keeps_or_sets_the_mode(tmp_path):
    path = tmp_path / "new" / "dir" / "f.conf"
    refused = run_module("lineinfile", {"path": str(path), "line": "a=1"})
    assert refused.failed and refused.msg == f"Destination {path} does not exist !"
    assert run_module("lineinfile", {"path": str(path), "line": "a=1", "create": True},
                      check=True).changed and not path.parent.exists()
    made = run_module("lineinfile", {"path": str(path), "line": "a=1", "create": True})
    assert made.changed and path.read_bytes() == b"a=1\n" and (path.stat().st_mode & 0o777) == 0o644
    number = run_module("lineinfile", {"path": str(path), "line": 8080})  # "{{ port }}" rendered
    assert number.changed and path.read_bytes() == b"a=1\n8080\n"
    assert not run_module("lineinfile", {"path": str(path), "line": 8080, "state": "absent",
                                         "regexp": "^zz"}).changed
    moded = run_module("lineinfile", {"path": str(path), "line": "a=1", "mode": "0600"})
    assert moded.changed and (path.stat().st_mode & 0o777) == 0o600 and path.read_bytes() == b"a=1\n8080\n"
    assert not run_module("lineinfile", {"path": str(path), "line": "a=1", "mode": "0600"}).changed


def test_lineinfile_writes_through_a_symlink_and_removes_lines(tmp_path):
    target = tmp_path / "real.conf"
    target.write_bytes(CONF)
    link = tmp_path / "link.conf"
    link.symlink_to(target)
    gone = run_module("lineinfile", {"dest": str(link), "regexp": "^port=", "state": "absent"})
    assert gone.changed and gone.msg == "2 line(s) removed" and gone.data["found"] == 2
    assert link.is_symlink() and b"port" not in target.read_bytes()
    assert not run_module("lineinfile", {"dest": str(link), "regexp": "^port=",
                                         "state": "absent"}).changed
    missing = run_module("lineinfile", {"path": str(tmp_path / "nope"), "line": "x",
                                        "state": "absent"})
    assert not missing.changed and not missing.failed and missing.msg == "file not present"


@pytest.mark.parametrize("args, expected", [
    ({"path": "/x"}, "'line' is required with state=present"),
    ({"path": "/x", "state": "absent"}, "one of 'line', 'search_string' or 'regexp' is required"),
    ({"path": "/x", "line": "a", "backrefs": True}, "'regexp' is required with backrefs=true"),
    ({"path": "/x", "line": "a", "insertafter": "a", "insertbefore": "b"}, "mutually exclusive"),
    ({"path": "/x", "line": "a", "regexp": "(unclosed"}, "argument 'regexp': not a regular expr"),
    ({"line": "a"}, "exactly one of 'path' or its alias 'dest' is required"),
    ({"path": "/x", "line": "a", "mode": 644}, "644 reads as a decimal number"),
])
def test_lineinfile_arguments_are_checked_before_any_host(args, expected):
    assert any(expected in p for p in REGISTRY["lineinfile"].check_args(args)), \
        REGISTRY["lineinfile"].check_args(args)


# --- ping -----------------------------------------------------------------------------------------


def test_ping_answers_pong_through_the_hosts_shell():
    conn = LocalConn()
    result = run_module("ping", {}, conn=conn)
    assert result.registered()["ping"] == "pong" and not result.changed
    assert conn.commands == ["printf '%s' pong"]
    assert run_module("ping", {"data": "it's $HOME"}).data["ping"] == "it's $HOME"
    broken = SimpleNamespace(run=lambda command, **kw: CommandResult(127, "", "sh: not found"))
    assert run_module("ping", {}, conn=broken).failed


# --- pause ----------------------------------------------------------------------------------------


def pause(args: dict, confirm=None):
    contexts = {h: TaskContext(host=h, vars={}, conn=None, confirm=confirm) for h in ("a", "b")}
    problems = REGISTRY["pause"].check_args(args)
    assert problems == []
    return REGISTRY["pause"]().run_fleet(contexts, REGISTRY["pause"].with_defaults(args))


def test_pause_waits_once_for_the_batch():
    results = pause({"seconds": 0.2})
    assert set(results) == {"a", "b"}
    assert all(not r.failed and r.data["stdout"] == "Paused for 0.2 seconds" for r in results.values())
    assert REGISTRY["pause"].fleet and REGISTRY["pause"].on_controller


def test_pause_ends_at_ctrl_c_and_passes_it_on():
    """A 10-minute pause ends as soon as Ctrl-C comes; the handler before it still hears of it."""
    heard: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: heard.append(signum))
    try:
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        results = pause({"minutes": 10})
        timer.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert heard == [signal.SIGINT]
    assert all(r.failed and "interrupted" in r.msg for r in results.values())


def test_a_ctrl_c_held_by_the_runner_as_the_pause_begins_ends_it():
    """One that came between the runner's deferral and the pause's own handler is not lost."""
    from ripcord.taskrun import _deferred_interrupt

    with _deferred_interrupt() as came:
        os.kill(os.getpid(), signal.SIGINT)  # delivered to the deferral before the pause starts
        assert came == [True]
        results = pause({"minutes": 10})
    assert all(r.failed and "interrupted" in r.msg for r in results.values())


def test_pause_prompt_without_terminal_declines_like_confirm(monkeypatch):
    monkeypatch.setattr("sys.stdin", SimpleNamespace(isatty=lambda: False))
    with pytest.raises(DeclinedError, match="no terminal to ask on"):
        pause({"prompt": "Check the dashboards"}, confirm=confirmer(False, None))
    results = pause({"prompt": "Check the dashboards"}, confirm=confirmer(True, None))
    assert all(not r.failed and r.data["user_input"] == "" for r in results.values())
    with pytest.raises(DeclinedError, match="declined: Go on"):
        pause({"prompt": "Go on"}, confirm=lambda prompt, typed: False)


@pytest.mark.parametrize("args, expected", [
    ({"seconds": 1, "minutes": 1}, "mutually exclusive"),
    ({"seconds": "soon"}, "expected a number"),
    ({"minutes": -1}, "expected a number"),
])
def test_pause_arguments(args, expected):
    assert any(expected in p for p in REGISTRY["pause"].check_args(args))


# --- systemd and service_facts --------------------------------------------------------------------


class Host:
    """Recorded answers per command line (the rest answer rc 0, empty), and the lines run."""

    def __init__(self, answers: dict[str, tuple[int, str]]):
        self.answers = answers
        self.commands: list[str] = []

    def run(self, command, timeout=None, stdin=None):
        self.commands.append(command)
        rc, out = self.answers.get(command, (0, ""))
        return CommandResult(rc, out, "")


SHOW = "systemctl show -p LoadState,ActiveState,SubState --no-pager nginx"


def systemd(args: dict, answers: dict, check=False, become=False):
    host = Host(answers)
    vars = {"service_manager": "systemd", "ripcord_become": become}
    return run_module("systemd", args, conn=host, check=check, vars=vars), host.commands


def test_systemd_enables_and_restarts_through_systemctl():
    answers = {SHOW: (0, "LoadState=loaded\nActiveState=active\nSubState=running\n"),
               "systemctl is-enabled nginx": (1, "disabled\n")}
    result, commands = systemd({"name": "nginx", "state": "restarted", "enabled": True,
                                "daemon_reload": True}, answers, become=True)
    assert not result.failed and result.changed, result.msg
    assert commands == ["sudo -n systemctl daemon-reload", "systemctl is-enabled nginx",
                        "sudo -n systemctl enable nginx", SHOW, "sudo -n systemctl restart nginx",
                        SHOW]
    checked, commands = systemd({"name": "nginx", "enabled": True}, answers, check=True)
    assert checked.changed and commands == ["systemctl is-enabled nginx"]
    assert checked.msg == "would enable nginx"
    answers["systemctl is-enabled nginx"] = (0, "enabled\n")
    same, _ = systemd({"name": "nginx", "enabled": True, "state": "started"}, answers)
    assert not same.changed and not same.failed


def test_systemd_reloads_a_running_unit_and_starts_a_stopped_one():
    running = {SHOW: (0, "LoadState=loaded\nActiveState=active\nSubState=running\n")}
    result, commands = systemd({"name": "nginx", "state": "reloaded"}, running)
    assert result.changed and "systemctl reload nginx" in commands
    stopped = {SHOW: (0, "LoadState=loaded\nActiveState=inactive\nSubState=dead\n")}
    result, commands = systemd({"name": "nginx", "state": "reloaded"}, stopped)
    assert "systemctl start nginx" in commands and "systemctl reload nginx" not in commands


@pytest.mark.parametrize("args, expected", [
    ({"name": "titan-hunter", "enabled": True}, "enabled: supervisor on h1 has no such setting"),
    ({"name": "titan-hunter", "daemon_reload": True}, "daemon_reload: supervisor on h1"),
    ({"name": "titan-hunter", "state": "reloaded"}, "supervisor cannot reload titan-hunter"),
])
def test_systemd_refuses_what_supervisor_cannot_do(args, expected):
    host = Host({"supervisorctl status titan-hunter": (0, "titan-hunter RUNNING pid 1, uptime 1\n")})
    result = run_module("systemd", args, conn=host, vars={"service_manager": "supervisor"})
    assert result.failed and expected in result.msg and not result.changed
    assert not [c for c in host.commands if "status" not in c]  # nothing was acted on


def test_systemd_unsupported_arguments_say_so():
    problems = REGISTRY["systemd"].check_args({"name": "x", "state": "started", "masked": True})
    assert problems == ["argument 'masked' is not supported by ripcord (it acts on services "
                        "through their manager: state, enabled, daemon_reload)"]
    assert REGISTRY["systemd"].check_args({"name": "x"}) == [
        "one of 'state', 'enabled' or 'daemon_reload' is required"]


SUPERVISOR_ALL = ("titan-hunter                     RUNNING   pid 3181, uptime 0:00:24\n"
                  "titan-risk                       STOPPED   Dec 06 11:00 AM\n"
                  "titan-feed                       FATAL     Exited too quickly\n"
                  "grp:worker                       STARTING  \n")
LIST_UNITS = ("nginx.service  loaded    active   running Nginx\n"
              "cron.service   loaded    inactive dead    Cron\n"
              "gone.service   not-found inactive dead    gone.service\n")
UNIT_FILES = ("nginx.service  enabled  enabled\ncron.service   disabled enabled\n"
              "idle.service   static   -\n")


@pytest.mark.parametrize("adapter, answers, expected", [
    (Supervisor(config="/etc/s.conf"), {"supervisorctl -c /etc/s.conf status": (3, SUPERVISOR_ALL)}, {
        "titan-hunter": ("running", "unknown"), "titan-risk": ("stopped", "unknown"),
        "titan-feed": ("failed", "unknown"), "grp:worker": ("starting", "unknown")}),
    (Systemd(), {"systemctl list-units --no-pager --type service --all --plain --no-legend":
                 (0, LIST_UNITS),
                 "systemctl list-unit-files --no-pager --type service --all --no-legend":
                 (0, UNIT_FILES)}, {
        "nginx.service": ("running", "enabled"), "cron.service": ("stopped", "disabled"),
        "gone.service": ("stopped", "not-found"), "idle.service": ("inactive", "static")}),
    (DockerCompose(compose_file="/srv/c.yml"),
     {"docker compose -f /srv/c.yml ps --all --format json": (0, (
         '{"Service": "web", "Name": "a-web-1", "State": "running", "Health": ""}\n'
         '{"Service": "db", "Name": "a-db-1", "State": "exited", "ExitCode": 1}\n'))},
     {"web": ("running", "unknown"), "db": ("failed", "unknown")}),
    (Pm2(), {"pm2 jlist": (0, '[{"name": "api", "pm2_env": {"status": "online"}},'
                              ' {"name": "job", "pm2_env": {"status": "stopped"}}]\n')},
     {"api": ("running", "unknown"), "job": ("stopped", "unknown")}),
])
def test_service_facts_reads_each_manager_in_ansibles_shape(adapter, answers, expected):
    host = Host(answers)
    services = list_services(adapter, host.run)
    assert {name: (f["state"], f["status"]) for name, f in services.items()} == expected
    assert all(f["name"] == name and f["source"] == adapter.manager for name, f in services.items())


def test_service_facts_registers_ansible_facts_services_and_keeps_the_inventory_services():
    host = Host({"supervisorctl status": (3, SUPERVISOR_ALL)})
    result = run_module("service_facts", {}, conn=host,
                        vars={"services": ["titan-hunter"], "ansible_facts": {"hostname": "h1"}})
    assert result.registered()["ansible_facts"]["services"]["titan-hunter"] == {
        "name": "titan-hunter", "state": "running", "status": "unknown", "source": "supervisor"}
    facts = result.data["ansible_facts"]
    assert set(facts) == {"ansible_facts"}  # not the bare `services`: that is the inventory's list
    assert facts["ansible_facts"]["hostname"] == "h1" and "titan-risk" in facts["ansible_facts"]["services"]
    broken = Host({"supervisorctl status": (2, "unix:///x/supervisor.sock no such file\n")})
    assert run_module("service_facts", {}, conn=broken).failed


def test_ansible_is_the_test_oracle_and_not_shipped():
    assert shutil.which("python3")  # the oracle runs in-process: ansible-core is a test dependency
    assert ansible_lineinfile.__file__.endswith("lineinfile.py")


def test_a_prefixed_debug_shows_its_message_as_debug_does(monkeypatch):
    from io import StringIO

    from rich.console import Console

    from ripcord.report import Display
    from ripcord.runstate import TaskRecord

    monkeypatch.delenv("RIPCORD_VERBOSE", raising=False)
    out = StringIO()
    display = Display(Console(file=out, width=200))
    for module in ("debug", "ansible.builtin.debug", "ansible.builtin.command"):
        display.host_result(TaskRecord(play="p", task="t", host="h1", outcome="ok",
                                       msg=f"said by {module}", module=module))
    assert "said by debug" in out.getvalue() and "said by ansible.builtin.debug" in out.getvalue()
    assert "said by ansible.builtin.command" not in out.getvalue()  # not a telling module


def test_service_enabled_goes_through_systemctl_as_systemds_does():
    answers = {SHOW: (0, "LoadState=loaded\nActiveState=active\nSubState=running\n"),
               "systemctl is-enabled nginx": (1, "disabled\n")}
    host = Host(answers)
    result = run_module("service", {"name": "nginx", "enabled": True, "state": "started"}, conn=host,
                        vars={"service_manager": "systemd", "ripcord_become": True})
    assert result.changed and not result.failed and result.msg == "enabled nginx", result.msg
    assert host.commands == ["systemctl is-enabled nginx", "sudo -n systemctl enable nginx", SHOW]


def test_service_enabled_under_supervisor_fails_saying_why_and_touches_nothing():
    host = Host({"supervisorctl status titan-hunter": (0, "titan-hunter RUNNING pid 1, uptime 1\n")})
    result = run_module("service", {"name": "titan-hunter", "enabled": False}, conn=host,
                        vars={"service_manager": "supervisor"})
    assert result.failed and not result.changed and host.commands == []
    assert result.msg == ("enabled: supervisor on h1 has no such setting ripcord can change (a "
                          "program's autostart in supervisord's configuration, which supervisorctl "
                          "update applies by restarting the program)")


def test_uri_takes_ansibles_status_code_and_return_content():
    uri = REGISTRY["uri"]
    assert uri.check_args({"url": "http://h/x", "status_code": [200, 204], "return_content": True}) == []
    assert uri.check_args({"url": "http://h/x", "status_code": 200, "status": 204}) == [
        "give status or status_code (Ansible's name for it), not both"]
    assert uri.check_args({"url": "http://h/x", "status_code": ["ok"]}) == [
        "argument 'status': expected an integer or a list of integers"]
