"""Resources: disk, memory and load below the runbooks' thresholds (scenarios 5, 10, 17).

The machine's memory in use says a host is short of it; each service's own resident memory says
which process leaks (runbook 004 #5: `ps aux` for the process's share), so that one is restarted.
"""

import re

import pytest

pytestmark = [pytest.mark.resources, pytest.mark.restart, pytest.mark.scenario01]


@pytest.fixture(scope="session")
def system(read_all):
    """What the three host checks read, in one command a host and on every host at once: df of
    titan_home, /proc/meminfo, nproc with the load; each followed by its own exit status."""
    return read_all(lambda host, hostvars: host.run(
        'df -P %s; echo "@@ $?"; cat /proc/meminfo; echo "@@ $?"; nproc && cat /proc/loadavg; '
        'echo "@@ $?"', hostvars["titan_home"]))


def _part(host, system, index: int, what: str) -> str:
    """Part index of the host's answer; a part that could not be read fails its check."""
    out = system.of(host)
    parts = re.split(r"^@@ (\d+)\n", out.stdout, flags=re.MULTILINE)  # text, status, ..., ""
    ok = out.rc == 0 and len(parts) == 7 and parts[2 * index + 1] == "0"
    assert ok, f"cannot read the {what} on {host.backend.hostname}: {out.stderr.strip()[:200]}"
    return parts[2 * index]


@pytest.mark.scenario10
def test_disk_use_of_titan_home(host, hostvars, setting, system):
    """Disk use of titan_home's filesystem below check_disk_max_percent (runbook: < 80 %)."""
    limit = setting("disk_max_percent", 80.0)
    out = _part(host, system, 0, "disk use").splitlines()[-1].split()
    used, mount = float(out[4].rstrip("%")), out[5]
    assert used < limit, (f"disk {used:.0f}% full on {host.backend.hostname} ({mount}, holding "
                          f"titan_home): the limit is {limit:.0f}%")


@pytest.mark.scenario05
def test_memory_use(host, setting, system):
    """Memory in use (total - available) below check_memory_max_percent (runbook: < 90 %)."""
    limit = setting("memory_max_percent", 90.0)
    info = {}
    for line in _part(host, system, 1, "memory").splitlines():
        key, _, rest = line.partition(":")
        info[key] = int(rest.split()[0]) if rest.split() else 0
    used = 100.0 * (info["MemTotal"] - info["MemAvailable"]) / info["MemTotal"]
    assert used < limit, (f"memory {used:.0f}% used on {host.backend.hostname}: "
                          f"the limit is {limit:.0f}%")


@pytest.mark.scenario05
def test_service_memory(host, hostvars, services, setting, supervised):
    """Each service's resident memory (VmRSS of the main process its service manager gives)
    below check_service_memory_max_mb: a leaking process is named before the host runs short."""
    manager = hostvars.get("service_manager") or "supervisor"
    if not services or manager != "supervisor":
        pytest.skip(f"no pid from {manager} for a service here" if services else "no services")
    limit = setting("service_memory_max_mb", 4096.0)
    states = supervised.of(host)  # supervisord's answer, shared with test_supervisor
    assert not isinstance(states, str), f"supervisord does not answer on {host.backend.hostname}: {states}"
    mine = {name: states[name][1] for name in services if states.get(name, ("", 0))[1]}  # down: supervisor's
    if not mine:
        pytest.skip("no service of this host is running")
    out = host.run(f"for p in {' '.join(str(int(pid)) for pid in mine.values())}; do "
                   "echo \"$p $(sed -n 's/^VmRSS: *//p' /proc/$p/status)\"; done")
    rss_kb = {int(pid): int(rest.split()[0]) for pid, _, rest in
              (line.partition(" ") for line in out.stdout.splitlines()) if rest.split()}
    over = {name: rss_kb[pid] / 1024 for name, pid in mine.items()
            if rss_kb.get(pid, 0) / 1024 >= limit}
    assert not over, (f"memory of a service above {limit:g} MB on {host.backend.hostname}: "
                      + ", ".join(f"{name} {mb:.0f} MB resident" for name, mb in sorted(over.items())))


@pytest.mark.scenario17
def test_load_per_core(host, setting, system):
    """The 5-minute load average per core (sustained load) below check_load_max_per_core."""
    limit = setting("load_max_per_core", 4.0)
    cores, loadavg = _part(host, system, 2, "load").split("\n", 1)
    load5, cores = float(loadavg.split()[1]), int(cores)
    per_core = load5 / max(cores, 1)
    assert per_core < limit, (f"load {per_core:.2f} per core on {host.backend.hostname} "
                              f"(5-min load {load5:.2f}, {cores} cores): the limit is {limit:.2f}")
