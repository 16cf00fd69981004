"""Controller-side modules: assert, fail, set_fact, debug, confirm. They touch no host.

What they show may hold host text (a breaker's reason in a prompt, a log in a debug message):
the prompt goes to the terminal through report.inert, never as markup or escape sequences.
"""

from __future__ import annotations

from ripcord.errors import DeclinedError
from ripcord.modules.base import ANY, Arg, Module, Result, TaskContext, register
from ripcord.report import inert, visible


@register
class Assert(Module):
    """Fails the host unless every condition in `that` holds (bare Jinja2 expressions).

    Changed: never.
    Check mode: runs as usual (it changes nothing).
    Example:
        - name: the engine reports halted
          uri:
            url: "http://127.0.0.1:{{ health_port | default(8080) }}/health"
          register: health
        - assert:
            that:
              - health.json.halted
            fail_msg: the engine is still trading
    """

    name = "assert"
    on_controller = True
    args = {"that": Arg((str, list, bool), required=True, expression=True), "fail_msg": Arg(str),
            "success_msg": Arg(str), "quiet": Arg(bool, default=False)}

    def run(self, ctx: TaskContext, args: dict) -> Result:
        conditions = args["that"] if isinstance(args["that"], list) else [args["that"]]
        for condition in conditions:
            if not ctx.templar.truth(condition, ctx.vars):
                return Result(failed=True, msg=args.get("fail_msg") or f"assertion failed: {condition}",
                              data={"assertion": condition})
        return Result(msg=args.get("success_msg") or "all assertions passed")


@register
class Fail(Module):
    """Fails the host with `msg` (usually under a `when:`).

    Changed: never.
    Check mode: runs as usual.
    Example:
        - name: refuse to go on against production without an incident id
          fail:
            msg: give -e incident=INC-123
          when: incident is not defined
    """

    name = "fail"
    on_controller = True
    args = {"msg": Arg(str, default="failed as requested")}

    def run(self, ctx: TaskContext, args: dict) -> Result:
        return Result(failed=True, msg=args["msg"])


@register
class SetFact(Module):
    """Sets host variables for the rest of the run: any key, any value.

    Changed: never.
    Check mode: runs as usual, so later tasks see the variables.
    Example:
        - set_fact:
            halt_reason: "drill by {{ ripcord_operator | default('ripcord') }}"
    """

    name = "set_fact"
    on_controller = True
    open_args = True

    @classmethod
    def check_args(cls, args):
        return [f"{key!r} is not a valid variable name" for key in args
                if not str(key).isidentifier()] or ([] if args else ["set_fact needs at least one name"])

    def run(self, ctx: TaskContext, args: dict) -> Result:
        return Result(data={"ansible_facts": dict(args)})


@register
class Debug(Module):
    """Shows a message or a variable's value in the run's output.

    Changed: never.
    Check mode: runs as usual.
    Example:
        - debug:
            msg: "about to halt {{ inventory_hostname }}"
    """

    name = "debug"
    on_controller = True
    args = {"msg": Arg(ANY), "var": Arg(str, expression=True)}

    def run(self, ctx: TaskContext, args: dict) -> Result:
        if args.get("var"):
            value = ctx.templar.evaluate(args["var"], ctx.vars)
            return Result(msg=f"{args['var']} = {value!r}", data={args["var"]: value})
        return Result(msg=str(args.get("msg", "")))


@register
class Confirm(Module):
    """Asks the operator before something destructive; --yes answers yes. Declining ends the run.

    `typed` makes the operator type a word (FLATTEN) rather than answer yes. Without a terminal and
    without --yes the run is declined (exit 4) and nothing further is changed.

    Changed: never.
    Check mode: skipped; says what it would ask (the pre-checks before it still run).
    Example:
        - confirm:
            prompt: "Flatten every position of the account?"
            typed: FLATTEN
    """

    name = "confirm"
    on_controller = True
    once = True
    free_form = "prompt"
    args = {"prompt": Arg(str, required=True),
            "typed": Arg(str, help="a word the operator must type, e.g. FLATTEN")}

    def run(self, ctx: TaskContext, args: dict) -> Result:
        if ctx.check:  # nothing will change: the pre-checks before it still run and report
            return Result(skipped=True, msg=f"would ask: {visible(args['prompt'])}")
        if not ctx.confirm(inert(args["prompt"]), args.get("typed")):  # the prompt is markup
            raise DeclinedError(f"declined: {visible(args['prompt'])}",
                                hint="nothing further was changed")
        return Result(msg="confirmed")
