"""Halt speed on a sandbox fleet: `ripcord halt` end to end, from the process's start.

Each run starts from a trading fleet (halt files removed, a signed NORMAL answered by every
engine, 2 s to settle), then runs `ripcord halt --host sandbox --json` and reads, per run:
- every engine halted after the process started: each engine's own `halted_since` (its /health)
  minus the time.time() taken just before the process was started (same machine, same clock);
  the slowest engine counts;
- the slowest engine's answer after the publish ("answered in N ms" in its result);
- the whole verified halt: the process's wall time (every rung, exchange, the halt checks).
Three ways, alternating run by run: `controller` (the controller holds the signing secret,
inventory titan_hmac_secret_env: the halt is published before any SSH connection,
ripcord/fasthalt.py), `hosts` (the secret read over SSH from a host first), both with the installed
`ripcord` command; and `controller, invoke` (the same as `invoke halt` in the checkout, which loads
invoke before ripcord's tasks). Run 0 of each warms caches and is not counted. Medians, minimums
and maximums are reported.
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
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from run import machine  # noqa: E402  (bench/run.py)

from ripcord import bus, dotenv  # noqa: E402
from ripcord.inventory import Inventory  # noqa: E402
from ripcord.sandbox.fleet import Fleet  # noqa: E402
from ripcord.sandbox.plan import state_base  # noqa: E402

ANSWERED = re.compile(r"answered in ([\d.]+) ms")
ACK_TIMEOUT_MS = 1000.0  # the halt module's default answer timeout (ack_timeout)


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


def halt_once(fleet: Fleet, inventory: Inventory, env: dict[str, str], extra: list[str],
              command: list[str]) -> tuple[float, float, list[float]]:
    """(wall s, ms from the process's start to the last engine's halted_since, answers in ms)."""
    argv = [*command, "halt", "--host", "sandbox", "--inventory", str(fleet.inventory), *extra,
            "--reason", "bench", "--json"]
    born = time.time()
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"ripcord halt failed ({result.returncode}):\n{result.stdout[-3000:]}"
                         f"\n{result.stderr[-2000:]}")
    records = [r for r in json.loads(result.stdout)["results"] if r["module"] == "halt"]
    acks = [float(m.group(1)) for r in records if (m := ANSWERED.search(r["msg"]))]
    if not records:
        raise SystemExit(f"the halt reported no engine:\n{result.stdout[-3000:]}")
    # An engine that did not answer on NATS within the halt's answer timeout (the halt file or a
    # later rung halted it: the run's exit 0 says every engine is halted): counted as that
    # timeout, a miss.
    acks += [ACK_TIMEOUT_MS] * (len(records) - len(acks))
    halted = []
    for host in inventory.group_hosts("exec"):
        url = inventory.host_vars(host)["health_urls"]["titan-execution"]
        with urllib.request.urlopen(url, timeout=5) as answer:
            halted.append(float(json.loads(answer.read())["halted_since"]))
    return wall, (max(halted) - born) * 1000, acks


def row(name: str, values: list[float], digits: int) -> str:
    return (f"| {name} | {statistics.median(values):.{digits}f} | {min(values):.{digits}f} | "
            f"{max(values):.{digits}f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=10, help="sandbox size (default 10)")
    parser.add_argument("--runs", type=int, default=9, help="timed runs of each way (default 9)")
    parser.add_argument("--base-port", type=int, default=31000)
    parser.add_argument("--fleet", default="bench-fleet", help="fleet directory name")
    parser.add_argument("--keep", action="store_true", help="leave the fleet up")
    parser.add_argument("--no-doc", action="store_true", help="do not regenerate docs/performance.md")
    args = parser.parse_args()
    root = state_base() / args.fleet
    fleet = Fleet(root, base_port=args.base_port, hosts=args.hosts, inventory=root / "inventory.yml")
    fleet.up()
    ways = ("controller", "hosts", "controller, invoke")
    commands = {"controller": [str(Path(sys.executable).parent / "ripcord")],
                "controller, invoke": [sys.executable, "-m", "invoke", "--search-root", str(REPO)]}
    seen: dict[str, dict[str, list[float]]] = {w: {"wall": [], "halted": [], "ack": []} for w in ways}
    try:
        inventory = Inventory.load([fleet.inventory])
        engines = inventory.group_hosts("exec")
        secret = dotenv.parse((Path(str(inventory.host_vars(engines[0])["titan_home"])) / ".env")
                              .read_text())["TITAN_HMAC_SECRET"]
        load_before = os.getloadavg()
        with tempfile.TemporaryDirectory() as tmp:
            controller = Path(tmp) / "controller-secret.yml"
            controller.write_text("all:\n  vars:\n    titan_hmac_secret_env: BENCH_HMAC_SECRET\n")
            env = {**os.environ, "RIPCORD_JOURNAL": str(Path(tmp) / "journal.jsonl")}
            for run in range(args.runs + 1):
                for way in ways:
                    resume(fleet, inventory)
                    time.sleep(2.0)  # a fleet in steady trading, not one still resuming
                    extra, more = ((["--inventory", str(controller)], {"BENCH_HMAC_SECRET": secret})
                                   if way.startswith("controller") else ([], {}))
                    wall, halted, answered = halt_once(fleet, inventory, {**env, **more}, extra,
                                                       commands.get(way, commands["controller"]))
                    if run:
                        seen[way]["wall"].append(wall)
                        seen[way]["halted"].append(halted)
                        seen[way]["ack"].append(max(answered))
        print(f"\n## ripcord halt on a {args.hosts}-host sandbox ({len(engines)} engines), "
              f"{args.runs} runs each way, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs")
        print("| measure | median | min | max |\n|---|---|---|---|")
        for way in ways:
            print(row(f"{way}: every engine halted after the process started (ms)",
                      seen[way]["halted"], 0))
            print(row(f"{way}: slowest engine's answer after the publish (ms)", seen[way]["ack"], 1))
            print(row(f"{way}: the whole verified halt (s)", seen[way]["wall"], 2))
        out = HERE / "results"
        out.mkdir(exist_ok=True)
        (out / f"halt-{args.hosts}.json").write_text(json.dumps(
            {"hosts": args.hosts, "engines": len(engines), "machine": machine(),
             "load": {"before": load_before, "after": os.getloadavg()}, "ways": seen}, indent=2) + "\n")
    finally:
        resume(fleet, Inventory.load([fleet.inventory]))
        if not args.keep:
            fleet.down(purge=True)
    if not args.no_doc:
        import report as doc

        doc.regenerate()


if __name__ == "__main__":
    main()
