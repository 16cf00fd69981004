"""The fleet's dependency order (inventory/topology.yml) and the errors a bad topology gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from ripcord.errors import InputError
from ripcord.modules.service import Services
from ripcord.templating import Templar
from ripcord.topology import Topology, find_topology

REPO = Path(__file__).resolve().parents[2]
FLEET = REPO / "inventory" / "topology.yml"
DATABASES = ["nats", "postgresql", "redis"]
STRATEGIES = ["titan-hunter", "titan-scavenger", "titan-sentinel"]


@pytest.fixture(scope="module")
def fleet() -> Topology:
    return Topology.load(FLEET)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topology.yml"
    path.write_text(text)
    return path


# --- the fleet's own topology ---------------------------------------------------------------

def test_tiers_follow_the_runbook_recovery_order(fleet):
    """Runbook 002: databases, then core (brain, execution), then console and strategies."""
    assert fleet.tiers() == [
        DATABASES,
        ["titan-brain", "titan-execution", "titan-market-data"],
        ["titan-console", *STRATEGIES],
    ]


def test_every_service_starts_after_what_it_depends_on(fleet):
    order = fleet.start_order()
    for node in fleet.nodes.values():
        for dependency in node.depends_on:
            assert order.index(dependency) < order.index(node.name), (dependency, node.name)


def test_stop_order_is_the_start_order_reversed(fleet):
    assert fleet.stop_order() == list(reversed(fleet.start_order()))
    assert fleet.stop_order()[-3:] == list(reversed(DATABASES))


def test_a_host_subset_keeps_the_fleet_wide_order(fleet):
    """core-1 runs brain, console and market data: console still waits for the brain."""
    core = ["titan-console", "titan-market-data", "titan-brain"]
    assert fleet.tiers(core) == [["titan-brain", "titan-market-data"], ["titan-console"]]
    assert fleet.stop_order(core) == ["titan-console", "titan-market-data", "titan-brain"]
    assert fleet.tiers(["titan-hunter"]) == [["titan-hunter"]]
    assert fleet.tiers([]) == []


def test_dependents_are_transitive(fleet):
    assert fleet.dependents("titan-brain") == {"titan-console", *STRATEGIES}
    assert fleet.dependents("postgresql") == {"titan-execution"}
    assert fleet.dependents("redis") == {"titan-market-data"}
    assert fleet.dependents("nats") == set(fleet.nodes) - set(DATABASES)
    assert fleet.dependents("titan-console") == set()


def test_dependents_of_an_unknown_service_is_an_input_error(fleet):
    with pytest.raises(InputError, match="'titan-ai-quant' is not in the topology"):
        fleet.dependents("titan-ai-quant")


def test_database_health_checks_render_per_host_and_vanish_when_unknown(fleet):
    templar = Templar()
    sandbox = {"postgres_host": "127.0.0.1", "postgres_port": 24003,
               "redis_url": "redis://127.0.0.1:24004/0", "nats_url": "nats://127.0.0.1:24001"}
    rendered = {s: templar.render(fleet.health(s), sandbox) for s in DATABASES}
    assert rendered == {"postgresql": "tcp://127.0.0.1:24003", "redis": "redis://127.0.0.1:24004/0",
                        "nats": "nats://127.0.0.1:24001"}
    assert {s: templar.render(fleet.health(s), {}) for s in DATABASES} == dict.fromkeys(DATABASES, "")
    assert fleet.health("titan-brain") is None  # the host's health_urls entry


def test_find_topology_defaults_to_the_repository_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert find_topology() == FLEET
    assert find_topology(str(FLEET)) == FLEET


# --- errors: file, line, and what is wrong --------------------------------------------------

def test_a_cycle_names_the_file_the_line_and_the_path(tmp_path):
    path = write(tmp_path, """services:
  nats: {}
  titan-brain:
    depends_on: [nats, titan-console]
  titan-console:
    depends_on:
      - titan-brain
""")
    with pytest.raises(InputError) as caught:
        Topology.load(path)
    error = caught.value
    assert error.file == str(path)
    assert error.line in (4, 7)  # the edge that closes the cycle, wherever graphlib starts
    path_text = ("titan-brain -> titan-console -> titan-brain" if error.line == 4
                 else "titan-console -> titan-brain -> titan-console")
    assert str(error) == (f"{path}:{error.line}: dependency cycle: {path_text} "
                          "(-> means 'depends on')")
    assert error.exit_code == 2


def test_a_longer_cycle_lists_every_service_on_it(tmp_path):
    path = write(tmp_path, "services:\n  a: {depends_on: [b]}\n  b: {depends_on: [c]}\n"
                           "  c: {depends_on: [a]}\n  d: {depends_on: [a]}\n")
    with pytest.raises(InputError, match=r"dependency cycle: (a -> b -> c -> a|b -> c -> a -> b"
                                         r"|c -> a -> b -> c)"):
        Topology.load(path)


def test_a_service_depending_on_itself_is_a_cycle(tmp_path):
    path = write(tmp_path, "services:\n  redis:\n    depends_on: [redis]\n")
    with pytest.raises(InputError, match=r"topology.yml:3: dependency cycle: redis -> redis"):
        Topology.load(path)


def test_an_unknown_dependency_names_its_line(tmp_path):
    path = write(tmp_path, """services:
  nats:
  titan-brain:
    depends_on:
      - nats
      - postgres
""")
    with pytest.raises(InputError) as caught:
        Topology.load(path)
    assert str(caught.value) == f"{path}:6: titan-brain depends on unknown service 'postgres'"
    assert caught.value.hint


@pytest.mark.parametrize("text, line, message", [
    ("services:\n  a: [b]\n", 2, "a: expected a mapping of settings"),
    ("services:\n  a:\n    depends_on: b\n", 3, "depends_on is a list of service names"),
    ("services:\n  a:\n    depends_on: [{x: 1}]\n", 3, "depends_on lists service names"),
    ("services:\n  a:\n    requires: [b]\n", 3, "unknown setting 'requires'"),
    ("services:\n  a:\n  b:\n  a:\n", 4, "duplicate key 'a'"),
    ("services:\n  a:\n    health: [x]\n", 3, "health is a URL"),
    ("nodes:\n  a:\n", 1, "unknown top-level key 'nodes'"),
    ("services: [a, b]\n", 1, "`services:` maps each service name"),
    ("services:\n  a: {depends_on: [b\n", 3, "invalid YAML"),
    ("- a\n", 1, "a topology is a mapping"),
])
def test_malformed_files_name_the_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as caught:
        Topology.load(path)
    assert caught.value.line == line, str(caught.value)
    assert message in str(caught.value)


def test_an_empty_service_entry_has_no_dependencies(tmp_path):
    topology = Topology.load(write(tmp_path, "services:\n  a:\n  b: {}\n  c: {depends_on: []}\n"))
    assert topology.tiers() == [["a", "b", "c"]]


def test_a_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read topology"):
        Topology.load(tmp_path / "nope.yml")


# --- the playbook validator's view ----------------------------------------------------------

def test_the_services_module_reports_a_cycle_at_validation(tmp_path):
    path = write(tmp_path, "services:\n  a: {depends_on: [b]}\n  b: {depends_on: [a]}\n")
    problems = Services.check_args({"state": "restarted", "topology_file": str(path)})
    assert len(problems) == 1 and "dependency cycle" in problems[0] and str(path) in problems[0]
    assert Services.topology_problems(str(path)) == problems


def test_the_services_module_checks_literal_names_against_the_topology():
    assert Services.check_args({"state": "started", "with_dependents": "titan-brain"}) == []
    problems = Services.check_args({"state": "started", "names": ["titan-brain", "titan-ai"]})
    assert problems == [f"service 'titan-ai' is not in {FLEET}"]


def test_a_templated_topology_path_is_checked_at_run_time():
    assert Services.check_args({"state": "started", "topology_file": "{{ topo }}"}) == []
