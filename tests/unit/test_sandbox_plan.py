"""The sandbox plan and its rendered configs: ports, layout, and what may never be in them."""

from pathlib import Path

import pytest
import yaml

from ripcord.sandbox import provision, render
from ripcord.sandbox.plan import build_plan

ROOT = Path("/var/lib/ripcord/unit-test")


def test_default_fleet_has_the_roles_and_services_of_the_issue():
    plan = build_plan(ROOT, 24000, exec_hosts=2)
    assert [h.name for h in plan.hosts] == ["db-1", "core-1", "exec-1", "exec-2"]
    assert [s.name for s in plan.host("db-1").services] == ["postgresql", "redis", "nats"]
    assert [s.name for s in plan.host("core-1").services] == [
        "titan-brain", "titan-console", "titan-market-data"]
    assert [s.name for s in plan.host("exec-2").services] == [
        "titan-execution", "titan-scavenger", "titan-hunter", "titan-sentinel"]


@pytest.mark.parametrize("exec_hosts", [1, 2, 48, 200])
def test_ports_are_unique_and_start_at_the_base(exec_hosts):
    plan = build_plan(ROOT, 30000, exec_hosts=exec_hosts)
    ports = plan.ports()
    assert len(ports) == len(set(ports))
    assert min(ports) == 30000
    assert len(plan.hosts) == exec_hosts + 2


def test_a_plan_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match="no room"):
        build_plan(ROOT, 65500, exec_hosts=10)
    with pytest.raises(ValueError, match="between 1 and"):
        build_plan(ROOT, 30000, exec_hosts=0)


def test_sshd_listens_on_loopback_with_keys_only():
    host = build_plan(ROOT, 24000, 2).host("exec-1")
    config = render.sshd_config(host, "ripcord")
    assert f"Port {host.ssh_port}" in config
    assert "ListenAddress 127.0.0.1" in config
    assert "PasswordAuthentication no" in config
    assert "KbdInteractiveAuthentication no" in config
    assert "PermitRootLogin no" in config
    assert "AllowUsers ripcord" in config
    assert f"TITAN_HOME={host.titan_home}" in config


def test_inventory_is_ansible_yaml_with_role_groups_and_no_secret(tmp_path):
    """Provisioned as sandbox.up does it (each host's .env holding the fleet's secrets, where a
    renderer could read them), the inventory rendered for that fleet holds none of them."""
    plan = build_plan(tmp_path, 24000, 2)
    secrets = provision.gather_secrets(plan)  # new random ones, as on a first `up`
    for host in plan.hosts:
        host.titan_home.mkdir(parents=True)
        provision.write(host.titan_home / ".env", render.host_env(plan, host, secrets), mode=0o600)
    assert provision.gather_secrets(plan) == secrets  # the hosts hold them now
    assert len(set(secrets.values())) == len(secrets) == 3 + len(plan.hosts)
    text = render.inventory(plan, "ripcord")
    for name, value in secrets.items():
        assert value not in text, name
    doc = yaml.safe_load(text)
    groups = doc["all"]["children"]["sandbox"]["children"]
    assert set(groups) == {"db", "core", "exec"}
    exec1 = groups["exec"]["hosts"]["exec-1"]
    assert exec1["ansible_port"] == plan.host("exec-1").ssh_port
    assert exec1["health_urls"]["titan-execution"].startswith("http://127.0.0.1:")
    sandbox_vars = doc["all"]["children"]["sandbox"]["vars"]
    assert sandbox_vars["ansible_host"] == "127.0.0.1"
    assert sandbox_vars["service_manager"] == "supervisor"


def test_env_holds_the_secrets_and_every_port_its_services_need():
    plan = build_plan(ROOT, 24000, 2)
    secrets = {"hmac_secret": "h" * 64, "db_password": "p" * 32, "exchange_key:ops": "o" * 40}
    secrets.update({f"exchange_key:{h.name}": f"key-{h.name}" for h in plan.hosts})
    env = dict(line.split("=", 1) for line in
               render.host_env(plan, plan.host("exec-2"), secrets).splitlines())
    assert env["TITAN_HMAC_SECRET"] == "h" * 64
    assert env["EXCHANGE_API_KEY"] == "key-exec-2"
    assert env["TITAN_EXECUTION_PORT"] == str(plan.host("exec-2").service("titan-execution").port)
    assert env["TITAN_HALT_FILE"].endswith("exec-2/titan/system.halt")
    assert "EXCHANGE_OPS_API_KEY" not in env  # only core-1 holds the operator's exchange key


def test_the_generated_inventory_reads_the_same_in_ansible_and_ripcord(tmp_path):
    import json
    import subprocess

    from ansible_oracle import ansible_env, ansible_executable

    from ripcord.inventory import Inventory

    source = tmp_path / "sandbox.yml"
    source.write_text(render.inventory(build_plan(ROOT, 24000, 3), "ripcord"))
    result = subprocess.run([ansible_executable("ansible-inventory"), "-i", str(source), "--list"],
                            capture_output=True, text=True, env=ansible_env(tmp_path), cwd=tmp_path,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert Inventory.load([source]).to_list_json() == json.loads(result.stdout)
    assert Inventory.load([source]).select("exec") == ["exec-1", "exec-2", "exec-3"]
