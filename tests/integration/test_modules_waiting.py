"""wait_for and uri against the sandbox fleet: real services, real ports, real logs.

Conditions are made true or false by hand (supervisorctl and shell over the system ssh client),
and what the modules report is checked against curl and ssh.
"""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
import uuid

import pytest

from ripcord.modules import REGISTRY, TaskContext
from ripcord.templating import Secrets, Templar, resolve_vars

FREE_PORT_OFFSET = 98  # base+98: inside this fleet's range, never used by it


def q(value) -> str:
    return shlex.quote(str(value))


@pytest.fixture
def call(inventory, connect):
    """call(module, args, host=, check=) -> (Result, TaskContext), as the runner calls it."""

    def run(name: str, args: dict, host: str = "exec-1", check: bool = False):
        module = REGISTRY[name]
        problems = module.check_args(args)
        assert not problems, problems
        secrets = Secrets()
        variables = resolve_vars(Templar(), dict(inventory.host_vars(host)))
        ctx = TaskContext(host=host, vars=variables, conn=connect(host),
                          check=check, timeout=30, templar=Templar(secrets), secrets=secrets)
        return module().run(ctx, module.with_defaults(args)), ctx

    return run


def health_url(inventory, host: str, service: str) -> str:
    return inventory.host_vars(host)["health_urls"][service]


def port_of(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


def later(delay: float, action) -> threading.Thread:
    """Run action after delay seconds, in the background (a condition coming true)."""
    thread = threading.Thread(target=lambda: (time.sleep(delay), action()), daemon=True)
    thread.start()
    return thread


@pytest.fixture
def scratch(access, inventory):
    path = f"{inventory.host_vars('exec-1')['titan_home']}/scratch-wait-{uuid.uuid4().hex[:8]}"
    access.ssh("exec-1", f"mkdir -p {q(path)}")
    yield path
    access.ssh("exec-1", f"rm -rf -- {q(path)}")


# --- wait_for: url ------------------------------------------------------------------------------

def test_wait_for_health_url_json_field(call, access, inventory):
    url = health_url(inventory, "exec-1", "titan-execution")
    result, _ = call("wait_for", {"url": url, "json_field": "service",
                                  "json_value": "titan-execution", "timeout": 10})
    assert not result.failed and not result.changed, result.msg
    assert result.data["elapsed"] < 5
    assert result.data["json"]["service"] == access.curl_json(url)["service"] == "titan-execution"
    halted = access.curl_json(url)["halted"]
    result, _ = call("wait_for", {"url": url, "json_field": "halted", "json_value": halted},
                     check=True)
    assert not result.failed, "wait_for runs under --check"


def test_wait_for_url_times_out_with_the_last_value(call, inventory):
    url = health_url(inventory, "exec-1", "titan-execution")
    started = time.monotonic()
    result, _ = call("wait_for", {"url": url, "json_field": "service", "json_value": "nope",
                                  "timeout": 1, "sleep": 0.2})
    took = time.monotonic() - started
    assert result.failed and 1 <= took < 4
    assert result.msg.startswith("timed out after 1s waiting for")
    assert "service == 'nope'" in result.msg and "last seen: HTTP 200, service = 'titan-execution'" \
        in result.msg


# --- wait_for: port -----------------------------------------------------------------------------

def test_wait_for_port_stopped_then_started(call, access, inventory):
    url = health_url(inventory, "exec-2", "titan-hunter")
    port = port_of(url)
    try:
        access.ssh("exec-2", "supervisorctl stop titan-hunter")
        result, _ = call("wait_for", {"port": port, "state": "stopped", "timeout": 10},
                         host="exec-2")
        assert not result.failed, result.msg
        assert subprocess.run(["curl", "-sS", "--max-time", "2", url],
                              capture_output=True).returncode != 0, "curl still reaches it"

        later(0.3, lambda: access.ssh("exec-2", "supervisorctl start titan-hunter"))
        result, _ = call("wait_for", {"port": port, "state": "started", "timeout": 15},
                         host="exec-2")
        assert not result.failed, result.msg
        assert result.data["elapsed"] >= 0.3 and result.data["state"] == "open"
        access.wait_for(lambda: access.curl_json(url)["service"] == "titan-hunter", timeout=10)
    finally:
        access.ssh("exec-2", "supervisorctl start titan-hunter", check=False)


def test_wait_for_port_timeout_names_the_port(call, fleet):
    port = fleet.plan.base_port + FREE_PORT_OFFSET
    result, _ = call("wait_for", {"port": port, "timeout": 1})
    assert result.failed
    assert f"timed out after 1s waiting for 127.0.0.1:{port} to be open (from exec-1)" in result.msg
    assert "last seen: closed" in result.msg
    assert call("wait_for", {"port": port, "state": "stopped", "timeout": 1})[0].failed is False


# --- wait_for: path and search_regex ------------------------------------------------------------

def test_wait_for_path_present_and_absent(call, access, scratch):
    flag = f"{scratch}/ready.flag"
    later(0.5, lambda: access.ssh("exec-1", f"touch {q(flag)}"))
    result, _ = call("wait_for", {"path": flag, "timeout": 10})
    assert not result.failed and result.data["elapsed"] >= 0.4, result.msg

    later(0.3, lambda: access.ssh("exec-1", f"rm -f {q(flag)}"))
    result, _ = call("wait_for", {"path": flag, "state": "absent", "timeout": 10})
    assert not result.failed, result.msg
    assert access.ssh("exec-1", f"test -e {q(flag)}", check=False).returncode != 0

    result, _ = call("wait_for", {"path": f"{scratch}/never", "timeout": 0.5})
    assert result.failed and "to be present" in result.msg and "last seen: absent" in result.msg


def test_wait_for_regex_only_counts_lines_after_a_stat_mark(call, access, scratch):
    log = f"{scratch}/engine.log"
    access.ssh("exec-1", f"printf 'boot\\nready MARK-1\\n' > {q(log)}")
    mark, _ = call("stat", {"path": log})
    assert mark.data["size"] == int(access.ssh("exec-1", f"wc -c < {q(log)}").stdout)

    args = {"path": log, "search_regex": r"ready (MARK-\d+)", "offset": mark.data["size"]}
    result, _ = call("wait_for", {**args, "timeout": 1})
    assert result.failed, "a line from before the mark must not count"
    assert "past byte" in result.msg and "no match in 0 new bytes" in result.msg

    later(0.3, lambda: access.ssh("exec-1", f"printf 'tick\\nready MARK-2\\n' >> {q(log)}"))
    result, _ = call("wait_for", {**args, "timeout": 10})
    assert not result.failed, result.msg
    assert result.data["match_groups"] == ["MARK-2"]
    assert result.data["offset"] == int(access.ssh("exec-1", f"wc -c < {q(log)}").stdout)


def test_wait_for_regex_in_a_real_service_log(call, access, inventory):
    """A restart's start-up line, written after the mark, is seen; the old ones are not."""
    home = inventory.host_vars("exec-2")["titan_home"]
    log = f"{home}/logs/titan-sentinel.log"
    mark, _ = call("stat", {"path": log}, host="exec-2")
    try:
        later(0.2, lambda: access.ssh("exec-2", "supervisorctl restart titan-sentinel"))
        result, _ = call("wait_for", {"path": log, "search_regex": "Starting titan-sentinel", "timeout": 20,
                                      "offset": mark.data["size"]}, host="exec-2")
        assert not result.failed, result.msg
    finally:
        access.ssh("exec-2", "supervisorctl start titan-sentinel", check=False)


# --- uri ----------------------------------------------------------------------------------------

def test_uri_get_asserts_status_and_json(call, access, inventory):
    url = health_url(inventory, "exec-1", "titan-execution")
    result, _ = call("uri", {"url": url, "json": {"service": "titan-execution"}})
    assert not result.failed and not result.changed, result.msg
    assert result.data["status"] == 200 and result.data["json"]["host"] == "exec-1"
    assert access.curl_json(url)["host"] == "exec-1"

    result, _ = call("uri", {"url": url, "json": {"service": "titan-brain"}})
    assert result.failed
    assert result.msg.endswith("json service: expected 'titan-brain', got 'titan-execution'")

    missing = url.replace("/health", "/no-such-page")
    result, _ = call("uri", {"url": missing})
    assert result.failed and result.msg.endswith("expected status 200, got 404")
    assert not call("uri", {"url": missing, "status": [404, 410]})[0].failed

    closed = f"http://127.0.0.1:{port_of(url) + 9}/health"  # the host's unused health port
    result, _ = call("uri", {"url": closed, "timeout": 2})
    assert result.failed and f"127.0.0.1:{port_of(url) + 9}" in result.msg


def test_uri_post_changes_state_and_is_skipped_in_check_mode(call, access, inventory):
    brain = health_url(inventory, "core-1", "titan-brain").replace("/health", "")
    assert access.curl_json(f"{brain}/api/breaker")["state"] == "CLOSED"
    trip = {"url": f"{brain}/api/breaker/trip", "method": "POST", "body": {"reason": "ripcord-test"}}
    try:
        result, _ = call("uri", trip, host="core-1", check=True)
        assert result.skipped and result.changed and result.msg == "skipped in check mode"
        assert access.curl_json(f"{brain}/api/breaker")["state"] == "CLOSED"

        result, _ = call("uri", {**trip, "json": {"state": "OPEN"}}, host="core-1")
        assert result.changed and not result.failed, result.msg
        assert access.curl_json(f"{brain}/api/breaker")["reason"] == "ripcord-test"
    finally:
        result, _ = call("uri", {"url": f"{brain}/api/breaker/reset", "method": "POST",
                                 "body": {"operatorId": "ripcord-test"},
                                 "json": {"state": "CLOSED"}}, host="core-1")
    assert not result.failed, result.msg
    assert access.curl_json(f"{brain}/api/breaker")["state"] == "CLOSED"


def test_uri_secret_header_is_sent_and_never_shown(call, access, inventory):
    api_key = access.env("exec-1")["EXCHANGE_API_KEY"]
    url = inventory.host_vars("exec-1")["exchange_url"].rstrip("/") + "/api/v1/positions"
    result, _ = call("uri", {"url": url, "status": 401})
    assert not result.failed, "without the key the exchange answers 401"
    result, ctx = call("uri", {"url": url, "headers": {"X-API-KEY": api_key}})
    assert not result.failed and result.data["status"] == 200, result.msg
    assert api_key not in repr((result.msg, result.data)) and api_key in ctx.secrets.values
