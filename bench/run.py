"""Side-by-side benchmarks: ripcord against plain Fabric (the floor), pyinfra and ansible-playbook
on one sandbox fleet of 10 hosts, then grown to 50; `ripcord verify` against plain pytest with
testinfra's ssh backend at 10 hosts. Writes bench/results/bench-<hosts>.json and regenerates
docs/performance.md's measured section (bench/report.py).

Whole-process wall time (what an operator waits for) and peak resident memory, each tool run in
turn so load affects all alike, median of N runs. Every tool connects with key auth and host key
checking on. Ansible gets pipelining, forks = hosts and no fact gathering; its SSH ControlPersist
sockets are not reused across runs (a fresh control directory per run), as an incident's first
run is always cold.
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

BENCH_BASE_PORT = 31000  # below the ephemeral range (510 ports at 50 hosts); apart from other fleets
TOOLS = ["ripcord", "plain Fabric", "pyinfra", "ansible-playbook"]
TOUCH = "touch a file on every host and read it back"
VERIFY = "the whole check suite on every host"


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


def fabric_hosts(fleet: Fleet, workdir: Path) -> Path:
    """What the plain Fabric script needs: the hosts, the key, the pinned known_hosts."""
    path = workdir / "fabric_hosts.json"
    path.write_text(json.dumps({"user": fleet.user, "key": str(fleet.plan.client_key),
                                "known_hosts": str(fleet.plan.known_hosts),
                                "hosts": [{"name": h.name, "port": h.ssh_port, "home": str(h.titan_home)}
                                          for h in fleet.plan.hosts]}))
    return path


def commands(fleet: Fleet, workdir: Path, tools: list[str]) -> dict[str, list[str]]:
    hosts = len(fleet.plan.hosts)
    every = {
        "ripcord": [bin_path("ripcord"), "play", str(HERE / "touch_and_read.yml"), "--host", "sandbox",
                    "--inventory", str(fleet.inventory), "--forks", str(hosts)],
        "plain Fabric": [sys.executable, str(HERE / "fabric_touch_and_read.py"),
                         str(fabric_hosts(fleet, workdir))],
        "pyinfra": [bin_path("pyinfra"), "-y", "--parallel", str(hosts),
                    str(pyinfra_inventory(fleet, workdir)), str(HERE / "pyinfra_touch_and_read.py")],
        "ansible-playbook": [bin_path("ansible-playbook"), "-i", str(ansible_inventory(fleet, workdir)),
                             "--forks", str(hosts), str(HERE / "ansible_touch_and_read.yml")],
    }
    return {name: argv for name, argv in every.items() if name in tools}


def verify_commands(fleet: Fleet, workdir: Path) -> dict[str, list[str]]:
    """The whole check suite on every host: ripcord over its own connections, and plain pytest
    with testinfra's ssh backend (OpenSSH, host key checking on, its default ControlPersist)."""
    config = workdir / "ssh_config"
    config.write_text(f"Host *\n  IdentityFile {fleet.plan.client_key}\n"
                      f"  UserKnownHostsFile {fleet.plan.known_hosts}\n"
                      "  StrictHostKeyChecking yes\n  BatchMode yes\n")
    hosts = ",".join(f"ssh://{fleet.user}@127.0.0.1:{h.ssh_port}" for h in fleet.plan.hosts)
    return {
        "ripcord verify": [bin_path("ripcord"), "verify", "--host", "sandbox",
                           "--inventory", str(fleet.inventory)],
        "pytest + testinfra ssh": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   str(REPO / "checks"), "-m", "not situational",
                                   f"--hosts={hosts}", f"--ssh-config={config}", "--tb=no"],
    }


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak resident memory in MiB) of one whole process (os.wait4's ru_maxrss:
    the largest of the process and its waited-for children)."""
    with tempfile.TemporaryFile("w+") as output:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0:
            output.seek(0)
            raise SystemExit(f"{Path(argv[0]).name} failed ({code}):\n{output.read()[-3000:]}")
    return elapsed, usage.ru_maxrss / 1024


def machine() -> dict:
    """What the numbers were measured on, and how busy it was."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown")
    mem = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), 0)
    return {"cpus": os.cpu_count(), "model": model, "memory_mib": mem, "python": sys.version.split()[0],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, nargs="+", default=[10, 50],
                        help="sandbox sizes, each in turn on one growing fleet (default 10 50)")
    parser.add_argument("--runs", type=int, default=5,
                        help="runs per tool of the touch job (median; default 5; 0 skips it)")
    parser.add_argument("--tools", nargs="+", default=TOOLS, choices=TOOLS,
                        help="the touch job's tools (default: all)")
    parser.add_argument("--verify-runs", type=int, default=5,
                        help="runs of `ripcord verify` at 10 hosts (default 5; 0 skips the job)")
    parser.add_argument("--plain-verify-runs", type=int, default=1,
                        help="runs of plain pytest + testinfra's ssh backend (minutes each; default 1)")
    parser.add_argument("--keep", action="store_true", help="leave the bench fleet up")
    parser.add_argument("--no-doc", action="store_true", help="do not regenerate docs/performance.md")
    args = parser.parse_args()
    root = state_base() / "bench-fleet"
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    fleet = None
    try:
        for hosts in sorted(args.hosts):
            fleet = Fleet(root, base_port=BENCH_BASE_PORT, hosts=hosts, inventory=root / "inventory.yml")
            fleet.up(timeout=300)  # a larger size grows the running fleet
            with tempfile.TemporaryDirectory() as tmp:
                workdir = Path(tmp)
                jobs: dict[str, tuple[dict[str, list[str]], dict[str, int]]] = {}
                if args.runs:
                    argv = commands(fleet, workdir, args.tools)
                    jobs[TOUCH] = argv, dict.fromkeys(argv, args.runs)
                if args.verify_runs and hosts == 10:
                    argv = verify_commands(fleet, workdir)
                    jobs[VERIFY] = argv, {"ripcord verify": args.verify_runs,
                                          "pytest + testinfra ssh": args.plain_verify_runs}
                load_before = os.getloadavg()
                results = {job: measure(argv, runs, fleet, workdir) for job, (argv, runs) in jobs.items()}
                record = {"hosts": hosts, "machine": machine(),
                          "load": {"before": load_before, "after": os.getloadavg()}, "jobs": results}
                (out / f"bench-{hosts}.json").write_text(json.dumps(record, indent=2) + "\n")
                for job, times in results.items():
                    report(job, times, hosts)
    finally:
        if fleet is not None and not args.keep:
            fleet.down(purge=True)
    if not args.no_doc:
        import report as doc

        doc.regenerate()


def measure(argv: dict[str, list[str]], runs: dict[str, int], fleet: Fleet,
            workdir: Path) -> dict[str, dict[str, list[float]]]:
    """Each tool in turn, run after run (so load affects all alike); run 0 warms caches."""
    times: dict[str, dict[str, list[float]]] = {name: {"wall_s": [], "peak_mib": []}
                                                for name in argv if runs[name]}
    for run in range(max(runs.values()) + 1):
        for name, command in argv.items():
            if name not in times or run > runs[name] or (run == 0 and runs[name] == 1
                                                          and "testinfra" in name):
                continue  # one plain testinfra run (minutes) needs no warm-up
            control = workdir / f"cp-{name.replace(' ', '_')}-{run}-{time.monotonic_ns()}"
            control.mkdir()
            env = {**os.environ, "ANSIBLE_PIPELINING": "True",
                   "ANSIBLE_HOST_KEY_CHECKING": "True",
                   "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control),
                   "ANSIBLE_STDOUT_CALLBACK": "default", "ANSIBLE_NOCOLOR": "1",
                   "RIPCORD_JOURNAL": str(workdir / "journal.jsonl"),
                   "RIPCORD_INVENTORY": str(fleet.inventory)}
            elapsed, peak = timed(command, env, workdir)
            if run or (runs[name] == 1 and "testinfra" in name):
                times[name]["wall_s"].append(round(elapsed, 4))
                times[name]["peak_mib"].append(round(peak, 1))
    return times


def report(job: str, times: dict[str, dict[str, list[float]]], hosts: int) -> None:
    """A markdown table on stdout: the first tool (ripcord) against each other."""
    medians = {name: statistics.median(t["wall_s"]) for name, t in times.items()}
    ours = next(iter(times))
    print(f"\n{job}: {hosts} hosts, whole-process wall time\n")
    print("| tool | runs | median (s) | min (s) | max (s) | other / ripcord | peak MiB |")
    print("|---|---|---|---|---|---|---|")
    for name, t in times.items():
        ratio = "-" if name == ours else f"{medians[name] / medians[ours]:.2f}x"
        print(f"| {name} | {len(t['wall_s'])} | {medians[name]:.2f} | {min(t['wall_s']):.2f} | "
              f"{max(t['wall_s']):.2f} | {ratio} | {max(t['peak_mib']):.0f} |")


if __name__ == "__main__":
    main()
