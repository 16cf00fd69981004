"""The floor for the touch job: the plain Fabric script an operator would write by hand.

One thread a host, each with its own Fabric Connection (key auth, the fleet's known_hosts, unknown
host keys refused), running the same two commands as touch_and_read.yml: touch a file, read it
back. No inventory, no playbook, no lock, no journal: what SSH and Python cost, and nothing else.

    python bench/fabric_touch_and_read.py HOSTS.json
HOSTS.json: {"user": ..., "key": ..., "known_hosts": ..., "hosts": [{"name", "port", "home"}]}
(bench/run.py writes it from the fleet's plan.)
"""

import json
import sys
import threading

from fabric import Connection
from paramiko import RejectPolicy


def touch_and_read(spec: dict, host: dict, out: dict) -> None:
    conn = Connection("127.0.0.1", user=spec["user"], port=host["port"],
                      connect_kwargs={"key_filename": spec["key"], "look_for_keys": False,
                                      "allow_agent": False})
    conn.client.load_host_keys(spec["known_hosts"])
    conn.client.set_missing_host_key_policy(RejectPolicy())
    try:
        path = f"{host['home']}/state/bench.txt"
        conn.run(f"touch {path}", hide=True)
        out[host["name"]] = conn.run(f"cat {path}", hide=True).return_code
    finally:
        conn.close()


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    out: dict[str, int] = {}
    threads = [threading.Thread(target=touch_and_read, args=(spec, h, out)) for h in spec["hosts"]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = [h["name"] for h in spec["hosts"] if out.get(h["name"]) != 0]
    if failed:
        print("failed: " + " ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
