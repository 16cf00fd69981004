"""Supervisor: every service the inventory gives a host is RUNNING under its supervisord.

supervisord is asked over its own XML-RPC interface, on the unix socket its config gives
supervisorctl (`[supervisorctl] serverurl=unix://...`): one curl on the host, where
`supervisorctl status` would cost a Python start-up there (~110 ms of CPU a host).
"""

import xmlrpc.client
from xml.parsers.expat import ExpatError

import pytest

pytestmark = [pytest.mark.supervisor, pytest.mark.restart, pytest.mark.deploy,
              pytest.mark.rollback, pytest.mark.scenario01, pytest.mark.scenario05,
              pytest.mark.scenario15, pytest.mark.scenario17]

# Where supervisorctl finds its config when the inventory names none (supervisor_config).
DEFAULT_CONFIGS = ("/etc/supervisord.conf", "/etc/supervisor/supervisord.conf")
GET_ALL_PROCESS_INFO = xmlrpc.client.dumps((), "supervisor.getAllProcessInfo")


def process_states(host, configs: list[str]) -> dict[str, str] | str:
    """Program name -> state (RUNNING, STOPPED, ...), as supervisorctl names them; or why
    supervisord did not answer."""
    script = ("sock=$(sed -n 's|^serverurl *= *unix://||p'" + " %s" * len(configs)
              + ' 2>/dev/null | head -n 1); echo "$sock"; [ -S "$sock" ] && '
              'curl -sS --max-time 3 --unix-socket "$sock" -d %s http://localhost/RPC2')
    out = host.run(script, *configs, GET_ALL_PROCESS_INFO)
    socket, _, answer = out.stdout.partition("\n")
    if not socket:
        return f"no serverurl=unix://... in {' or '.join(configs)}"
    if out.rc != 0:
        return f"{out.stderr.strip()[:80] or 'no socket'} at {socket}"
    try:
        (processes,), _ = xmlrpc.client.loads(answer)
    except (xmlrpc.client.Fault, ExpatError, ValueError) as error:
        return f"{str(error)[:80]} at {socket}"
    return {(p["name"] if p["group"] == p["name"] else f"{p['group']}:{p['name']}"): p["statename"]
            for p in processes}


def test_every_service_is_running(host, hostvars, services):
    if not services:
        pytest.skip("no services on this host")
    conf = hostvars.get("supervisor_config")
    states = process_states(host, [conf] if conf else list(DEFAULT_CONFIGS))
    assert not isinstance(states, str), (f"supervisord does not answer on "
                                         f"{host.backend.hostname}: {states}")
    down = {name: states.get(name, "unknown to supervisord") for name in services
            if states.get(name) != "RUNNING"}
    assert not down, f"not RUNNING on {host.backend.hostname}: " + ", ".join(
        f"{name} ({state})" for name, state in sorted(down.items()))
