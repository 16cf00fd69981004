"""`doc [MODULE]`: the modules' documentation, as ansible-doc gives Ansible's (ripcord.moduledoc).

With no module, every module and its one-line summary; with one, its page: arguments from its
`Arg` declarations, what it reports as changed, its --check behaviour, and an example.
"""

from __future__ import annotations

from invoke import Collection

from ripcord.cli import emit_json, run_task
from ripcord.tasks.options import task


@task(help={"module": "the module to show (`ripcord doc MODULE` also works); default: list them",
            "json": "one JSON object on stdout", "debug": "show tracebacks"})
def doc(c, module=None, json_=False, debug=False):
    """Module documentation: the list of modules, or one module's arguments, behaviour and example."""
    from rich.markup import escape

    from ripcord import moduledoc

    def body(out):
        if module is None:
            listed = moduledoc.listing()
            if json_:
                emit_json({"ok": True, "modules": dict(listed)})
                return
            width = max(len(name) for name, _ in listed)
            for name, summary in listed:
                out.print(f"{escape(name):<{width}}  {escape(summary)}", soft_wrap=True)
            return
        page = moduledoc.page(module)
        if json_:
            emit_json({"ok": True, "module": moduledoc.as_json(page)})
            return
        out.print(escape(moduledoc.text(page)), soft_wrap=True, end="")

    run_task(body, json_mode=json_, debug=debug)


def module_word(argv: list[str]) -> list[str]:
    """`ripcord doc MODULE` as `ripcord doc --module MODULE`: invoke has no optional positional
    arguments, and ansible-doc's habit is the bare word."""
    words = [i for i, word in enumerate(argv[1:], 1) if not word.startswith("-")]
    if words and argv[words[0]] == "doc" and len(argv) > words[0] + 1 \
            and not argv[words[0] + 1].startswith("-"):
        return [*argv[:words[0] + 1], "--module", *argv[words[0] + 1:]]
    return argv


collection = Collection(doc)
