"""The release module's pure parts: release names, the split rule, the host order, the roles."""

import pytest

from ripcord.errors import InputError
from ripcord.modules.release import _rank, release_name, release_services, role_of, split
from ripcord.topology import Topology

TOPOLOGY = Topology.parse("""services:
  nats: {}
  titan-brain: {depends_on: [nats]}
  titan-execution: {depends_on: [nats]}
  titan-hunter: {depends_on: [titan-brain]}
""")


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "-rf", "1..2", ".hidden", "a b"])
def test_a_release_name_is_a_directory_name(bad):
    with pytest.raises(InputError, match="is not a release name"):
        release_name(bad)
    assert release_name(" 1.4.3-rc1 ") == "1.4.3-rc1"


def state(link, **health):
    return {"link": link, "health": health}


def test_split_names_the_role_hosts_and_versions():
    roles = {"exec-1": "exec", "exec-2": "exec", "core-1": "core"}
    states = {"exec-1": state("1.4.3"), "exec-2": state("1.4.2"), "core-1": state("1.4.2")}
    assert split(states, roles) == ["role exec: exec-1 1.4.3, exec-2 1.4.2"]
    states["exec-2"] = state("1.4.3")
    assert split(states, roles) == []


def test_a_service_not_restarted_since_the_switch_is_a_split_too():
    states = {"exec-1": state("1.4.3", **{"titan-execution": "1.4.2"})}
    assert split(states, {"exec-1": "exec"}) == [
        "role exec: exec-1 1.4.3 (titan-execution reports 1.4.2)"]
    states = {"exec-1": state("1.4.3", **{"titan-execution": None})}  # not answering: no version
    assert split(states, {"exec-1": "exec"}) == []


def test_hosts_go_in_dependency_order_and_roles_fall_back_to_services():
    assert _rank(TOPOLOGY, []) == -1 and _rank(TOPOLOGY, ["titan-hunter"]) == 2
    assert _rank(TOPOLOGY, ["titan-hunter", "titan-execution"]) == 1
    assert role_of({"titan_role": "exec", "services": ["a"]}) == "exec"
    assert role_of({"services": ["b", "a"]}) == "a+b"
    assert release_services({"services": ["nats", "titan-brain"],
                             "health_urls": {"titan-brain": "http://x/health"}}) == ["titan-brain"]
    assert release_services({"services": ["nats"], "release_services": ["nats"]}) == ["nats"]
