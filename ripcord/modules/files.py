"""file, copy, template: bring a path on the host to the state asked for.

Content is compared by sha256 (the host's sha256sum against the controller's), written over
SFTP to a temporary file beside the destination and renamed over it, so a reader never sees a
half-written file. Nothing is written under --check; --diff shows what content would change.

Deviations from Ansible, on purpose:
- file state=touch reports changed only when it created the file or changed its mode, and leaves
  an existing file's times alone (Ansible always touches and always reports changed): a second
  run must report changed=False.
- copy/template create a new file 0644 when no mode is given (Ansible: the host's umask); an
  existing file keeps its mode (as Ansible). Recursive copy of a directory is not supported.
- copy looks for src beside the playbook, then in its files/ directory; template, in templates/.
"""

from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path

import jinja2

from ripcord.modules.base import Arg, Result, TaskContext, register
from ripcord.modules.filesupport import (
    HostModule,
    make_backup,
    mode_problem,
    mode_str,
    parse_mode,
    put_file,
    q,
    read_file,
    remote_stat,
    run_checked,
    sha256,
    text_diff,
)
from ripcord.templating import Templar

MODE = Arg((str, int), help="octal string like '0640' (or YAML's 0640)")
NEW_FILE_MODE = 0o644


def _controller_path(ctx: TaskContext, path: str, *subdirs: str) -> Path:
    """A controller-side path: absolute as written, else the first of playbook_dir/<sub>/path."""
    if os.path.isabs(path):
        return Path(path)
    candidates = [Path(ctx.playbook_dir, sub, path) for sub in ("", *subdirs)]
    return next((c for c in candidates if c.exists()), candidates[0])


@register
class File(HostModule):
    """A path to a state: an existing file, touched (created if missing), absent, or a directory.

    Changed: when the path was created or removed, or its mode changed (touch leaves an existing
    file's times alone, so a second run reports unchanged).
    Check mode: changes nothing; reports what would be done.
    Example:
        - name: the halt file's directory is there
          file:
            path: "{{ titan_home }}/run"
            state: directory
            mode: "0750"
    """

    name = "file"
    args = {"path": Arg(str, required=True),
            "state": Arg(str, default="file", choices=("file", "touch", "absent", "directory")),
            "mode": MODE}

    @classmethod
    def check_combination(cls, args):
        problem = mode_problem(args.get("mode"))
        problems = [problem] if problem else []
        if args.get("state") == "absent" and "mode" in args:
            problems.append("'mode' makes no sense with state=absent")
        return problems

    def apply(self, ctx: TaskContext, args: dict) -> Result:
        path, state, mode = args["path"], args["state"], parse_mode(args.get("mode"))
        if posixpath.normpath(path) in ("/", ".", ""):
            return Result(failed=True, msg=f"refusing to manage {path!r}")
        st = remote_stat(ctx, path, follow=state != "absent")
        data = {"path": path, "state": state}
        if state == "absent":
            if st is None:
                return Result(msg=f"{path} is already absent", data=data)
            if not ctx.check:
                run_checked(ctx, f"rm -rf -- {q(path)}", f"cannot remove {path}")
            return Result(changed=True, msg=f"{'would remove' if ctx.check else 'removed'} {path}",
                          data=data)
        if state == "file" and st is None:
            return Result(failed=True, msg=f"{path} does not exist (use state=touch to create it)",
                          data=data)
        if st is not None and state in ("file", "touch") and st.isdir:
            return Result(failed=True, msg=f"{path} is a directory, not a file", data=data)
        if st is not None and state == "directory" and not st.isdir:
            return Result(failed=True, msg=f"{path} exists and is not a directory", data=data)

        actions = []
        if st is None:
            actions.append("created")
            if not ctx.check:
                make = "mkdir -p" if state == "directory" else "touch"
                run_checked(ctx, f"{make} -- {q(path)}", f"cannot create {path}")
        if mode is not None and (st is None or st.mode != mode):
            actions.append(f"mode {mode_str(st.mode)} -> {mode_str(mode)}" if st else
                           f"mode {mode_str(mode)}")
            if not ctx.check:
                run_checked(ctx, f"chmod {mode:o} -- {q(path)}", f"cannot chmod {path}")
        final_mode = mode if mode is not None else (st.mode if st else None)
        if final_mode is not None:
            data["mode"] = mode_str(final_mode)
        if not actions:
            return Result(msg=f"{path} is as asked ({state})", data=data)
        prefix = "would be " if ctx.check else ""
        return Result(changed=True, msg=f"{path}: {prefix}{', '.join(actions)}", data=data)


def deliver(ctx: TaskContext, dest: str, content: bytes, mode: int | None, backup: bool) -> Result:
    """copy/template's common end: make dest hold content (and mode), atomically, idempotently."""
    st = remote_stat(ctx, dest, checksum=True)
    if st is not None and st.isdir:
        return Result(failed=True, msg=f"{dest} is a directory")
    if st is not None and not st.isreg:
        return Result(failed=True, msg=f"{dest} exists and is not a regular file ({st.kind})")
    digest = sha256(content)
    content_changed = st is None or st.sha256 != digest
    mode_changed = st is not None and mode is not None and st.mode != mode
    final_mode = mode if mode is not None else (st.mode if st else NEW_FILE_MODE)
    data = {"dest": dest, "checksum": digest, "size": len(content), "mode": mode_str(final_mode)}
    if not content_changed and not mode_changed:
        return Result(msg=f"{dest} is up to date", data=data)

    diff = None
    if ctx.diff and content_changed:
        diff = text_diff(dest, read_file(ctx, dest) if st else None, content)
    what = "created" if st is None else ("updated" if content_changed else
                                         f"mode {mode_str(st.mode)} -> {mode_str(final_mode)}")
    if ctx.check:
        return Result(changed=True, msg=f"{dest} would be {what}", diff=diff, data=data)
    if content_changed:
        if backup and st is not None:
            data["backup_file"] = make_backup(ctx, dest)
        put_file(ctx, dest, content, final_mode)
    else:
        run_checked(ctx, f"chmod {final_mode:o} -- {q(dest)}", f"cannot chmod {dest}")
    return Result(changed=True, msg=f"{dest} {what}", diff=diff, data=data)


@register
class Copy(HostModule):
    """Writes `content` (or the controller file `src`) to `dest` on the host, atomically.

    Changed: when the file's content (compared by sha256) or mode differs, or it was missing.
    Check mode: writes nothing; reports whether it would change, --diff shows the content change.
    Example:
        - name: a note for the next shift
          copy:
            dest: "{{ titan_home }}/NOTE"
            content: halted for the incident; ask before resuming
            mode: "0644"
    """

    name = "copy"
    what = "dest"
    args = {"dest": Arg(str, required=True), "content": Arg(str),
            "src": Arg(str, help="controller-side file, relative to the playbook's directory"),
            "mode": MODE, "backup": Arg(bool, default=False)}

    @classmethod
    def check_combination(cls, args):
        problems = [] if ("content" in args) != ("src" in args) else [
            "exactly one of 'content' or 'src' is required"]
        problem = mode_problem(args.get("mode"))
        return problems + ([problem] if problem else [])

    def apply(self, ctx: TaskContext, args: dict) -> Result:
        dest = args["dest"]
        if args.get("src") is not None:
            src = _controller_path(ctx, args["src"], "files")
            if src.is_dir():
                return Result(failed=True, msg=f"src {src} is a directory (copying a tree is "
                                               "not supported)")
            try:
                content = src.read_bytes()
            except OSError as exc:
                return Result(failed=True, msg=f"cannot read src {src}: {exc.strerror}")
            if dest.endswith("/"):
                dest += src.name
        else:
            content = args["content"]
            # a lone "{{ mapping }}" renders to a mapping: written as JSON, as Ansible does
            text = content if isinstance(content, str) else json.dumps(content, indent=2) + "\n"
            content = text.encode()
        return deliver(ctx, dest, content, parse_mode(args.get("mode")), bool(args["backup"]))


@register
class Template(HostModule):
    """Renders a Jinja2 file on the controller (StrictUndefined) against the host's vars.

    The source is looked up in the playbook's templates/ directory, then beside the playbook.

    Changed: when the rendered content or the mode differs from the file on the host.
    Check mode: writes nothing; reports whether it would change, --diff shows the content change.
    Example:
        - name: the engine's limits
          template:
            src: limits.conf.j2
            dest: "{{ titan_home }}/etc/limits.conf"
            mode: "0640"
    """

    name = "template"
    what = "dest"
    args = {"src": Arg(str, required=True), "dest": Arg(str, required=True), "mode": MODE,
            "backup": Arg(bool, default=True)}

    @classmethod
    def check_combination(cls, args):
        problem = mode_problem(args.get("mode"))
        return [problem] if problem else []

    def apply(self, ctx: TaskContext, args: dict) -> Result:
        src = _controller_path(ctx, args["src"], "templates")
        try:
            rendered = self.render(ctx, src)
        except OSError as exc:
            return Result(failed=True, msg=f"cannot read template {src}: {exc.strerror}")
        except jinja2.TemplateError as exc:
            where = f"{src}:{exc.lineno}" if getattr(exc, "lineno", None) else str(src)
            return Result(failed=True, msg=f"template error in {where}: {exc.message or exc}")
        return deliver(ctx, args["dest"], rendered.encode(), parse_mode(args.get("mode")),
                       bool(args["backup"]))

    @staticmethod
    def render(ctx: TaskContext, src: Path) -> str:
        templar = ctx.templar or Templar(ctx.secrets)
        # includes and imports resolve beside the template
        env = templar.env.overlay(loader=jinja2.FileSystemLoader(str(src.parent)))
        return env.from_string(src.read_text()).render(ctx.vars)

