"""Resources: disk, memory and load below the runbooks' thresholds (scenarios 5, 10, 17)."""

import pytest

pytestmark = [pytest.mark.resources, pytest.mark.restart, pytest.mark.scenario01]


@pytest.mark.scenario10
def test_disk_use_of_titan_home(host, hostvars, setting):
    """Disk use of titan_home's filesystem below check_disk_max_percent (runbook: < 80 %)."""
    limit = setting("disk_max_percent", 80.0)
    out = host.check_output("df -P %s", hostvars["titan_home"]).splitlines()[-1].split()
    used, mount = float(out[4].rstrip("%")), out[5]
    assert used < limit, (f"disk {used:.0f}% full on {host.backend.hostname} ({mount}, holding "
                          f"titan_home): the limit is {limit:.0f}%")


@pytest.mark.scenario05
def test_memory_use(host, setting):
    """Memory in use (total - available) below check_memory_max_percent (runbook: < 90 %)."""
    limit = setting("memory_max_percent", 90.0)
    info = {}
    for line in host.check_output("cat /proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        info[key] = int(rest.split()[0]) if rest.split() else 0
    used = 100.0 * (info["MemTotal"] - info["MemAvailable"]) / info["MemTotal"]
    assert used < limit, (f"memory {used:.0f}% used on {host.backend.hostname}: "
                          f"the limit is {limit:.0f}%")


@pytest.mark.scenario17
def test_load_per_core(host, setting):
    """The 5-minute load average per core (sustained load) below check_load_max_per_core."""
    limit = setting("load_max_per_core", 4.0)
    cores, loadavg = host.check_output("nproc && cat /proc/loadavg").split("\n", 1)
    load5, cores = float(loadavg.split()[1]), int(cores)
    per_core = load5 / max(cores, 1)
    assert per_core < limit, (f"load {per_core:.2f} per core on {host.backend.hostname} "
                              f"(5-min load {load5:.2f}, {cores} cores): the limit is {limit:.2f}")
