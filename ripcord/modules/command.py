"""command and shell: run something on the host.

`command` never goes through a shell's expansion: its words are quoted one by one, so `$HOME`,
`|` and `;` are passed literally, as in Ansible. `shell` hands the line to /bin/sh.
Both report changed (a command may have done anything) unless creates/removes say it was
already done; under --check they are skipped, since what they would change is unknown.
"""

from __future__ import annotations

import shlex
import time

from ripcord.modules.base import Arg, Module, Result, TaskContext, register


def _guarded(args: dict, ctx: TaskContext) -> Result | None:
    """creates/removes: skip when the path already says the work is done."""
    for key, wanted in (("creates", True), ("removes", False)):
        path = args.get(key)
        if path:
            exists = ctx.run(f"test -e {shlex.quote(path)}").rc == 0
            if exists == wanted:
                return Result(msg=f"skipped: {path} {'exists' if wanted else 'does not exist'}")
    return None


def _execute(line: str, args: dict, ctx: TaskContext) -> Result:
    if args.get("chdir"):
        line = f"cd {shlex.quote(args['chdir'])} && {line}"
    started = time.monotonic()
    out = ctx.run(line, stdin=args.get("stdin"))
    data = {"rc": out.rc, "stdout": out.stdout.rstrip("\n"), "stderr": out.stderr.rstrip("\n"),
            "delta": round(time.monotonic() - started, 3)}
    data["stdout_lines"] = data["stdout"].splitlines()
    data["stderr_lines"] = data["stderr"].splitlines()
    failed = out.rc != 0
    return Result(changed=True, failed=failed, data=data,
                  msg=f"non-zero return code {out.rc}" if failed else "")


COMMON = {"chdir": Arg(str), "creates": Arg(str), "removes": Arg(str), "stdin": Arg(str)}


class _Run(Module):
    """What command and shell share: skipped under --check, creates/removes guards, results."""

    free_form = "cmd"

    def line(self, args: dict) -> str:
        raise NotImplementedError

    def run(self, ctx: TaskContext, args: dict) -> Result:
        if ctx.check:
            return Result(skipped=True, msg="skipped in check mode")
        return _guarded(args, ctx) or _execute(self.line(args), args, ctx)


@register
class Command(_Run):
    """Runs a command on the host, its words quoted one by one (no shell: `$HOME`, `|` are literal).

    Changed: always when it runs (a command may have done anything), unless `creates` or `removes`
    says the work was already done.
    Check mode: skipped; what a command would change is unknown.
    Example:
        - name: what the engine's release directory holds
          command:
            cmd: ls -l current/
            chdir: "{{ titan_home }}"
          register: listing
    """

    name = "command"
    args = {"cmd": Arg(str), "argv": Arg(list), **COMMON}

    @classmethod
    def check_combination(cls, args):
        if ("cmd" in args) == ("argv" in args):
            return ["exactly one of 'cmd' or 'argv' is required"]
        return []

    def line(self, args: dict) -> str:
        words = args["argv"] if args.get("argv") else shlex.split(args["cmd"])
        return " ".join(shlex.quote(str(w)) for w in words)


@register
class Shell(_Run):
    """Runs a line through /bin/sh on the host (pipes, redirections and variables work).

    Changed: always when it runs, unless `creates` or `removes` says the work was already done.
    Check mode: skipped; what a shell line would change is unknown.
    Example:
        - name: the last errors in the engine's log
          shell:
            cmd: grep -c ERROR "$TITAN_HOME/logs/execution.log" || true
          register: errors
    """

    name = "shell"
    args = {"cmd": Arg(str, required=True), **COMMON}

    def line(self, args: dict) -> str:
        return f"/bin/sh -c {shlex.quote(args['cmd'])}"
