"""Halt speed on a sandbox fleet: `invoke halt` end to end, and each engine's acknowledgement.

Each run starts from a trading fleet (halt files removed, a signed NORMAL answered by every
engine), then times the whole `invoke halt --host sandbox --json` process (start-up, every rung,
the checks) and reads each engine's answer time from its result ("answered in N ms": from the
publish to the answer's arrival). Run 0 warms caches and is not counted. Medians are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from ripcord import bus, dotenv  # noqa: E402
from ripcord.inventory import Inventory  # noqa: E402
from ripcord.sandbox.fleet import Fleet  # noqa: E402
from ripcord.sandbox.plan import state_base  # noqa: E402

ANSWERED = re.compile(r"answered in ([\d.]+) ms")


def resume(fleet: Fleet, inventory: Inventory) -> None:
    """Back to trading, directly (not the procedure under test): files gone, signed NORMAL."""
    engines = inventory.group_hosts("exec")
    homes = [Path(str(inventory.host_vars(h)["titan_home"])) for h in engines]
    for home in homes:
        (home / "system.halt").unlink(missing_ok=True)
    secret = dotenv.parse((homes[0] / ".env").read_text())["TITAN_HMAC_SECRET"]
    data = bus.encode({"state": "NORMAL", "reason": "bench reset", "operator": "bench"})

    async def send():
        nc = await bus.connect(fleet.plan.nats_url, 2.0)
        try:
            answers = await bus.scatter(nc, bus.HALT_SUBJECT, data,
                                        bus.sign(bus.HALT_SUBJECT, data, secret),
                                        expect=set(engines), timeout=5.0, secret=secret)
        finally:
            await bus.close(nc)
        return answers

    deadline = time.monotonic() + 30  # a fleet just up: engines still connecting to NATS
    while True:
        answers = asyncio.run(send())
        missing = set(engines) - {h for h, (_, a) in answers.by_host.items() if not a.get("halted")}
        if not missing:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"engines not trading again: {sorted(missing)}")
        time.sleep(1)


def halt_once(fleet: Fleet, env: dict[str, str]) -> tuple[float, list[float]]:
    argv = [sys.executable, "-m", "invoke", "--search-root", str(REPO), "halt", "--host",
            "sandbox", "--inventory", str(fleet.inventory), "--reason", "bench", "--json"]
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"invoke halt failed ({result.returncode}):\n{result.stdout[-3000:]}"
                         f"\n{result.stderr[-2000:]}")
    records = [r for r in json.loads(result.stdout)["results"] if r["module"] == "halt"]
    acks = [float(m.group(1)) for r in records if (m := ANSWERED.search(r["msg"]))]
    if len(acks) != len(records):
        raise SystemExit(f"not every engine answered on NATS: {[r['msg'] for r in records]}")
    return wall, acks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=10, help="sandbox size (default 10)")
    parser.add_argument("--runs", type=int, default=9, help="timed runs (default 9)")
    parser.add_argument("--base-port", type=int, default=31000)
    parser.add_argument("--fleet", default="bench-fleet", help="fleet directory name")
    parser.add_argument("--keep", action="store_true", help="leave the fleet up")
    args = parser.parse_args()
    root = state_base() / args.fleet
    fleet = Fleet(root, base_port=args.base_port, hosts=args.hosts, inventory=root / "inventory.yml")
    fleet.up()
    walls, acks = [], []
    try:
        inventory = Inventory.load([fleet.inventory])
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "RIPCORD_JOURNAL": str(Path(tmp) / "journal.jsonl")}
            for run in range(args.runs + 1):
                resume(fleet, inventory)
                time.sleep(2.0)  # a fleet in steady trading, not one still resuming
                wall, answered = halt_once(fleet, env)
                if run:
                    walls.append(wall)
                    acks.append(max(answered))
        engines = len(inventory.group_hosts("exec"))
        print(f"\n## invoke halt on a {args.hosts}-host sandbox ({engines} engines), {args.runs} runs")
        print("| measure | median | min | max |\n|---|---|---|---|")
        print(f"| whole `invoke halt` (s) | {statistics.median(walls):.2f} | {min(walls):.2f} | "
              f"{max(walls):.2f} |")
        print(f"| slowest engine's answer after the publish (ms) | {statistics.median(acks):.1f} | "
              f"{min(acks):.1f} | {max(acks):.1f} |")
        out = HERE / "results"
        out.mkdir(exist_ok=True)
        (out / "halt.json").write_text(json.dumps({"hosts": args.hosts, "walls_s": walls,
                                                   "slowest_ack_ms": acks}, indent=2))
    finally:
        resume(fleet, Inventory.load([fleet.inventory]))
        if not args.keep:
            fleet.down(purge=True)


if __name__ == "__main__":
    main()
