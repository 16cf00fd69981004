"""An engine stopped (as a halt's last resort leaves it): `resume` names the service, the host,
its state and the command that brings it back, and that command does bring it back."""

from __future__ import annotations

from urllib.parse import urlsplit


def test_resume_with_a_stopped_engine_names_the_service_and_the_command(ripcord, access):
    port = urlsplit(access.plan.host("exec-1").service("titan-execution").health_url).port
    access.ssh("exec-1", "supervisorctl stop titan-execution")
    try:
        assert "STOPPED" in access.ssh("exec-1", "supervisorctl status titan-execution", check=False).stdout
        refused = ripcord("resume", "--host", "exec", "--yes")
        assert refused.returncode == 1, refused.stderr
        fix = "invoke restart --host exec-1 --service titan-execution"
        assert (f"titan-execution on exec-1 is not running (supervisor: STOPPED; 127.0.0.1:{port}: "
                f"connect failed); start it: {fix}") in refused.stdout, refused.stdout

        brought_back = ripcord(*fix.split()[1:], "--yes")
        assert brought_back.returncode == 0, brought_back.stdout + brought_back.stderr
        assert "RUNNING" in access.ssh("exec-1", "supervisorctl status titan-execution").stdout
    finally:
        access.ssh("exec-1", "supervisorctl start titan-execution", check=False)
        access.wait_for(lambda: access.health("exec-1", "titan-execution")["nats_connected"]
                        and not access.health("exec-1", "titan-execution")["halted"],
                        timeout=30, interval=0.2, what="exec-1 trading again")
