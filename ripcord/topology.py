"""The fleet's services and what each depends on: the order to start them, and to stop them.

One file (inventory/topology.yml) says it for the whole fleet, so that "restart in the
runbook's recovery order" is computed, not remembered: databases first, then what needs them.
A dependency on an unknown service, or a cycle, is an input error naming the file and the line,
found before any host is touched.
"""

from __future__ import annotations

import graphlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from ripcord.errors import InputError
from ripcord.paths import data_dir

SERVICE_KEYS = frozenset({"depends_on", "health", "description"})
DEFAULT_TOPOLOGY = Path("inventory") / "topology.yml"
REPO_ROOT = data_dir("inventory").parent  # the checkout, or the package with its copy


@dataclass(frozen=True)
class ServiceNode:
    """One service: its direct dependencies (with the line of each), and its health check.

    `health` is a URL, possibly a Jinja2 template over the host's variables; None means the
    host's `health_urls` entry (if any) is the check.
    """

    name: str
    depends_on: tuple[str, ...] = ()
    health: str | None = None
    line: int = 0
    dependency_lines: tuple[int, ...] = ()


class Topology:
    """A dependency graph of services, ordered with graphlib."""

    def __init__(self, nodes: Iterable[ServiceNode], source: str = "<topology>"):
        self.nodes = {node.name: node for node in nodes}
        self.source = source
        self._check_known()
        self._tiers = self._layer()

    # --- loading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike) -> Topology:
        """Read and check a topology file; every problem is an InputError with file:line."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise InputError(f"cannot read topology: {exc.strerror}", file=str(path),
                             hint="the services module reads inventory/topology.yml unless "
                                  "topology_file says otherwise") from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str = "<topology>") -> Topology:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            raise InputError(f"invalid YAML: {exc.problem or exc}", file=source,
                             line=mark.line + 1 if mark else None) from None
        return cls(_Reader(source).nodes(root), source)

    # --- queries ---------------------------------------------------------------------------

    def __contains__(self, service: object) -> bool:
        return service in self.nodes

    def tiers(self, only: Iterable[str] | None = None) -> list[list[str]]:
        """Start order, tier by tier: each tier needs only services of earlier tiers.

        With `only`, the same tiers restricted to those services (empty tiers dropped), so a
        host running a subset still starts in the fleet-wide order.
        """
        keep = None if only is None else set(only)
        tiers = [[s for s in tier if keep is None or s in keep] for tier in self._tiers]
        return [tier for tier in tiers if tier]

    def start_order(self, only: Iterable[str] | None = None) -> list[str]:
        return [service for tier in self.tiers(only) for service in tier]

    def stop_order(self, only: Iterable[str] | None = None) -> list[str]:
        """The reverse of the start order: dependents go down before what they depend on."""
        return [service for tier in reversed(self.tiers(only)) for service in reversed(tier)]

    def dependents(self, service: str) -> set[str]:
        """Every service that depends on `service`, directly or through others."""
        self.require(service)
        found: set[str] = set()
        frontier = [service]
        while frontier:
            current = frontier.pop()
            for node in self.nodes.values():
                if current in node.depends_on and node.name not in found:
                    found.add(node.name)
                    frontier.append(node.name)
        return found

    def health(self, service: str) -> str | None:
        self.require(service)
        return self.nodes[service].health

    # --- checks ----------------------------------------------------------------------------

    def require(self, service: str) -> None:
        """InputError naming the file and the known services, unless `service` is one."""
        if service not in self.nodes:
            raise InputError(f"service {service!r} is not in the topology",
                             file=self.source, hint=f"known: {', '.join(sorted(self.nodes))}")

    def _check_known(self) -> None:
        for node in self.nodes.values():
            for dependency, line in zip(node.depends_on, node.dependency_lines, strict=True):
                if dependency not in self.nodes:
                    raise InputError(
                        f"{node.name} depends on unknown service {dependency!r}",
                        file=self.source, line=line or node.line,
                        hint="list every service under `services:`, even one with no dependency")

    def _layer(self) -> list[list[str]]:
        sorter = graphlib.TopologicalSorter({n.name: n.depends_on for n in self.nodes.values()})
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            raise self._cycle_error(exc.args[1]) from None
        tiers = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready())
            tiers.append(ready)
            sorter.done(*ready)
        return tiers

    def _cycle_error(self, cycle: list[str]) -> InputError:
        # graphlib lists each node before the one that depends on it; reversed, each node
        # depends on the next, which is how the file reads.
        path = list(reversed(cycle))
        first, second = path[0], path[1]
        node = self.nodes[first]
        line = node.dependency_lines[node.depends_on.index(second)]
        return InputError(f"dependency cycle: {' -> '.join(path)} (-> means 'depends on')",
                          file=self.source, line=line,
                          hint="a service cannot need, even indirectly, a service that needs it")


class _Reader:
    """Turns the YAML node tree into ServiceNodes, keeping each value's line."""

    def __init__(self, source: str):
        self.source = source

    def error(self, message: str, node: yaml.Node | None) -> InputError:
        return InputError(message, file=self.source,
                          line=node.start_mark.line + 1 if node is not None else None)

    def nodes(self, root: yaml.Node | None) -> list[ServiceNode]:
        if not isinstance(root, yaml.MappingNode):
            raise self.error("a topology is a mapping with a `services:` key", root)
        top = self.mapping(root)
        unknown = set(top) - {"services"}
        if unknown:
            key = sorted(unknown)[0]
            raise self.error(f"unknown top-level key {key!r} (expected: services)", top[key][0])
        if "services" not in top:
            raise self.error("missing `services:`", root)
        services = top["services"][1]
        if not isinstance(services, yaml.MappingNode):
            raise self.error("`services:` maps each service name to its settings", services)
        return [self.service(name, key, value)
                for name, (key, value) in self.mapping(services).items()]

    def service(self, name: str, key: yaml.Node, value: yaml.Node) -> ServiceNode:
        line = key.start_mark.line + 1
        if _is_null(value):
            return ServiceNode(name, line=line)
        if not isinstance(value, yaml.MappingNode):
            raise self.error(f"{name}: expected a mapping of settings "
                             f"({', '.join(sorted(SERVICE_KEYS))}) or nothing", value)
        settings = self.mapping(value)
        for setting, (setting_key, _) in settings.items():
            if setting not in SERVICE_KEYS:
                raise self.error(f"{name}: unknown setting {setting!r} "
                                 f"(expected: {', '.join(sorted(SERVICE_KEYS))})", setting_key)
        deps: list[yaml.Node] = []
        if "depends_on" in settings:
            deps_node = settings["depends_on"][1]
            if isinstance(deps_node, yaml.SequenceNode):
                deps = deps_node.value
            elif not _is_null(deps_node):
                raise self.error(f"{name}: depends_on is a list of service names", deps_node)
        for dep in deps:
            if not (isinstance(dep, yaml.ScalarNode) and dep.tag.endswith(":str")):
                raise self.error(f"{name}: depends_on lists service names (strings)", dep)
        health = None
        if "health" in settings:
            health_node = settings["health"][1]
            if not (isinstance(health_node, yaml.ScalarNode) and health_node.tag.endswith(":str")):
                raise self.error(f"{name}: health is a URL (a string)", health_node)
            health = health_node.value
        return ServiceNode(name, tuple(d.value for d in deps), health, line,
                           tuple(d.start_mark.line + 1 for d in deps))

    def mapping(self, node: yaml.MappingNode) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """Keys (strings, no duplicates: YAML would silently keep the last) to (key, value)."""
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or not key.tag.endswith(":str"):
                raise self.error("keys are names (strings)", key)
            if key.value in out:
                raise self.error(f"duplicate key {key.value!r}", key)
            out[key.value] = (key, value)
        return out


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def find_topology(path: str | os.PathLike | None = None) -> Path:
    """Where a (relative) topology path points: the current directory first, then the directory
    of the ripcord.yaml in force, then the checkout (or the installed package's copy)."""
    from ripcord.config import project_file

    wanted = Path(path) if path else DEFAULT_TOPOLOGY
    if wanted.is_absolute():
        return wanted
    project = project_file()
    for base in (Path.cwd(), *([project.parent] if project else []), REPO_ROOT):
        if (base / wanted).exists():
            return base / wanted
    return Path.cwd() / wanted


_CACHE: dict[tuple[str, int], Topology] = {}


def load_cached(path: str | os.PathLike) -> Topology:
    """Topology.load, once per file version: a play reads the same file for every host."""
    resolved = Path(path).resolve()
    try:
        key = (str(resolved), resolved.stat().st_mtime_ns)
    except OSError:
        return Topology.load(path)
    if key not in _CACHE:
        _CACHE[key] = Topology.load(path)
    return _CACHE[key]
