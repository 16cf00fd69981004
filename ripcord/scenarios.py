"""The runbooks' failure scenarios as data: one YAML file each in playbooks/scenarios/.

A scenario says how to see it (detection: checks that FAIL while it happens), what to do about it
(recovery: a procedure, or a playbook of its own), how to know it is over (validation: checks
that must pass after), and who hears of it when it lasts (escalation). Triage runs every
scenario's detection in one round and names the ones whose symptoms are all there; `scenario.run`
runs a recovery and its validation. The files are validated like playbooks, before any host is
touched: a check, procedure, playbook or fault that does not exist is exit 2 naming file:line.
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ripcord.errors import InputError
from ripcord.paths import data_dir
from ripcord.yamllines import Map, load_yaml, plain, with_lines, yaml_problem

SCENARIOS = data_dir("playbooks") / "scenarios"

SEVERITY_LEVELS = (1, 2, 3, 4)
SHIPPED_ESCALATION = data_dir("inventory") / "escalation.yml"  # its defaults: the generated docs


def severities(path: Path | None = None) -> dict[int, dict[str, Any]]:
    """Each SEV level's name ("SEV1 critical") and response minutes, from an escalation file
    (ripcord.incident.escalation): the operator's unless path names another. InputError with
    file:line for a bad one."""
    from ripcord.incident import escalation

    return {level: {"name": f"SEV{level} {spec['name'].lower()}",
                    "respond_minutes": spec["respond_within_s"] // 60}
            for level, spec in escalation(path)["severities"].items()}

# Runbook 004's decision tree, asked in this order before the symptom checks.
QUESTIONS = {
    "accepting-trades": "Is the system accepting trades?",
    "executing": "Are positions being executed?",
    "market-data": "Are market data feeds active?",
}

KEYS = {"id", "title", "severity", "runbook", "question", "detection", "recovery", "validation",
        "escalation", "sandbox"}
REQUIRED = KEYS - {"question"}
MARKER_WORDS = {"and", "or", "not"}


@dataclass(frozen=True)
class Symptom:
    """A detection check that fails while the scenario happens, with what its message must say
    where the check alone would also fail for other causes (the supervisor check: which service)."""

    check: str  # file.py::test_name
    message: str | None = None  # a regular expression searched in the failure's message

    def seen_in(self, check_id: str, message: str) -> bool:
        return check_id == self.check and (self.message is None or bool(re.search(self.message, message)))

    def __str__(self) -> str:
        return self.check + (f" ~ /{self.message}/" if self.message else "")


@dataclass(frozen=True)
class Scenario:
    id: int
    title: str
    severity: int
    runbook: str
    detection: tuple[Symptom, ...]  # every one fails while it happens
    validation: str  # a check selection (marker expression or node ids)
    procedure: str | None  # recovery: a shipped procedure ...
    playbook: Path | None  # ... or a playbook of its own ...
    manual: str | None  # ... or what a person does (nothing ripcord can do safely alone)
    recovery_vars: dict[str, Any] = field(default_factory=dict)
    escalate_to: str = ""
    escalate_after_minutes: int = 0
    fault: str | None = None  # the sandbox fault that simulates it (ripcord.sandbox.chaos)
    cannot_simulate: str | None = None  # why the sandbox cannot show it
    question: str | None = None
    file: str = ""

    @property
    def recovery(self) -> str:
        if self.procedure:
            extra = " ".join(f"{k}={v}" for k, v in self.recovery_vars.items())
            return f"procedure {self.procedure}" + (f" ({extra})" if extra else "")
        if self.playbook:
            return f"playbook {self.playbook.relative_to(self.playbook.parents[1])}"
        return f"manual: {self.manual}"

    def fix_command(self, pattern: str) -> str:
        if self.manual:
            return f"(by hand) {self.manual}"
        return f"invoke scenario.run {self.id} --host {pattern}"


def load_all(directory: Path | None = None, inventory=None) -> list[Scenario]:
    """Every scenario, validated, by id; the first problem found is an InputError (exit 2).
    With an inventory, recovery playbooks are validated against it too (host vars defined)."""
    found: dict[int, Scenario] = {}
    for path in sorted((directory or SCENARIOS).glob("*.yml")):
        scenario = load(path, inventory)
        if scenario.id in found:
            raise InputError(f"scenario {scenario.id} is also defined in {found[scenario.id].file}",
                             file=str(path), line=1)
        found[scenario.id] = scenario
    return [found[i] for i in sorted(found)]


def get(ident: str | int, directory: Path | None = None, inventory=None) -> Scenario:
    scenarios = {s.id: s for s in load_all(directory, inventory)}
    try:
        return scenarios[int(str(ident).removeprefix("scenario").lstrip("#"))]
    except (ValueError, KeyError):
        raise InputError(f"no scenario {ident!r}",
                         hint=f"one of {', '.join(map(str, scenarios))}: `invoke scenario.list`") from None


def load(path: Path, inventory=None) -> Scenario:
    text = path.read_text()
    try:
        data, duplicates = load_yaml(text)
    except yaml.YAMLError as exc:
        line, message = yaml_problem(exc, text)
        raise InputError(message, file=str(path), line=line) from None
    if duplicates:
        raise InputError(duplicates[0][1], file=str(path), line=duplicates[0][0])
    if not isinstance(data, Map):
        raise InputError("a scenario is a mapping (id, title, severity, ...)", file=str(path), line=1)
    return _Reader(path, data, inventory).scenario()


class _Reader:
    def __init__(self, path: Path, data: Map, inventory=None):
        self.path, self.data, self.inventory = path, data, inventory

    def fail(self, message: str, key: str | None = None, where: Map | None = None,
             line: int | None = None) -> InputError:
        where = self.data if where is None else where
        line = line or (where.value_line(key) if key is not None else where.line)
        return InputError(message, file=str(self.path), line=line)

    def scenario(self) -> Scenario:
        data = self.data
        for key in data:
            if key not in KEYS:
                raise InputError(f"unknown key {key!r} (known: {', '.join(sorted(KEYS))})",
                                 file=str(self.path), line=data.key_line(key))
        missing = sorted(REQUIRED - set(data))
        if missing:
            raise self.fail(f"missing {', '.join(missing)}")
        ident = data["id"]
        if not isinstance(ident, int) or isinstance(ident, bool) or ident < 1:
            raise self.fail("id must be a positive number", "id")
        if not self.path.name.startswith(f"{ident:02d}-"):
            raise self.fail(f"scenario {ident}'s file must be named {ident:02d}-<slug>.yml", "id")
        if data["severity"] not in SEVERITY_LEVELS:
            raise self.fail("severity must be 1, 2, 3 or 4 (SEV1 is the worst)", "severity")
        question = data.get("question")
        if question is not None and question not in QUESTIONS:
            raise self.fail(f"question must be one of {', '.join(QUESTIONS)}", "question")
        for key in ("title", "runbook", "validation"):
            if not isinstance(data[key], str) or not data[key].strip():
                raise self.fail(f"{key} must be a non-empty string", key)
        return Scenario(
            id=ident, title=data["title"], severity=data["severity"], runbook=data["runbook"],
            detection=self.detection(), validation=self.selection(data["validation"], "validation"),
            **self.recovery(), **self.escalation(), **self.sandbox(), question=question,
            file=str(self.path))

    def detection(self) -> tuple[Symptom, ...]:
        checks = self.data["detection"]
        if not isinstance(checks, list) or not checks:
            raise self.fail("detection is a list of checks (file.py::test_name) that fail while "
                            "the scenario happens", "detection")
        symptoms = []
        for item, line in with_lines(checks, self.data.value_line("detection")):
            check, message = ((item.get("check"), item.get("message")) if isinstance(item, dict)
                              else (item, None))
            if (not isinstance(check, str) or "::" not in check
                    or isinstance(item, dict) and set(item) - {"check", "message"}):
                raise self.fail("detection names checks as file.py::test_name or "
                                f"{{check: file.py::test_name, message: REGEX}}, not {item!r}", line=line)
            try:
                re.compile(message or "")
            except re.error as exc:
                raise self.fail(f"detection: message is not a regular expression: {exc}",
                                line=line) from None
            self.known_check(check, "detection", line)
            symptoms.append(Symptom(check, message))
        return tuple(symptoms)

    def selection(self, select: str, key: str) -> str:
        words = select.split()
        if all("::" in w or w.endswith(".py") for w in words):
            for word in words:
                self.known_check(word, key)
            return select
        markers = known_markers()
        for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", select):
            if word not in MARKER_WORDS and word not in markers:
                raise self.fail(f"{key}: no check marker {word!r} (checks/conftest.py lists them)", key)
        return select

    def known_check(self, node: str, key: str, line: int | None = None) -> None:
        file, _, name = node.partition("::")
        tests = check_functions().get(file)
        if tests is None:
            raise self.fail(f"{key}: no check file {file} in checks/", key, line=line)
        if name and name not in tests:
            raise self.fail(f"{key}: {file} has no check {name}", key, line=line)

    def recovery(self) -> dict[str, Any]:
        recovery = self.data["recovery"]
        if not isinstance(recovery, Map) or len({"procedure", "playbook", "manual"} & set(recovery)) != 1:
            raise self.fail("recovery names one procedure:, playbook: or manual:", "recovery")
        unknown = set(recovery) - {"procedure", "playbook", "manual", "vars"}
        if unknown:
            raise self.fail(f"recovery: unknown key {sorted(unknown)[0]!r}", where=recovery)
        variables = recovery.get("vars", {})
        if not isinstance(variables, dict):
            raise self.fail("recovery vars must be a mapping", "vars", recovery)
        if "manual" in recovery:
            if not isinstance(recovery["manual"], str) or not recovery["manual"].strip():
                raise self.fail("recovery: manual says what a person does", "manual", recovery)
            return {"procedure": None, "playbook": None, "manual": recovery["manual"].strip()}
        if "procedure" in recovery:
            from ripcord.procedures import procedure_names

            if recovery["procedure"] not in procedure_names():
                raise self.fail(f"recovery: no procedure {recovery['procedure']!r} "
                                f"(one of {', '.join(procedure_names())})", "procedure", recovery)
            return {"procedure": recovery["procedure"], "playbook": None, "manual": None,
                    "recovery_vars": plain(variables)}
        playbook = self.path.parent / str(recovery["playbook"])
        if not playbook.is_file():
            raise self.fail(f"recovery: no playbook {recovery['playbook']} beside the scenario",
                            "playbook", recovery)
        if self.inventory is not None:  # validated like any playbook (host vars need the inventory)
            from ripcord.playbook import load_playbook

            load_playbook(str(playbook), extra_vars=plain(variables), inventory=self.inventory)
        return {"procedure": None, "playbook": playbook, "manual": None, "recovery_vars": plain(variables)}

    def escalation(self) -> dict[str, Any]:
        escalation = self.data["escalation"]
        if (not isinstance(escalation, Map) or set(escalation) != {"to", "after_minutes"}
                or not isinstance(escalation["after_minutes"], int) or escalation["after_minutes"] < 1
                or not isinstance(escalation["to"], str)):
            raise self.fail("escalation is {to: WHO, after_minutes: N}", "escalation")
        return {"escalate_to": escalation["to"], "escalate_after_minutes": escalation["after_minutes"]}

    def sandbox(self) -> dict[str, Any]:
        sandbox = self.data["sandbox"]
        if not isinstance(sandbox, Map) or len(sandbox) != 1 or not {"fault", "cannot"} & set(sandbox):
            raise self.fail("sandbox is {fault: NAME} (how `sandbox.chaos` shows it) or "
                            "{cannot: WHY}", "sandbox")
        if "cannot" in sandbox:
            return {"fault": None, "cannot_simulate": str(sandbox["cannot"])}
        from ripcord.sandbox.chaos import FAULTS

        if sandbox["fault"] not in FAULTS:
            raise self.fail(f"sandbox: no fault {sandbox['fault']!r} (one of {', '.join(FAULTS)})",
                            "fault", sandbox)
        return {"fault": sandbox["fault"], "cannot_simulate": None}


@functools.cache
def check_functions() -> dict[str, frozenset[str]]:
    """The shipped checks' files and their test functions (read, not imported)."""
    from ripcord.verify import CHECKS

    found = {}
    for path in CHECKS.glob("test_*.py"):
        tree = ast.parse(path.read_text())
        found[path.name] = frozenset(
            node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"))
    return found


@functools.cache
def known_markers() -> frozenset[str]:
    """The markers checks/conftest.py declares (concerns, procedures, scenarios, situational)."""
    from ripcord.verify import CHECKS

    tree = ast.parse((CHECKS / "conftest.py").read_text())
    names = {"situational"} | {f"scenario{n:02d}" for n in range(1, 21)}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple):
            names |= {e.value for e in node.value.elts if isinstance(e, ast.Constant)}
    return frozenset(names)


USAGE = """\
## Triage

```sh
invoke triage --host prod [--fix [--yes]] [--json]
```

Runbook 004's decision tree, by machine: every scenario's detection checks run in one round on
the hosts selected (read-only, no lock). A scenario matches when each of its symptoms failed on
some host (a symptom may also require the failure's message to match, e.g. which service is
down). The tree's questions (accepting trades? executing? market data?) are answered from the
matches; the matches print worst first (severity, then the tree's order) with their evidence and
the command that fixes each. Exit 0 healthy, 1 a scenario matched, 3 a host unreachable.

`--fix` runs the top scenario's recovery (after confirmation), then its validation, retried up
to `triage_validate_seconds` (30) while services settle. Each attempt is journaled before it
runs (`triage.fix`), so every terminal of the controller counts the same attempts: past
`triage_max_recoveries` (3) attempts of one scenario on one host pattern in
`triage_window_minutes` (60), triage stops acting, says so, journals a `triage.escalation`
naming the scenario's escalation contact, and exits 1. A recovery that keeps being needed is
not recovering; a loop of restarts hides the cause. (Inventory variables, group `all`.)

`invoke scenario.run N --host PATTERN` runs one scenario's recovery and validation by hand (no
rate limit: a person decided). A scenario whose recovery is a person's job (`manual:`) prints
what to do and exits 1.

## Drills

```sh
invoke sandbox.chaos list | FAULT [--host H]     # inject one scenario's fault
invoke sandbox.heal                              # undo every fault injected
invoke drill --scenario N|all                    # inject, triage, recover, validate, timed
```

A drill starts only on a fleet triage finds healthy, injects the scenario's fault from outside
ripcord (the sandbox's supervisors and files), runs triage until it names the scenario (time to
detect), runs the recovery and validation (time to recover), heals whatever happened, journals
a `drill` record and prints the table. Plain `invoke drill` stays the kill-switch drill.
"""


def markdown(known: list[Scenario]) -> str:
    """docs/scenarios.md, generated from the files (`invoke scenario.docs`; a test keeps it in sync)."""
    lines = ["# Failure scenarios", "",
             "<!-- generated from playbooks/scenarios/*.yml by `invoke scenario.docs`: edit those -->", "",
             "Runbook 004's twenty failure scenarios as code (`playbooks/scenarios/NN-slug.yml`): how each "
             "is detected (checks that fail while it happens), recovered (a procedure or playbook) and "
             "validated (checks that pass after), who hears of it, and how the sandbox shows it. "
             "`invoke triage` runs every detection at once; `invoke scenario.run N` a recovery; "
             "`invoke drill --scenario N` injects the fault and times both.", "",
             *USAGE.splitlines(), "", "## The scenarios", "",
             "| # | scenario | severity | recovery | sandbox |", "|---|---|---|---|---|"]
    for s in known:
        sandbox = f"fault `{s.fault}`" if s.fault else "cannot (below)"
        lines.append(f"| [{s.id}](#scenario-{s.id}) | {s.title} | SEV{s.severity} | {s.recovery} "
                     f"| {sandbox} |")
    levels = severities(SHIPPED_ESCALATION)
    for s in known:
        severity = levels[s.severity]
        lines += ["", f"## Scenario {s.id}", "", f"**{s.title}**: {severity['name']}, respond within "
                  f"{severity['respond_minutes']} min; escalate to {s.escalate_to} after "
                  f"{s.escalate_after_minutes} min. Runbooks: {s.runbook}.", ""]
        if s.question:
            lines.append(f"- Decision tree: answers *no* to \"{QUESTIONS[s.question]}\"")
        lines.append("- Detection (each fails while it happens): " + ", ".join(f"`{d}`" for d in s.detection))
        lines.append(f"- Recovery: {s.recovery}")
        lines.append(f"- Validation: `{s.validation}`")
        lines.append(f"- Sandbox: fault `{s.fault}`" if s.fault
                     else f"- Sandbox: cannot be simulated: {s.cannot_simulate}")
    return "\n".join(lines) + "\n"
