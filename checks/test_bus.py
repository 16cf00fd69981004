"""Bus: NATS answers its health check and JetStream has the execution stream and its consumer.
"""

import json

import pytest

pytestmark = [pytest.mark.bus, pytest.mark.restart, pytest.mark.resume, pytest.mark.restore,
              pytest.mark.scenario01, pytest.mark.scenario02, pytest.mark.scenario11]


@pytest.fixture(scope="module")
def monitor(host, hostvars):
    if "nats" not in (hostvars.get("services") or []):
        pytest.skip("NATS does not run on this host")
    url = hostvars.get("nats_monitor_url")
    if not url:
        pytest.skip("no nats_monitor_url in the inventory")

    def get(path: str):
        return host.run("curl -sS --max-time 3 %s", url.rstrip("/") + path)
    return get


def test_nats_is_healthy(host, monitor):
    out = monitor("/healthz")
    assert out.rc == 0, f"NATS monitoring does not answer on {host.backend.hostname}: " + (
        out.stderr.strip() or "no answer")
    status = (json.loads(out.stdout or "{}") if out.stdout.strip().startswith("{") else {})
    assert status.get("status") == "ok", (f"NATS is not healthy on {host.backend.hostname}: "
                                          f"{status.get('error') or out.stdout.strip()[:120]}")


def test_execution_stream_and_consumer(host, monitor, setting):
    stream = setting("nats_stream", "TITAN_EXECUTION")
    consumer = setting("nats_consumer", "execution_group")
    out = monitor("/jsz?consumers=true")
    assert out.rc == 0, f"NATS monitoring does not answer on {host.backend.hostname}"
    jsz = json.loads(out.stdout)
    streams = {s["name"]: s for account in jsz.get("account_details") or []
               for s in account.get("stream_detail") or []}
    assert stream in streams, (f"JetStream stream {stream} missing on {host.backend.hostname} "
                               f"(streams: {', '.join(sorted(streams)) or 'none'})")
    consumers = {c["name"] for c in streams[stream].get("consumer_detail") or []}
    assert consumer in consumers, (
        f"durable consumer {consumer} missing on stream {stream} on {host.backend.hostname} "
        f"(consumers: {', '.join(sorted(consumers)) or 'none'})")
