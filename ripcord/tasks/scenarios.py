"""The failure scenarios (docs/scenarios.md): `scenario.list`, `scenario.show`, `scenario.run`,
`scenario.docs`, and `triage`, which runs every scenario's detection and names what it sees."""

from __future__ import annotations

from invoke import Collection

from ripcord.cli import emit_json, run_task
from ripcord.errors import InputError
from ripcord.tasks.options import COMMON_HELP, task, verbosity


@task(name="list", help={"json": "one JSON object on stdout", "debug": "show tracebacks"})
def list_(c, json_=False, debug=False):
    """The twenty scenarios: severity, recovery, and whether the sandbox can show each."""
    from ripcord import scenarios

    def body(out):
        known = scenarios.load_all()
        if json_:
            emit_json({"ok": True, "scenarios": [
                {"id": s.id, "title": s.title, "severity": s.severity, "recovery": s.recovery,
                 "fault": s.fault} for s in known]})
            return
        for s in known:
            out.print(f"{s.id:>3}  SEV{s.severity}  {s.title:<52} {s.recovery:<48} "
                      f"{'fault ' + s.fault if s.fault else '-'}", soft_wrap=True)

    run_task(body, json_mode=json_, debug=debug)


@task(positional=["id"], help={"id": "the scenario's number", "debug": "show tracebacks"})
def show(c, id=None, debug=False):
    """One scenario: detection, recovery, validation, escalation, sandbox."""
    from ripcord import scenarios

    def body(out):
        if id is None:
            raise InputError("say which scenario: invoke scenario.show ID", hint="`invoke scenario.list`")
        scenario = scenarios.get(id)
        text = scenarios.markdown([scenario]).split(f"## Scenario {scenario.id}", 1)[1]
        out.print(f"[bold]Scenario {scenario.id}[/]{text}", markup=True, soft_wrap=True)

    run_task(body, debug=debug)


@task(name="run", iterable=["inventory"], positional=["id"],
      help={**{k: COMMON_HELP[k] for k in ("host", "inventory", "check", "verbose", "debug")},
            "id": "the scenario's number", "yes": "answer yes to every confirmation"})
def run_(c, id=None, host=None, yes=False, inventory=None, check=False, verbose=0, debug=False):
    """A scenario's recovery, then its validation checks."""
    from invoke import Exit

    from ripcord import scenarios, triage

    def body(out):
        if id is None or not host:
            raise InputError("say the scenario and the hosts: invoke scenario.run ID --host PATTERN")
        verbosity(verbose)
        inv = triage.load_inventory(inventory)
        scenario = scenarios.get(id, inventory=inv)
        code = triage.recover(scenario, pattern=host, inventory=inv, yes=yes, out=out, check=check)
        if code:
            raise Exit(code=code)

    run_task(body, debug=debug)


@task(help={"check": "only say whether docs/scenarios.md is current (exit 1 when not)",
            "debug": "show tracebacks"})
def docs(c, check=False, debug=False):
    """Write docs/scenarios.md from playbooks/scenarios/ (the files are the truth)."""
    from invoke import Exit

    from ripcord import scenarios
    from ripcord.paths import checkout

    def body(out):
        root = checkout()
        if root is None:
            raise InputError("scenario.docs writes the checkout's docs/: run it in the repository")
        path, text = root / "docs" / "scenarios.md", scenarios.markdown(scenarios.load_all())
        current = path.exists() and path.read_text() == text
        if check:
            out.print(f"{path}: {'current' if current else 'OUT OF DATE: run invoke scenario.docs'}")
            if not current:
                raise Exit(code=1)
            return
        path.write_text(text)
        out.print(f"wrote {path}")

    run_task(body, debug=debug)


@task(iterable=["inventory"], help={
    **{k: COMMON_HELP[k] for k in ("host", "inventory", "json", "debug")},
    "fix": "run the top scenario's recovery and validation (asks first unless --yes)",
    "yes": "answer yes to every confirmation"})
def triage(c, host=None, fix=False, yes=False, inventory=None, json_=False, debug=False):
    """Runbook 004's decision tree: every detection check at once; the scenarios seen, worst first."""
    from invoke import Exit

    from ripcord import triage as triaging

    def body(out):
        if not host:
            raise InputError("--host PATTERN is required", hint="e.g. --host sandbox")
        inv = triaging.load_inventory(inventory)  # read once: a bad one is exit 2 before any host
        found = triaging.diagnose(host, inventory=inv)
        if json_:
            emit_json(found.payload())
        else:
            triaging.show(found, out)
        code = found.code
        if fix and found.matches:
            code = triaging.fix(found.matches[0].scenario, pattern=host, inventory=inv, yes=yes, out=out)
        if code:
            raise Exit(code=code)

    run_task(body, json_mode=json_, debug=debug)


collection = Collection("scenario", list_, show, run_, docs)
