"""Service-manager adapters: the exact command lines, and status read from recorded outputs.

Supervisor is also exercised for real against the sandbox (tests/integration/
test_modules_service.py); systemd, docker compose and pm2 have no daemon here, so their samples
are written from each tool's documented output format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from ripcord.errors import InputError
from ripcord.services import (
    FAILED,
    RUNNING,
    STARTING,
    STOPPED,
    DockerCompose,
    Pm2,
    ServiceControl,
    ServiceError,
    Supervisor,
    Systemd,
    adapter_for,
)
from ripcord.templating import Templar


@dataclass
class Out:
    stdout: str = ""
    rc: int = 0
    stderr: str = ""


CONF = "/srv/hosts/exec-1/etc/supervisord.conf"


# --- supervisor -----------------------------------------------------------------------------

@pytest.mark.parametrize("verb", ["start", "stop", "restart"])
def test_supervisor_actions_bind_the_config_file(verb):
    assert Supervisor(config=CONF).action(verb, "titan-hunter") == \
        f"supervisorctl -c {CONF} {verb} titan-hunter"
    assert Supervisor().action(verb, "titan-hunter") == f"supervisorctl {verb} titan-hunter"


def test_supervisor_quotes_every_interpolated_value():
    adapter = Supervisor(config="/etc/my supervisor.conf")
    assert adapter.status_command("x; rm -rf /") == \
        "supervisorctl -c '/etc/my supervisor.conf' status 'x; rm -rf /'"


SUPERVISOR_SAMPLES = [
    # (supervisorctl status output, rc, state, raw, active, detail)
    ("titan-hunter                     RUNNING   pid 3181, uptime 0:00:24\n", 0,
     RUNNING, "RUNNING", True, "pid 3181, uptime 0:00:24"),
    ("titan-hunter                     STOPPED   Nov 21 07:52 AM\n", 3,
     STOPPED, "STOPPED", False, "Nov 21 07:52 AM"),
    ("titan-hunter                     STARTING  \n", 0, STARTING, "STARTING", True, ""),
    ("titan-hunter                     BACKOFF   Exited too quickly (process log may have "
     "details)\n", 0, FAILED, "BACKOFF", True, "Exited too quickly (process log may have details)"),
    ("titan-hunter                     FATAL     Exited too quickly (process log may have "
     "details)\n", 3, FAILED, "FATAL", False, "Exited too quickly (process log may have details)"),
    ("titan-hunter                     EXITED    Nov 21 08:01 AM\n", 3,
     FAILED, "EXITED", False, "Nov 21 08:01 AM"),
    ("titan-hunter                     STOPPING  \n", 3, STOPPED, "STOPPING", False, ""),
]


@pytest.mark.parametrize("stdout, rc, state, raw, active, detail", SUPERVISOR_SAMPLES)
def test_supervisor_status_in_four_words(stdout, rc, state, raw, active, detail):
    status = Supervisor().parse_status("titan-hunter", Out(stdout, rc))
    assert (status.state, status.raw, status.active, status.detail) == (state, raw, active, detail)


def test_supervisor_unknown_program_is_a_service_error():
    with pytest.raises(ServiceError, match="supervisor does not know 'nosuch'"):
        Supervisor().parse_status("nosuch", Out("nosuch: ERROR (no such process)\n", 4))


def test_supervisor_unreadable_status_is_a_service_error():
    refused = "unix:///srv/run/supervisor.sock no such file\n"
    with pytest.raises(ServiceError, match="cannot read supervisorctl status"):
        Supervisor().parse_status("titan-hunter", Out(refused, 7))


@pytest.mark.parametrize("stdout, rc, failed", [
    ("titan-hunter: started\n", 0, False),
    ("titan-hunter: ERROR (already started)\n", 0, False),
    ("titan-hunter: ERROR (not running)\n", 0, False),
    ("titan-hunter: stopped\ntitan-hunter: started\n", 0, False),
    ("titan-hunter: ERROR (spawn error)\n", 7, True),
    ("titan-hunter: ERROR (abnormal termination)\n", 1, True),
    ("nosuch: ERROR (no such process)\n", 1, True),
])
def test_supervisor_action_outcomes(stdout, rc, failed):
    problem = Supervisor().action_error("start", "titan-hunter", Out(stdout, rc))
    assert bool(problem) is failed
    if failed:
        assert stdout.strip().splitlines()[-1] in problem


def test_service_control_keeps_every_command_it_ran():
    answers = {
        f"supervisorctl -c {CONF} status titan-hunter": Out("titan-hunter  STOPPED  Nov 21 07:52 AM\n", 3),
        f"supervisorctl -c {CONF} start titan-hunter": Out("titan-hunter: started\n"),
    }
    control = ServiceControl(Supervisor(config=CONF), lambda line: answers[line])
    assert control.status("titan-hunter").state == STOPPED
    assert not control.acted
    control.act("start", "titan-hunter")
    assert control.acted
    assert control.commands == list(answers)


def test_service_control_raises_when_the_manager_refuses():
    control = ServiceControl(Supervisor(), lambda line: Out("titan-hunter: ERROR (spawn error)\n", 7))
    with pytest.raises(ServiceError, match=r"supervisorctl start titan-hunter failed \(rc=7\)"):
        control.act("start", "titan-hunter")


# --- systemd --------------------------------------------------------------------------------

def test_systemd_commands_with_and_without_become():
    assert Systemd().action("restart", "titan-brain") == "systemctl restart titan-brain"
    assert Systemd(become=True).action("stop", "titan-brain") == "sudo -n systemctl stop titan-brain"
    assert Systemd(become=True).status_command("titan brain") == \
        "systemctl show -p LoadState,ActiveState,SubState --no-pager 'titan brain'"


def test_systemd_uses_the_managers_name_for_a_service():
    adapter = Systemd(aliases={"redis": "redis-server"})
    assert adapter.action("restart", "redis") == "systemctl restart redis-server"
    assert adapter.parse_status("redis", Out(SYSTEMD_SHOW.format("active", "running"))).name == "redis"


SYSTEMD_SHOW = "LoadState=loaded\nActiveState={}\nSubState={}\n"


@pytest.mark.parametrize("active, sub, state, active_flag", [
    ("active", "running", RUNNING, True),
    ("active", "exited", RUNNING, True),  # Type=oneshot with RemainAfterExit
    ("reloading", "reload", RUNNING, True),
    ("activating", "start", STARTING, True),
    ("activating", "auto-restart", FAILED, True),
    ("deactivating", "stop-sigterm", STOPPED, False),
    ("inactive", "dead", STOPPED, False),
    ("failed", "failed", FAILED, False),
])
def test_systemd_status_in_four_words(active, sub, state, active_flag):
    status = Systemd().parse_status("postgresql", Out(SYSTEMD_SHOW.format(active, sub)))
    assert (status.state, status.raw, status.active) == (state, f"{active}/{sub}", active_flag)


def test_systemd_unknown_unit_is_a_service_error():
    # `systemctl show` of a unit that does not exist succeeds and says inactive/dead.
    with pytest.raises(ServiceError, match="systemd does not know 'titan-ai'"):
        Systemd().parse_status("titan-ai", Out("LoadState=not-found\nActiveState=inactive\n"
                                               "SubState=dead\n"))


def test_systemd_without_a_bus_is_a_service_error():
    with pytest.raises(ServiceError, match="cannot read systemctl show"):
        Systemd().parse_status("redis", Out(stderr="System has not been booted with systemd as "
                                                   "init system (PID 1). Can't operate.\n", rc=1))


# --- docker compose -------------------------------------------------------------------------

COMPOSE = "/opt/titan/docker-compose.yml"


def compose_line(service: str, state: str, *, health: str = "", exit_code: int = 0,
                 status: str = "Up 2 hours") -> str:
    """One line of `docker compose ps --format json` (Compose 2.21+: one object per line)."""
    return json.dumps({
        "Command": '"docker-entrypoint.s…"', "CreatedAt": "2024-05-02 10:11:12 +0000 UTC",
        "ExitCode": exit_code, "Health": health, "ID": "4f1c2e9d8b7a", "Image": f"titan/{service}",
        "Labels": "com.docker.compose.project=titan", "LocalVolumes": "0", "Mounts": "",
        "Name": f"{service}", "Names": f"{service}", "Networks": "titan_default",
        "Ports": "0.0.0.0:3100->3100/tcp", "Project": "titan",
        "Publishers": [{"URL": "0.0.0.0", "TargetPort": 3100, "PublishedPort": 3100,
                        "Protocol": "tcp"}],
        "RunningFor": "2 hours ago", "Service": service, "Size": "0B", "State": state,
        "Status": status})


def test_compose_commands_name_the_file():
    adapter = DockerCompose(compose_file=COMPOSE)
    assert adapter.action("restart", "titan-brain") == \
        f"docker compose -f {COMPOSE} restart titan-brain"
    assert adapter.status_command("titan-brain") == \
        f"docker compose -f {COMPOSE} ps --all --format json titan-brain"
    assert DockerCompose(compose_file="/srv/my titan/compose.yml").action("stop", "x") == \
        "docker compose -f '/srv/my titan/compose.yml' stop x"


@pytest.mark.parametrize("line, state, raw, active", [
    (compose_line("titan-brain", "running"), RUNNING, "running", True),
    (compose_line("titan-brain", "running", health="healthy", status="Up 2 hours (healthy)"),
     RUNNING, "running(healthy)", True),
    (compose_line("titan-brain", "running", health="starting"), STARTING, "running(starting)", True),
    (compose_line("titan-brain", "running", health="unhealthy"), FAILED, "running(unhealthy)", True),
    (compose_line("titan-brain", "restarting", exit_code=1, status="Restarting (1) 3 seconds ago"),
     FAILED, "restarting", True),
    (compose_line("titan-brain", "exited", exit_code=0, status="Exited (0) 1 minute ago"),
     STOPPED, "exited(0)", False),
    (compose_line("titan-brain", "exited", exit_code=143, status="Exited (143) 1 minute ago"),
     STOPPED, "exited(143)", False),
    (compose_line("titan-brain", "exited", exit_code=1, status="Exited (1) 1 minute ago"),
     FAILED, "exited(1)", False),
    (compose_line("titan-brain", "created", status="Created"), STOPPED, "created", False),
    (compose_line("titan-brain", "dead", status="Dead"), FAILED, "dead", False),
])
def test_compose_status_in_four_words(line, state, raw, active):
    status = DockerCompose().parse_status("titan-brain", Out(line + "\n"))
    assert (status.state, status.raw, status.active) == (state, raw, active)


def test_compose_reads_the_older_json_array_too():
    array = "[" + compose_line("titan-brain", "running", health="healthy") + "]\n"
    assert DockerCompose().parse_status("titan-brain", Out(array)).state == RUNNING


def test_compose_a_scaled_service_is_as_bad_as_its_worst_container():
    lines = "\n".join([compose_line("titan-execution", "running"),
                       compose_line("titan-execution", "exited", exit_code=2)])
    status = DockerCompose().parse_status("titan-execution", Out(lines))
    assert (status.state, status.active) == (FAILED, True)


def test_compose_no_container_yet_is_stopped():
    status = DockerCompose().parse_status("titan-brain", Out(""))
    assert (status.state, status.raw) == (STOPPED, "absent")


def test_compose_unknown_service_is_a_service_error():
    with pytest.raises(ServiceError, match="no such service: titan-ai"):
        DockerCompose().parse_status("titan-ai", Out(stderr="no such service: titan-ai\n", rc=1))


# --- pm2 ------------------------------------------------------------------------------------

def pm2_process(name: str, status: str, pm_id: int = 0, pid: int = 4242) -> dict:
    """One entry of `pm2 jlist`, trimmed to the fields that matter plus a few neighbours."""
    return {"pid": pid if status == "online" else 0, "name": name, "pm_id": pm_id,
            "monit": {"memory": 52428800, "cpu": 0.3},
            "pm2_env": {"name": name, "status": status, "restart_time": 2, "unstable_restarts": 0,
                        "pm_uptime": 1714640000000, "exec_mode": "fork_mode", "autorestart": True,
                        "pm_exec_path": f"/opt/titan/services/{name}/dist/index.js",
                        "instances": 1, "version": "1.4.0"}}


def test_pm2_commands():
    assert Pm2().action("restart", "titan-brain") == "pm2 restart titan-brain"
    assert Pm2().action("stop", "titan brain") == "pm2 stop 'titan brain'"
    assert Pm2().status_command("titan-brain") == "pm2 jlist"


@pytest.mark.parametrize("raw, state, active", [
    ("online", RUNNING, True), ("launching", STARTING, True), ("stopped", STOPPED, False),
    ("stopping", STOPPED, False), ("errored", FAILED, False), ("waiting restart", FAILED, True),
])
def test_pm2_status_in_four_words(raw, state, active):
    jlist = json.dumps([pm2_process("titan-console", "online", 0),
                        pm2_process("titan-brain", raw, 1)])
    status = Pm2().parse_status("titan-brain", Out(jlist))
    assert (status.state, status.raw, status.active) == (state, raw, active)


def test_pm2_skips_a_daemon_start_up_line():
    noisy = "[PM2] Spawning PM2 daemon with pm2_home=/home/titan/.pm2\n" \
            + json.dumps([pm2_process("titan-brain", "online")])
    assert Pm2().parse_status("titan-brain", Out(noisy)).state == RUNNING


def test_pm2_without_a_list_is_a_service_error():
    with pytest.raises(ServiceError, match="cannot read pm2 jlist"):
        Pm2().parse_status("titan-brain", Out(stderr="pm2: command not found\n", rc=127))


def test_pm2_cluster_instances_aggregate():
    jlist = json.dumps([pm2_process("titan-execution", "online", 0),
                        pm2_process("titan-execution", "errored", 1)])
    status = Pm2().parse_status("titan-execution", Out(jlist))
    assert (status.state, status.active) == (FAILED, True)


def test_pm2_unknown_name_is_a_service_error():
    with pytest.raises(ServiceError, match="pm2 does not know 'titan-ai'"):
        Pm2().parse_status("titan-ai", Out(json.dumps([pm2_process("titan-brain", "online")])))


# --- choosing one per host ------------------------------------------------------------------

def test_the_inventory_chooses_the_adapter():
    assert adapter_for({}) == Supervisor()
    assert adapter_for({"supervisor_config": CONF}) == Supervisor(config=CONF)
    assert adapter_for({"service_manager": "systemd", "ripcord_become": "yes"}) == \
        Systemd(become=True)
    assert adapter_for({"service_manager": "systemd"}) == Systemd(become=False)
    assert adapter_for({"service_manager": "pm2"}) == Pm2()
    assert adapter_for({"service_manager": "docker_compose", "compose_file": "/c.yml"}) == \
        DockerCompose(compose_file="/c.yml")


def test_compose_file_defaults_to_titan_home_rendered_for_the_host():
    host = {"service_manager": "docker_compose", "titan_home": "/opt/titan",
            "service_aliases": {"redis": "titan-redis"}}
    adapter = adapter_for(host, lambda value: Templar().render(value, host))
    assert adapter == DockerCompose(aliases={"redis": "titan-redis"},
                                    compose_file="/opt/titan/docker-compose.yml")
    assert adapter.action("restart", "redis") == \
        "docker compose -f /opt/titan/docker-compose.yml restart titan-redis"


def test_an_unknown_manager_is_an_input_error():
    with pytest.raises(InputError, match="unknown service_manager 'runit'"):
        adapter_for({"service_manager": "runit"})
