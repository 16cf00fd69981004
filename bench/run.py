"""Side-by-side benchmarks: ripcord against ansible-playbook and pyinfra on one sandbox fleet.

Whole-process wall time (what an operator waits for), each tool run in turn so load affects all
alike, median of N runs. Every tool connects with key auth and host key checking on. Ansible gets
pipelining, forks = hosts and no fact gathering; its SSH ControlPersist sockets are not reused
across runs (a fresh control directory per run), as an incident's first run is always cold.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from ripcord.sandbox.fleet import Fleet  # noqa: E402
from ripcord.sandbox.plan import state_base  # noqa: E402

BENCH_BASE_PORT = 31000  # below the ephemeral range; apart from the dev (24000) and test fleets


def bin_path(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def ansible_inventory(fleet: Fleet, workdir: Path) -> Path:
    """The generated inventory, plus what ansible needs to keep host key checking on."""
    doc = yaml.safe_load(fleet.inventory.read_text())
    sandbox_vars = doc["all"]["children"]["sandbox"]["vars"]
    sandbox_vars["ansible_ssh_common_args"] = (
        f"-o UserKnownHostsFile={fleet.plan.known_hosts} -o StrictHostKeyChecking=yes")
    sandbox_vars["ansible_python_interpreter"] = "/usr/bin/python3"
    path = workdir / "ansible_inventory.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def pyinfra_inventory(fleet: Fleet, workdir: Path) -> Path:
    hosts = [("127.0.0.1", {"ssh_port": h.ssh_port, "ssh_user": fleet.user,
                            "ssh_key": str(fleet.plan.client_key),
                            "ssh_known_hosts_file": str(fleet.plan.known_hosts),
                            "ssh_strict_host_key_checking": "yes",
                            "titan_home": str(h.titan_home), "name_": h.name})
             for h in fleet.plan.hosts]
    path = workdir / "pyinfra_inventory.py"
    path.write_text("sandbox = " + repr([(h, {k: v for k, v in d.items() if k != "name_"})
                                         for h, d in hosts]) + "\n")
    return path


def commands(fleet: Fleet, workdir: Path) -> dict[str, list[str]]:
    hosts = len(fleet.plan.hosts)
    return {
        "ripcord": [bin_path("invoke"), "--search-root", str(REPO), "play",
                    str(HERE / "touch_and_read.yml"), "--host", "sandbox",
                    "--inventory", str(fleet.inventory), "--forks", str(hosts)],
        "ansible-playbook": [bin_path("ansible-playbook"), "-i", str(ansible_inventory(fleet, workdir)),
                             "--forks", str(hosts), str(HERE / "ansible_touch_and_read.yml")],
        "pyinfra": [bin_path("pyinfra"), "-y", "--parallel", str(hosts),
                    str(pyinfra_inventory(fleet, workdir)), str(HERE / "pyinfra_touch_and_read.py")],
    }


def verify_commands(fleet: Fleet, workdir: Path) -> dict[str, list[str]]:
    """The whole check suite on every host: ripcord over its own connections, and plain pytest
    with testinfra's ssh backend (OpenSSH, host key checking on, its default ControlPersist)."""
    config = workdir / "ssh_config"
    config.write_text(f"Host *\n  IdentityFile {fleet.plan.client_key}\n"
                      f"  UserKnownHostsFile {fleet.plan.known_hosts}\n"
                      "  StrictHostKeyChecking yes\n  BatchMode yes\n")
    hosts = ",".join(f"ssh://{fleet.user}@127.0.0.1:{h.ssh_port}" for h in fleet.plan.hosts)
    return {
        "ripcord verify": [bin_path("invoke"), "--search-root", str(REPO), "verify",
                           "--host", "sandbox", "--inventory", str(fleet.inventory)],
        "pytest + testinfra ssh": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   str(REPO / "checks"), "-m", "not situational",
                                   f"--hosts={hosts}", f"--ssh-config={config}", "--tb=no"],
    }


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{Path(argv[0]).name} failed ({result.returncode}):\n"
                         f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=10, help="sandbox size (default 10)")
    parser.add_argument("--runs", type=int, default=5,
                        help="runs per tool of the touch job (median; default 5; 0 skips it)")
    parser.add_argument("--verify-runs", type=int, default=3,
                        help="runs per tool of the check suite (plain testinfra takes minutes; "
                             "0 skips it)")
    parser.add_argument("--keep", action="store_true", help="leave the bench fleet up")
    args = parser.parse_args()
    root = state_base() / "bench-fleet"
    fleet = Fleet(root, base_port=BENCH_BASE_PORT, hosts=args.hosts, inventory=root / "inventory.yml")
    fleet.up()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            jobs = {}
            if args.runs:
                jobs["touch a file on every host and read it back"] = commands(fleet, workdir)
            if args.verify_runs:
                jobs["the whole check suite on every host"] = verify_commands(fleet, workdir)
            results = {}
            for job, argv in jobs.items():
                times: dict[str, list[float]] = {name: [] for name in argv}
                runs = args.runs if job.startswith("touch") else args.verify_runs
                for run in range(runs + 1):  # run 0 warms caches (imports, page cache)
                    for name, command in argv.items():
                        control = workdir / f"cp-{len(results)}-{name.replace(' ', '_')}-{run}"
                        control.mkdir()
                        env = {**os.environ, "ANSIBLE_PIPELINING": "True",
                               "ANSIBLE_HOST_KEY_CHECKING": "True",
                               "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control),
                               "ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_NOCOLOR": "1",
                               "RIPCORD_JOURNAL": str(workdir / "journal.jsonl"),
                               "RIPCORD_INVENTORY": str(fleet.inventory)}
                        elapsed = timed(command, env, workdir)
                        if run:
                            times[name].append(elapsed)
                results[job] = times
                report(job, times, args.hosts, runs)
            out = HERE / "results"
            out.mkdir(exist_ok=True)
            (out / "latest.json").write_text(json.dumps(
                {"hosts": args.hosts, "runs": args.runs, "results": results}, indent=2))
    finally:
        if not args.keep:
            fleet.down(purge=True)


def report(job: str, times: dict[str, list[float]], hosts: int, runs: int) -> None:
    """A markdown table: the first tool (ripcord) against each peer."""
    medians = {name: statistics.median(values) for name, values in times.items()}
    ours = next(iter(times))
    print(f"\n{job}: {hosts} hosts, median of {runs} runs, whole-process wall time\n")
    print("| tool | median (s) | min (s) | max (s) | ripcord is faster by |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        ratio = "-" if name == ours else f"{medians[name] / medians[ours]:.1f}x"
        print(f"| {name} | {medians[name]:.2f} | {min(values):.2f} | {max(values):.2f} | {ratio} |")


if __name__ == "__main__":
    main()
