"""setup: a host's facts, as Ansible's fact gathering gives the ones ops playbooks use.

A play with `gather_facts: true` runs it first on every host (as Ansible does); a task may also
call it. One command reads everything; the values are data (never templated again), under
`ansible_facts` and as the top-level `ansible_*` variables Ansible also sets.
"""

from __future__ import annotations

from ripcord.modules.base import Module, Result, TaskContext, register
from ripcord.plays import FACT_NAMES

SCRIPT = ("hostname; hostname -f 2>/dev/null || hostname; uname -s; uname -r; uname -m; "
          "(. /etc/os-release 2>/dev/null; echo \"${ID:-unknown}\"; echo \"${ID_LIKE:-}\"; "
          "echo \"${VERSION_ID:-}\"; echo \"${PRETTY_NAME:-}\"); nproc; "
          "awk '/^MemTotal:/ {print int($2/1024)} /^MemFree:/ {print int($2/1024)}' /proc/meminfo")
# os-release ID (or a family it is like) -> Ansible's os_family
FAMILIES = {"debian": "Debian", "ubuntu": "Debian", "rhel": "RedHat", "centos": "RedHat",
            "fedora": "RedHat", "rocky": "RedHat", "almalinux": "RedHat", "amzn": "RedHat",
            "alpine": "Alpine", "arch": "Archlinux", "suse": "Suse", "opensuse": "Suse"}


def parse(stdout: str) -> dict:
    """The facts from SCRIPT's lines."""
    (hostname, fqdn, system, kernel, machine, distro, like, version, pretty, cpus, total,
     free) = (stdout.splitlines() + [""] * 12)[:12]
    family = next((FAMILIES[i] for i in [distro, *like.split()] if i in FAMILIES), distro.title())
    return {"hostname": hostname, "fqdn": fqdn, "system": system, "kernel": kernel,
            "architecture": machine, "distribution": pretty.split()[0] if pretty else distro.title(),
            "distribution_version": version, "os_family": family,
            "processor_vcpus": int(cpus) if cpus.isdigit() else None,
            "memtotal_mb": int(total) if total.isdigit() else None,
            "memfree_mb": int(free) if free.isdigit() else None}


@register
class Setup(Module):
    """Gathers the host's facts (ansible_hostname, ansible_distribution, ...), as Ansible's setup.

    Changed: never.
    Check mode: runs as usual (it changes nothing).
    Example:
        - setup:
        - debug:
            msg: "{{ ansible_hostname }}"
    """

    name = "setup"
    args = {}
    defines = FACT_NAMES

    def run(self, ctx: TaskContext, args: dict) -> Result:
        out = ctx.run(SCRIPT)
        if out.rc != 0 or not out.stdout.strip():
            return Result(failed=True, msg=f"cannot gather facts: {out.stderr.strip()[:200]}")
        facts = parse(out.stdout)
        return Result(msg=f"{facts['distribution']} {facts['distribution_version']}, "
                          f"{facts['processor_vcpus']} cpus, {facts['memtotal_mb']} MiB",
                      data={"ansible_facts": {"ansible_facts": facts,
                                              **{f"ansible_{k}": v for k, v in facts.items()}}})
