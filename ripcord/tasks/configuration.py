"""`config`: the operator configuration in force (ripcord.config) and where each value came from."""

from __future__ import annotations

from invoke import Collection

from ripcord.cli import emit_json, run_task
from ripcord.tasks.options import task


@task(name="config", help={"json": "one JSON object on stdout", "debug": "show tracebacks"})
def config_(c, json_=False, debug=False):
    """Show the configuration in force (ripcord.yaml, ~/.config/ripcord, RIPCORD_*) and its sources."""
    from rich.markup import escape

    from ripcord import config

    def body(out):
        settings = config.load()

        def shown(value):
            if isinstance(value, list):
                return [str(v) for v in value]
            return str(value)

        if json_:
            emit_json({"ok": True, "files": config.searched(),
                       "settings": {k: {"value": shown(s.value), "source": s.source}
                                    for k, s in settings.items()}})
            return
        out.print("files, lowest precedence first (then RIPCORD_* variables, then options):")
        for line in config.searched():
            out.print(f"  {escape(line)}")
        for key, setting in settings.items():
            value = shown(setting.value)
            text = ", ".join(value) or "(none)" if isinstance(value, list) else value
            out.print(f"{key:<14} {escape(text)}  [dim]({escape(setting.source)}; "
                      f"{escape(config.KEYS[key].help)})[/]", soft_wrap=True)

    run_task(body, json_mode=json_, debug=debug)


collection = Collection(config_)
