"""The sandbox's root provisioning never follows a symlink the hosts' login user planted in its
own directories (issue 15). The links are planted over ssh as that user; the victims are root's
files, read directly afterwards.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path

import pytest

from ripcord.errors import SandboxError
from ripcord.sandbox import provision
from ripcord.sandbox.plan import state_base

HOST = "exec-1"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="provisioning crosses users only as root")


@pytest.fixture
def victims():
    """A root-only directory holding a root-only file: what a planted link would point at."""
    directory = Path(tempfile.mkdtemp(prefix="hostside-victim-", dir=state_base()))
    directory.chmod(0o700)
    victim = directory / "victim.txt"
    victim.write_text("root's own\n")
    victim.chmod(0o600)
    yield directory, victim
    victim.unlink()
    directory.rmdir()


def _provision(fleet):
    return provision.provision(fleet.plan, fleet.user, fleet.runtime)


def test_a_link_at_a_file_provisioning_writes_is_replaced_not_followed(fleet, access, victims):
    _, victim = victims
    version = (provision.STANDINS / "VERSION").read_text().strip()
    release = fleet.plan.host(HOST).titan_home / "releases" / version
    original = (provision.STANDINS / "brain.py").read_text()
    q = shlex.quote
    # a changed release file (so provisioning rewrites it) and links at the names it writes
    access.ssh(HOST, f"cd {q(str(release))} && printf '# changed\\n' >> brain.py && "
                     f"ln -s {q(str(victim))} brain.py.tmp && "
                     f"mv ledger.py ledger.moved && ln -s {q(str(victim))} ledger.py")
    try:
        _provision(fleet)
        assert victim.read_text() == "root's own\n"
        assert victim.stat().st_mode & 0o777 == 0o600 and victim.stat().st_uid == 0
        assert (release / "brain.py").read_text() == original
        assert not (release / "ledger.py").is_symlink()
        assert (release / "ledger.py").read_text() == (provision.STANDINS / "ledger.py").read_text()
        assert (release / "ledger.py").stat().st_uid == os.stat(fleet.plan.host(HOST).titan_home).st_uid
    finally:
        access.ssh(HOST, f"cd {q(str(release))} && rm -f brain.py.tmp ledger.moved")


def test_a_link_in_place_of_a_directory_provisioning_owns_is_refused(fleet, access, victims):
    directory, _ = victims
    faults = fleet.plan.host(HOST).titan_home / "state" / "faults"
    q = shlex.quote
    access.ssh(HOST, f"mv {q(str(faults))} {q(str(faults))}.moved && "
                     f"ln -s {q(str(directory))} {q(str(faults))}")
    try:
        with pytest.raises(SandboxError, match=f"refusing to provision through {faults}"):
            _provision(fleet)
        st = directory.stat()
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o700, 0, 0), "the link was followed"
    finally:
        access.ssh(HOST, f"rm -f {q(str(faults))} && mv {q(str(faults))}.moved {q(str(faults))}")
    _provision(fleet)  # and with the link gone, provisioning goes through again
    assert faults.is_dir() and not faults.is_symlink()
