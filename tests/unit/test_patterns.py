"""Host patterns against Ansible itself.

The oracle is Ansible's own InventoryManager.list_hosts() — exactly what ``ansible PATTERN
--list-hosts`` calls — run once in a subprocess for the whole table (one process per pattern
would cost half a second each); a few patterns also go through the real ``ansible --list-hosts``
to show that the two agree. Where Ansible returns nothing or raises, ripcord raises InputError.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from ansible_oracle import ansible_executable

from ripcord.errors import EXIT_INVALID, InputError
from ripcord.inventory import Inventory
from ripcord.patterns import split_pattern

HERE = Path(__file__).parent / "inventories"
PATTERNS_INV = HERE / "patterns" / "hosts.yml"
NESTED_INV = HERE / "nested" / "hosts.yml"

PATTERNS = [
    # names, globs, regexes
    "all", "*", "prod", "web", "canary", "web-01", "exec-*", "*-01", "db-0?,exec-0[1-2]",
    "~web-0[12]", "~^(db|exec)-0[1-3]$", "ungrouped",
    "ops",  # a host and a group share the name: the host wins
    "web*",  # matches the group web and the hosts web-*
    # unions, intersections, exclusions, in odd orders
    "web,db", "web:db", "db:web", " web , db ", "web db", "web,canary", "web-01,web-01,web-02",
    "prod:&web", "prod:!canary", "!canary:prod", "&prod,staging,web", "web:!web-02:&prod",
    "!web", "&db", "prod:!~exec-0[2-6]", "all:!prod:!staging", "stg-*:&~.*web.*",
    "bastion:&ops", "ops:&bastion",
    # subscripts
    "web[0]", "web[-1]", "web[0:1]", "exec[2:]", "exec[4:100]", "exec-*[1]", "web[0-1]",
    "canary[1]:web[0]", "web*[4]", "[wc][ae][bn]*[5]",  # subscripts count duplicates
    # nothing, or an Ansible error: ripcord raises InputError
    "nosuch", "WEB-01", "~WEB", "web-0[1-3]", "web:&db", "web[10]", "canary[-3]",
]
CLI_CHECKS = ["!canary:prod", "web*[4]", "exec[2:]", "web[10]"]
ORDER_FREE = ["all", "prod", "monitoring:staging"]  # on nested/, where Ansible's order varies

ORACLE = r"""
import json, sys
from ansible.errors import AnsibleError
from ansible.inventory.manager import InventoryManager, split_host_pattern
from ansible.parsing.dataloader import DataLoader

out = []
for job in json.load(sys.stdin):
    inventory = InventoryManager(loader=DataLoader(), sources=job["sources"])
    results = {}
    for pattern in job["patterns"]:
        try:
            hosts = [getattr(h, "name", h) for h in inventory.list_hosts(pattern)]
            results[pattern] = {"hosts": hosts, "terms": split_host_pattern(pattern)}
        except AnsibleError as e:
            results[pattern] = {"error": str(e)}
    out.append(results)
json.dump(out, sys.stdout)
"""


def ansible_python(ansible: str) -> str:
    """The interpreter Ansible is installed in: its script's shebang, else ours."""
    first = Path(ansible).read_text(errors="replace").splitlines()[0]
    candidate = first[2:].strip() if first.startswith("#!") else ""
    return candidate if candidate and " " not in candidate and Path(candidate).exists() \
        else sys.executable


def ansible_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    (workdir / "ansible.cfg").write_text("")
    env.update(
        ANSIBLE_CONFIG=str(workdir / "ansible.cfg"),
        ANSIBLE_HOME=str(workdir / "home"),
        ANSIBLE_LOCAL_TEMP=str(workdir / "tmp"),
        ANSIBLE_INVENTORY_ENABLED="yaml",
        ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="True",
        ANSIBLE_HOST_PATTERN_MISMATCH="ignore",
        ANSIBLE_LOCALHOST_WARNING="False",
        ANSIBLE_DEPRECATION_WARNINGS="False",
        ANSIBLE_NOCOLOR="1",
    )
    return env


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """{"table": {pattern: result}, "nested": {...}, "cli": {pattern: [hosts]}} from Ansible."""
    workdir = tmp_path_factory.mktemp("ansible")
    env, ansible = ansible_env(workdir), ansible_executable("ansible")
    jobs = [{"sources": [str(PATTERNS_INV)], "patterns": PATTERNS},
            {"sources": [str(NESTED_INV)], "patterns": ORDER_FREE}]

    def api() -> list:
        proc = subprocess.run([ansible_python(ansible), "-c", ORACLE], input=json.dumps(jobs),
                              capture_output=True, text=True, env=env, cwd=workdir, timeout=120,
                              check=False)
        assert proc.returncode == 0, f"Ansible oracle failed:\n{proc.stderr}"
        return json.loads(proc.stdout)

    def cli(pattern: str) -> list[str]:
        proc = subprocess.run([ansible, "-i", str(PATTERNS_INV), pattern, "--list-hosts"],
                              capture_output=True, text=True, env=env, cwd=workdir, timeout=120,
                              check=False)
        assert proc.returncode == 0, f"ansible --list-hosts {pattern!r} failed:\n{proc.stderr}"
        lines = proc.stdout.splitlines()
        start = next(i for i, line in enumerate(lines) if line.strip().startswith("hosts ("))
        return [line.strip() for line in lines[start + 1:] if line.strip()]

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        table = pool.submit(api)
        cli_runs = {p: pool.submit(cli, p) for p in CLI_CHECKS}
        table_result, nested = table.result()
        return {"table": table_result, "nested": nested,
                "cli": {p: f.result() for p, f in cli_runs.items()}}


@pytest.fixture(scope="module")
def inv() -> Inventory:
    return Inventory.load([PATTERNS_INV])


@pytest.mark.parametrize("pattern", PATTERNS)
def test_select_matches_ansible(oracle: dict, inv: Inventory, pattern: str) -> None:
    expected = oracle["table"][pattern]
    if expected.get("hosts"):
        assert inv.select(pattern) == expected["hosts"]
        assert split_pattern(pattern) == expected["terms"]
    else:  # Ansible finds nothing (and warns) or raises: ripcord refuses
        with pytest.raises(InputError) as err:
            inv.select(pattern)
        assert err.value.exit_code == EXIT_INVALID
        assert repr(pattern) in str(err.value)


@pytest.mark.parametrize("pattern", CLI_CHECKS)
def test_api_oracle_agrees_with_ansible_list_hosts(oracle: dict, pattern: str) -> None:
    assert oracle["cli"][pattern] == oracle["table"][pattern].get("hosts", [])


@pytest.mark.parametrize("pattern", ORDER_FREE)
def test_select_where_ansible_order_is_not_stable(oracle: dict, pattern: str) -> None:
    """With two child-bearing groups in one generation, Ansible walks a Python set and its host
    order changes between runs: compare as sets, and pin ripcord's (declaration) order."""
    mine = Inventory.load([NESTED_INV]).select(pattern)
    assert sorted(mine) == sorted(oracle["nested"][pattern]["hosts"])
    assert len(mine) == len(set(mine))


def test_declaration_order_where_ansible_order_is_not_stable() -> None:
    inv = Inventory.load([NESTED_INV])
    assert inv.select("all") == [
        "lone-01", "stg-01", "web-01", "mon-01", "web-02", "db-01", "web-03"]
    assert inv.group_hosts("monitoring") == ["mon-01", "web-03"]


def test_readable_expectations(inv: Inventory) -> None:
    """A few of the table's answers, spelled out."""
    assert inv.select("web") == ["web-01", "web-02", "web-03", "web-04"]  # canary included
    assert inv.select("!canary:prod") == inv.select("prod:!canary")
    assert inv.select("&prod,staging,web") == ["web-01", "web-02", "web-03", "web-04"]
    assert inv.select("web[-1]") == ["web-04"]
    assert inv.select("exec[2:]") == ["exec-03", "exec-04", "exec-05", "exec-06"]
    assert inv.select("ops") == ["ops"]  # the host, not the group (ops, bastion)
    # all's own hosts, then each generation of groups in declaration order
    assert inv.select("!web")[:4] == ["bastion", "stg-web-01", "stg-db-01", "ops"]


def test_no_match_names_the_pattern_its_close_matches_and_lists_groups(inv: Inventory) -> None:
    with pytest.raises(InputError) as err:
        inv.select("webz")
    assert str(err.value) == "host pattern 'webz' matched no hosts (did you mean web, web-04, web-03?)"
    assert err.value.exit_code == EXIT_INVALID
    with pytest.raises(InputError) as far:
        inv.select("zzzz")
    assert str(far.value) == "host pattern 'zzzz' matched no hosts"
    assert err.value.hint == (
        "known groups: all, canary, db, exec, ops, prod, staging, ungrouped, web")


def test_subscript_out_of_range(inv: Inventory) -> None:
    with pytest.raises(InputError, match=r"subscript in 'web\[10\]' is out of range"):
        inv.select("web[10]")


def test_strict_refuses_a_term_that_matches_nothing(inv: Inventory) -> None:
    assert inv.select("web,nosuch") == inv.select("web")  # as Ansible: ignored
    with pytest.raises(InputError, match="term 'nosuch' matched no hosts"):
        inv.select("web,nosuch", strict=True)
    with pytest.raises(InputError, match="term '!db-9' matched no hosts"):
        inv.select("prod:!db-9", strict=True)


@pytest.mark.parametrize(("pattern", "why"), [
    ("", "empty host pattern"),
    ("   ", "empty host pattern"),
    ("web,,db", "empty term between commas"),
    ("web,", "empty term between commas"),
    (",web", "empty term between commas"),
    ("web::db", "empty term between colons"),
    (":web", "empty term between colons"),
    ("web:", "empty term between colons"),
    ("web:!", "has nothing after the '!'"),
    ("web,&", "has nothing after the '&'"),
    ("web:&!db", "combines & and !"),
    ("web[1", "unbalanced"),
    ("web,db]", "unbalanced bracket"),
    ("web[1:2:3]", "bad subscript"),
    ("web[]", "bad subscript"),
    ("web[:2]", "bad subscript"),
    ("web[-1:]", "bad subscript"),
    ("~", "must be followed by a regular expression"),
    ("~(web", "invalid regular expression"),
])
def test_malformed_patterns(inv: Inventory, pattern: str, why: str) -> None:
    with pytest.raises(InputError, match=re.escape(why)) as err:
        inv.select(pattern)
    assert err.value.exit_code == EXIT_INVALID
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("pattern", "terms"), [
    ("web:&db:!db-1", ["web", "&db", "!db-1"]),
    ("a:b,c", ["a:b", "c"]),  # with a comma, only commas separate
    ("fe80::1", ["fe80::1"]),  # an address is one term
    ("web[1:3]", ["web[1:3]"]),
    ("10.0.0.1:22", ["10.0.0.1:22"]),
])
def test_split_pattern(pattern: str, terms: list[str]) -> None:
    assert split_pattern(pattern) == terms
