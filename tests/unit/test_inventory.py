"""ripcord.inventory against Ansible itself.

The oracle is the real ``ansible-inventory`` (ansible-core, a declared test dependency): for every
fixture under inventories/ its ``--list``, ``--host`` and ``--graph`` output must equal ripcord's,
byte for byte. The oracle runs hermetically (no ansible.cfg, an empty working directory, only the
YAML inventory plugin, any unparsable source an error) and its processes run concurrently once
per module, so the suite stays fast. Explicit expectations below pin the same behaviour in
words, so that a change in Ansible or in ripcord shows up as a readable failure.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from ansible_oracle import ansible_env, ansible_executable

from ripcord.errors import EXIT_INVALID, InputError
from ripcord.inventory import ConnectionSpec, Inventory, Unsafe, dumps, expand_host_pattern

HERE = Path(__file__).parent / "inventories"

# fixture name -> inventory sources (relative to inventories/), as given to both tools
FIXTURES: dict[str, list[str]] = {
    "nested": ["nested/hosts.yml"],
    "ranges": ["ranges/hosts.yml"],
    "shapes": ["shapes/hosts.yml"],
    "values": ["values/hosts.yml", "values/extra.json"],
    "priority": ["priority/hosts.yml"],
    "patterns": ["patterns/hosts.yml"],
    "multi": ["multi", "multi_extra/extra.yml"],  # a directory source and a file source
    "anchors": ["anchors/hosts.yml"],  # top-level keys that are no group: skipped, warned
}
# Each ansible-inventory run costs over half a CPU-second, so the views beyond --list are
# checked where they add something: --graph --vars covers the tree, group vars and host vars.
HOSTS_TO_CHECK = {
    "nested": ["web-02"],  # precedence across files, directories and priorities
    "ranges": ["fe80::1"],  # --host parses its argument as a pattern
    "shapes": ["web-x"],  # vars that Ansible moved to a same-named group
    "values": ["j-01"],  # !unsafe and JSON values, unwrapped in --host
    "multi": ["app-1"],  # several sources
}
VARS_GRAPHS = ["nested", "shapes", "values", "priority", "multi", "anchors"]
PLAIN_GRAPHS = ["ranges"]
GRAPH_GROUPS = {"nested": ["prod"], "shapes": ["lb"]}


# -- the oracle ------------------------------------------------------------------------------------

class InventoryOracle:
    """Runs ``ansible-inventory`` commands concurrently, each once."""

    def __init__(self, workdir: Path) -> None:
        self.exe = ansible_executable("ansible-inventory")
        self.workdir = workdir  # also the cwd: Ansible reads group_vars/ from there otherwise
        self.env = ansible_env(workdir)
        self.pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2))
        self.runs: dict[tuple, Future] = {}

    def submit(self, fixture: str, *args: str) -> None:
        key = (fixture, *args)
        if key not in self.runs:
            sources = [a for s in FIXTURES[fixture] for a in ("-i", str(HERE / s))]
            self.runs[key] = self.pool.submit(
                subprocess.run, [self.exe, *sources, *args], capture_output=True, text=True,
                env=self.env, cwd=self.workdir, timeout=120)

    def __call__(self, fixture: str, *args: str) -> str:
        self.submit(fixture, *args)
        proc = self.runs[(fixture, *args)].result()
        assert proc.returncode == 0, f"ansible-inventory {' '.join(args)} failed:\n{proc.stderr}"
        return proc.stdout.removesuffix("\n")


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InventoryOracle]:
    runner = InventoryOracle(tmp_path_factory.mktemp("ansible"))
    for name in FIXTURES:  # start everything now, so the processes overlap
        runner.submit(name, "--list")
        if name in VARS_GRAPHS:
            runner.submit(name, "--graph", "--vars")
        if name in PLAIN_GRAPHS:
            runner.submit(name, "--graph")
        for host in HOSTS_TO_CHECK.get(name, []):
            runner.submit(name, "--host", host)
        for group in GRAPH_GROUPS.get(name, []):
            runner.submit(name, "--graph", group)
    yield runner
    runner.pool.shutdown(wait=True)


_LOADED: dict[str, Inventory] = {}


def load(fixture: str) -> Inventory:
    if fixture not in _LOADED:
        _LOADED[fixture] = Inventory.load([HERE / s for s in FIXTURES[fixture]])
    return _LOADED[fixture]


# -- ripcord == ansible-inventory ------------------------------------------------------------------

@pytest.mark.parametrize("fixture", FIXTURES)
def test_list_matches_ansible_inventory(oracle: InventoryOracle, fixture: str) -> None:
    expected = oracle(fixture, "--list")
    mine = load(fixture).to_list_json()
    assert mine == json.loads(expected)  # readable diff first
    assert dumps(mine) == expected  # then the exact text


@pytest.mark.parametrize(("fixture", "host"),
                         [(f, h) for f, hosts in HOSTS_TO_CHECK.items() for h in hosts])
def test_host_matches_ansible_inventory(oracle: InventoryOracle, fixture: str, host: str) -> None:
    expected = oracle(fixture, "--host", host)
    mine = load(fixture).to_host_json(host)
    assert mine == json.loads(expected)
    assert dumps(mine) == expected


@pytest.mark.parametrize("fixture", VARS_GRAPHS)
def test_graph_with_vars_matches_ansible_inventory(oracle: InventoryOracle, fixture: str) -> None:
    assert load(fixture).graph(show_vars=True) == oracle(fixture, "--graph", "--vars")


@pytest.mark.parametrize("fixture", PLAIN_GRAPHS)
def test_graph_matches_ansible_inventory(oracle: InventoryOracle, fixture: str) -> None:
    assert load(fixture).graph() == oracle(fixture, "--graph")


@pytest.mark.parametrize(("fixture", "group"),
                         [(f, g) for f, groups in GRAPH_GROUPS.items() for g in groups])
def test_graph_of_a_group_matches_ansible_inventory(oracle: InventoryOracle, fixture: str,
                                                    group: str) -> None:
    assert load(fixture).graph(group) == oracle(fixture, "--graph", group)


# -- the same behaviour, spelled out ---------------------------------------------------------------

def test_group_structure_nested_three_levels() -> None:
    inv = load("nested")
    assert inv.groups["all"].children == ["ungrouped", "prod", "staging", "monitoring"]
    assert inv.groups["prod"].children == ["web", "db"]
    assert inv.groups["web_canary"].parents == ["web", "monitoring"]
    assert inv.groups["web_canary"].depth == 3  # longest path from all
    assert inv.groups["ungrouped"].hosts == ["lone-01"]
    assert inv.groups_of("web-02") == ["all", "db", "prod", "web"]
    assert inv.hosts == ["web-01", "web-02", "web-03", "db-01", "stg-01", "mon-01", "lone-01"]


def test_precedence_nested() -> None:
    inv = load("nested")
    web02 = inv.host_vars("web-02")
    assert web02["level"] == "web-02-b"  # host_vars/web-02/ files, in sorted order, win
    assert web02["limits"] == {"conn": 100}  # from group_vars/db.json
    assert web02["web_only"] == "00" and web02["web_sub"] is True and web02["noext_var"] is True
    assert "ignored" not in web02  # group_vars/web.yml loses to the web/ directory
    # group_vars/all.yml outranks every group var written in an inventory file...
    assert web02["overridden_by_all_file"] == "all-file"
    # groups sort by depth, then priority, then name: prod (depth 1) < web (depth 2,
    # priority 1) < db (depth 2, priority 5), for inline vars and group_vars/ files alike
    assert web02["role"] == "db-inline" and web02["pool"] == "db-file"

    web01 = inv.host_vars("web-01")
    assert web01["level"] == "web-01-file"
    assert web01["tier"] == "staging-file"  # prod and staging both depth 1: name order
    assert web01["ansible_group_priority"] == 100  # a plain var when set in group_vars/
    assert inv.groups["staging"].priority == 1

    assert inv.host_vars("web-03")["level"] == "canary-file"
    assert inv.host_vars("db-01")["limits"] == {"mem": "4G"}  # replaced, never deep-merged
    lone = inv.host_vars("lone-01")
    assert lone["level"] == "lone-inline" and lone["ungrouped_var"] is True
    assert lone["ntp"] == {"servers": ["ntp-a", "ntp-b"]}


def test_precedence_priority_and_depth() -> None:
    inv = load("priority")
    h1, h2, h3 = (inv.host_vars(h) for h in ("h1", "h2", "h3"))
    assert h1["p"] == "beta"  # alpha < beta at equal depth and priority
    assert h1["d"] == "deep"  # depth 3 beats shortcut (depth 1)
    assert h1["v"] == "all-file"  # group_vars/all.yml beats inline vars of deep
    assert h1["gv"] == "beta-file"
    assert h2["p"] == "beta" and h2["z"] == "zeta"  # zeta (priority -1) < beta (1)
    assert h2["v"] == "zeta-file"  # group_vars files still come after every inline var
    assert h3["z"] == "omega"  # zeta (-1) < quoted (7) < omega (10), against name order
    assert inv.groups["quoted"].priority == 7
    assert "ansible_group_priority" not in h3  # inventory-file priority is not a var
    assert inv.group_vars("omega")["ansible_group_priority"] == 10


def test_host_ranges_and_ports() -> None:
    inv = load("ranges")
    assert inv.groups["exec"].hosts == [f"exec-{i:02d}" for i in range(1, 13)] + [
        "exec-20", "exec-25", "exec-30"]
    assert inv.groups["db"].hosts == [
        "db-a", "db-b", "db-c", "db-a-x", "db-c-x", "db-e-x",
        "shard-A-1", "shard-A-2", "shard-B-1", "shard-B-2"]
    assert inv.groups["odd"].hosts == [
        "app-1", "app-2", "app-3", "cache", "10.0.0.1", "10.0.0.2", "10.0.0.3", "fe80::1",
        "::1", "node9", "node10", "node11", "x0", "x1", "x2"]  # rev[5:1] is empty
    assert inv.host_vars("app-2")["ansible_port"] == 2222
    assert inv.host_vars("cache")["ansible_port"] == 6380  # first appearance wins
    assert inv.host_vars("exec-01")["ansible_port"] == 2201
    assert inv.host_vars("db-b")["role"] == "db"


@pytest.mark.parametrize(("key", "hosts", "port"), [
    ("web-[1:3]", ["web-1", "web-2", "web-3"], None),
    ("web-[01:10:3]", ["web-01", "web-04", "web-07", "web-10"], None),
    ("db-[a:c]:5432", ["db-a", "db-b", "db-c"], 5432),
    ("[2001:db8::1]:22", ["2001:db8::1"], 22),
    ("r[0:1]-[a:b]", ["r0-a", "r0-b", "r1-a", "r1-b"], None),
    ("plain", ["plain"], None),
])
def test_expand_host_pattern(key: str, hosts: list[str], port: int | None) -> None:
    assert expand_host_pattern(key) == (hosts, port)


@pytest.mark.parametrize(("key", "reason"), [
    ("web-[1:]", "must specify end value"),
    ("web-[01:1]", "equal-length"),
    ("web-[c:a]", "begin <= end"),
    ("web-[1:2:3:4]", "begin:end or begin:end:step"),
])
def test_expand_host_pattern_rejects_bad_ranges(key: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        expand_host_pattern(key)


def test_shapes() -> None:
    inv = load("shapes")
    assert inv.groups["ungrouped"].hosts == ["explicit-ungrouped", "only-in-all"]
    assert inv.groups["all"].children == [
        "ungrouped", "lb", "empty_group", "another_empty", "web", "cache", "1234", "loner"]
    # the host `loner` is in no group but all, and a group has its name: the group goes
    # under ungrouped instead of the host
    assert inv.groups["ungrouped"].children == ["loner"]
    assert inv.groups_of("loner-a") == ["all", "loner", "ungrouped"]
    assert inv.groups_of("loner") == ["all"]
    assert inv.groups["backends"].children == ["referenced_only"]
    assert inv.groups["1234"].hosts == ["5678"]
    assert inv.host_vars("lb-01")["flag"] is None  # `vars: flag` is one var with no value
    # vars written under host `web` went to group `web`, so web-x has them as well
    assert inv.groups["web"].vars == {"role": "both a host and a group"}
    assert inv.host_vars("web-x")["role"] == "both a host and a group"
    assert inv.host_vars("cache")["cache_size"] == 64  # group `cache` did not exist yet


def test_values_are_read_as_ansible_reads_them_and_never_rendered() -> None:
    inv = load("values")
    v = inv.host_vars("v-01")
    assert v["secret_ref"] == "{{ lookup('env', 'DB_PASSWORD') }}"
    assert isinstance(v["raw"], Unsafe) and v["raw"] == "{{ not a template }}"
    assert isinstance(v["raw_nested"]["items"][0], Unsafe)
    assert v["switches"] == [True, False, True, False, True, False]
    assert (v["octal"], v["hexa"], v["sexagesimal"]) == (493, 255, 5400)
    assert v["not_a_float"] == "1.5e3" and v["a_float"] == 1500.0  # YAML 1.1
    assert v["quoted_number"] == "0755"
    assert v["ntp"] == "pool.ntp.org" and v["dns"] == ["9.9.9.9"]  # merge key, then override
    assert v["from_json"] is True  # the .json source, later, adds to v-01
    assert inv.host_vars("v-02")["dns"] == ["1.1.1.1", "8.8.8.8"]  # an alias as host vars
    j = inv.host_vars("j-01")
    assert j["n"] == 100000.0 and isinstance(j["u"], Unsafe) and j["t"] == "{{ templated }}"
    listed = inv.to_list_json()["_meta"]["hostvars"]["j-01"]
    assert listed["u"] == {"__ansible_unsafe": "{{ raw }}"}  # as ansible-inventory --list
    assert inv.to_host_json("j-01")["u"] == "{{ raw }}"  # and as --host
    assert listed["odd_keys"] == {"1": "one", "2.5": "two-and-half", "null": "none",
                                  "false": "no"}


def test_host_vars_are_copies() -> None:
    inv = Inventory.load([HERE / "nested/hosts.yml"])
    inv.host_vars("web-01")["ntp"]["servers"].append("mutated")
    assert inv.host_vars("web-01")["ntp"] == {"servers": ["ntp-prod"]}


def test_directory_source_skips_examples_and_topology() -> None:
    inv = load("multi")
    assert [Path(p).name for p in inv.sources] == [
        "10-base.yml", "20-more.yaml", "30-orphans.yml", "extra.yml"]
    as_files = Inventory.load([HERE / "multi/10-base.yml", HERE / "multi/20-more.yaml",
                               HERE / "multi/30-orphans.yml", HERE / "multi_extra/extra.yml"])
    assert as_files.to_list_json() == inv.to_list_json()


def test_multiple_sources_merge_in_order() -> None:
    inv = load("multi")
    app1 = inv.host_vars("app-1")
    assert app1["version"] == 3  # host_vars/ file > second file's inline > first file's
    assert app1["site"] == "more"  # `all` vars from the later file win
    assert app1["gv_all"] == "extra"  # group_vars/all.yml of the later source wins
    assert app1["app_only"] == "extra" and app1["shared"] == "extra-app"
    # app-2 is in app (depth 1) and cron (depth 2): each source directory's group_vars are
    # applied whole, in source order, so the later directory's app beats the earlier's cron
    assert inv.host_vars("app-2")["shared"] == "extra-app"
    assert inv.groups["app"].hosts == ["app-1", "app-2", "app-3", "app-4"]
    assert inv.groups["cron"].parents == ["batch", "all"]  # adopted, then named by extra.yml
    assert inv.groups["all"].children == ["ungrouped", "app", "worker", "batch", "cron",
                                          "standalone"]


def test_connection_for() -> None:
    inv = load("nested")
    assert inv.connection_for("web-03") == ConnectionSpec(host="10.0.0.3", port=2203)
    spec = inv.connection_for("db-01")
    assert (spec.host, spec.port, spec.user, spec.jump, spec.connect_timeout) == (
        "db-01", 22, "postgres", None, 10.0)
    assert spec.known_hosts == os.path.expanduser("~/.ssh/known_hosts")
    jumped = load("values").connection_for("v-03")
    assert jumped.jump == "ops@bastion.example:2222"


@pytest.mark.parametrize(("hostvars", "expected"), [
    ({}, ConnectionSpec(host="h")),
    ({"ansible_host": "192.0.2.1", "ansible_port": "2222", "ansible_user": "ops",
      "ansible_ssh_private_key_file": "/keys/id", "ansible_timeout": 3,
      "ripcord_known_hosts": "/etc/ripcord/known_hosts"},
     ConnectionSpec(host="192.0.2.1", port=2222, user="ops", key_file="/keys/id",
                    connect_timeout=3.0, known_hosts="/etc/ripcord/known_hosts")),
    # Ansible's aliases: the ansible_ssh_* spelling wins when both are set
    ({"ansible_host": "a", "ansible_ssh_host": "b", "ansible_port": 1, "ansible_ssh_port": 2},
     ConnectionSpec(host="b", port=2)),
    ({"ansible_ssh_common_args": "-J jump.example"}, ConnectionSpec(host="h", jump="jump.example")),
    ({"ansible_ssh_common_args": "-o 'ProxyJump bastion' -o ServerAliveInterval=5"},
     ConnectionSpec(host="h", jump="bastion")),
    ({"ansible_ssh_common_args": "-oProxyJump=none"}, ConnectionSpec(host="h")),
    ({"ansible_ssh_common_args": "-o ProxyJump=bastion", "ripcord_jump_host": "mine"},
     ConnectionSpec(host="h", jump="mine")),
    ({"ansible_ssh_common_args": "-o StrictHostKeyChecking=yes"}, ConnectionSpec(host="h")),
])
def test_connection_spec_from_vars(hostvars: dict, expected: ConnectionSpec) -> None:
    assert ConnectionSpec.from_vars("h", hostvars) == expected


def test_connection_spec_refuses_an_unrendered_port() -> None:
    with pytest.raises(InputError, match="ansible_port must be a number") as err:
        ConnectionSpec.from_vars("h", {"ansible_port": "{{ port }}"})
    assert "render" in err.value.hint


def test_unknown_host_and_group() -> None:
    inv = load("patterns")
    with pytest.raises(InputError, match="unknown host 'nope'"):
        inv.host_vars("nope")
    with pytest.raises(InputError, match="'nope' is not a group") as err:
        inv.graph("nope")
    assert "canary" in err.value.hint
    assert inv.to_host_json("web[0]") == inv.to_host_json("web-01")  # --host takes a pattern
    with pytest.raises(InputError, match="needs a single host"):
        inv.to_host_json("web")


def test_top_level_keys_that_are_no_group_are_skipped_with_a_warning() -> None:
    path = HERE / "anchors" / "hosts.yml"
    assert load("anchors").warnings == [
        f"{path}:3: top-level key 'x-common' has no hosts, vars or children: an empty group, its "
        "keys (ansible_user, role) skipped (as ansible-inventory does)",
        f"{path}:6: skipping top-level key 'x-ports': a list is not a group definition "
        "(as ansible-inventory does)",
        f"{path}:7: skipping top-level key 'x-motd': a string is not a group definition "
        "(as ansible-inventory does)"]
    assert load("anchors").host_vars("b")["role"] == "db"


# -- errors: file, line and a one-line message -----------------------------------------------------

ERRORS = [
    ("bad_yaml.yml", "bad_yaml.yml", 4,
     "invalid YAML: did not find expected key while parsing a block mapping (begun on line 2)"),
    ("top_list.yml", "top_list.yml", 2,
     "expected a mapping of group names at the top level, got a list"),
    ("empty.yml", "empty.yml", 1,
     "inventory file is empty: expected a mapping of group names (usually starting with 'all:')"),
    ("hosts_list.yml", "hosts_list.yml", 4,
     "'hosts' of group 'web' must be a mapping of host names, got a list"),
    ("hosts_list.json", "hosts_list.json", 3,
     "'hosts' of group 'all' must be a mapping of host names, got a list"),
    ("unknown_key.yml", "unknown_key.yml", 4,
     "unknown key 'host' in group 'web': expected hosts, vars or children"),
    ("group_list.yml", "group_list.yml", 3,
     "group 'web' must be a mapping with hosts, vars or children (or empty), got a list"),
    ("group_number.yml", "group_number.yml", 3,
     "group name must be a non-empty string, got integer 123"),
    ("host_value.yml", "host_value.yml", 3,
     "host 'web-01' in group 'web' must map to a mapping of variables (or nothing), got a string"),
    ("host_number.yml", "host_number.yml", 4,
     "host name in group 'web' must be a non-empty string, got integer 1234 (quote numbers)"),
    ("bad_range.yml", "bad_range.yml", 3,
     ("invalid host range 'web-[01:1]': host range must specify equal-length begin and end "
      "formats")),
    ("bad_priority.yml", "bad_priority.yml", 3,
     "ansible_group_priority of group 'web' must be an integer, got 'high'"),
    ("cycle.yml", "cycle.yml", 3, "making 'b' a child of 'a' creates a cycle"),
    ("vault.yml", "vault.yml", 3,
     ("vault-encrypted values (!vault) are not supported: reference the secret with a "
      "{{ lookup(...) }} template instead")),
    ("plugin.yml", "plugin.yml", 1,
     ("inventory plugin configurations are not supported: ripcord reads YAML inventories "
      "(all / hosts / vars / children)")),
    ("bad_group_vars", "bad_group_vars/group_vars/web.yml", 2,
     "vars file must be a mapping of variable names to values, got a list"),
    ("bad_host_vars", "bad_host_vars/host_vars/web-01.yml", 3,
     ("invalid YAML: did not find expected ',' or ']' while parsing a flow sequence "
      "(begun on line 2)")),
]


@pytest.mark.parametrize(("source", "file", "line", "message"), ERRORS,
                         ids=[e[0] for e in ERRORS])
def test_malformed_inventory(source: str, file: str, line: int, message: str) -> None:
    with pytest.raises(InputError) as err:
        Inventory.load([HERE / "errors" / source])
    path = str(HERE / "errors" / file)
    assert (err.value.file, err.value.line) == (path, line)
    assert str(err.value) == f"{path}:{line}: {message}"
    assert "\n" not in str(err.value)
    assert err.value.exit_code == EXIT_INVALID


def test_missing_and_unsupported_sources(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="inventory source not found"):
        Inventory.load([tmp_path / "nope.yml"])
    (tmp_path / "hosts.ini").write_text("[web]\nweb-01\n")
    with pytest.raises(InputError, match="not a YAML inventory"):
        Inventory.load([tmp_path / "hosts.ini"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no inventory files in"):
        Inventory.load([tmp_path / "empty"])
