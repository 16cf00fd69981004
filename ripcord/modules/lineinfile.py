"""lineinfile: make sure one line is in a file on the host (or is not), as Ansible's does.

Ops playbooks reach for it to flip one setting in a config file without owning the whole file
(a `template` would). The edit itself (present/absent below) follows ansible-core 2.19's
lineinfile line for line, and the unit tests compare the two on the same inputs; the file is read
over SFTP, edited on the controller, and written back atomically (a temporary file renamed over
it) only when its content changes, so a second run reports changed=False. --check writes
nothing, --diff shows the edit, backup keeps a timestamped copy first.

Differences from Ansible, on purpose: a file `create` makes is 0644 unless `mode` says otherwise
(Ansible: the umask); `validate`, `owner`, `group` and the SELinux arguments are not supported.
"""

from __future__ import annotations

import io
import posixpath
import re
from typing import Any

from ripcord.modules.base import Arg, Result, TaskContext, _is_template, register
from ripcord.modules.filesupport import (
    HostFileError,
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
    text_diff,
)

NEW_FILE_MODE = 0o644
LINESEP = b"\n"  # os.linesep on the (POSIX) host, as Ansible uses it


# --- the edit (ansible-core 2.19 lineinfile present()/absent(), on a list of byte lines) ----

def present(lines: list[bytes], line: str, *, regexp: str | None = None,
            search_string: str | None = None, insertafter: str | None = None,
            insertbefore: str | None = None, backrefs: bool = False,
            firstmatch: bool = False) -> tuple[list[bytes], str]:
    """The file's lines with `line` present, and Ansible's message ('' when nothing changed)."""
    lines = list(lines)
    if insertafter is None and insertbefore is None:
        insertafter = "EOF"
    bre_m = re.compile(line_bytes(regexp)) if regexp is not None else None
    if insertafter not in (None, "BOF", "EOF"):
        bre_ins = re.compile(line_bytes(insertafter))
    elif insertbefore not in (None, "BOF"):
        bre_ins = re.compile(line_bytes(insertbefore))
    else:
        bre_ins = None
    index = [-1, -1]  # the line regexp (or the line itself) matched; where to insert
    match: Any = None
    exact = False
    b_line = line_bytes(line)
    if bre_m is not None:
        for lineno, cur in enumerate(lines):
            found = bre_m.search(cur)
            if found:
                index[0], match = lineno, found
                if firstmatch:
                    break
    if search_string is not None:
        for lineno, cur in enumerate(lines):
            if line_bytes(search_string) in cur:
                index[0], match = lineno, True
                if firstmatch:
                    break
    if not match:
        for lineno, cur in enumerate(lines):
            if b_line == cur.rstrip(b"\r\n"):
                index[0], exact = lineno, True
            elif bre_ins is not None and bre_ins.search(cur):
                index[1] = lineno + 1 if insertafter else lineno
                if firstmatch:
                    break

    if index[0] != -1:
        new = match.expand(b_line) if backrefs and match else b_line
        if not new.endswith(LINESEP):
            new += LINESEP
        if (regexp, search_string, match) == (None, None, None) and not exact:
            return _insert_near(lines, b_line, index[1], insertafter, insertbefore)
        if lines[index[0]] != new:
            lines[index[0]] = new
            return lines, "line replaced"
        return lines, ""
    if backrefs:
        return lines, ""  # no match to take the backreferences from: nothing is safe to write
    if insertbefore == "BOF" or insertafter == "BOF":
        return [b_line + LINESEP, *lines], "line added"
    if insertafter == "EOF" or index[1] == -1:
        if lines and lines[-1][-1:] not in (b"\n", b"\r"):
            lines.append(LINESEP)
        return [*lines, b_line + LINESEP], "line added"
    if insertafter:
        if len(lines) == index[1]:
            if lines[index[1] - 1].rstrip(b"\r\n") != b_line:
                return [*lines, b_line + LINESEP], "line added"
            return lines, ""
        if b_line != lines[index[1]].rstrip(b"\n\r"):
            lines.insert(index[1], b_line + LINESEP)
            return lines, "line added"
        return lines, ""
    lines.insert(index[1], b_line + LINESEP)
    return lines, "line added"


def _insert_near(lines: list[bytes], b_line: bytes, at: int, insertafter: str | None,
                 insertbefore: str | None) -> tuple[list[bytes], str]:
    """Ansible's branch for an index found without regexp or search string (unreachable in
    practice: kept so the port stays line for line)."""
    if insertafter and insertafter != "EOF":
        if lines and lines[-1][-1:] not in (b"\n", b"\r"):
            lines[-1] = lines[-1] + LINESEP
        if len(lines) == at:
            if lines[at - 1].rstrip(b"\r\n") != b_line:
                return [*lines, b_line + LINESEP], "line added"
        elif lines[at].rstrip(b"\r\n") != b_line:
            lines.insert(at, b_line + LINESEP)
            return lines, "line added"
    elif insertbefore and insertbefore != "BOF":
        before = lines[at] if at <= 0 else lines[at - 1]
        if before.rstrip(b"\r\n") != b_line:
            lines.insert(at, b_line + LINESEP)
            return lines, "line added"
    return lines, ""


def absent(lines: list[bytes], *, line: str | None = None, regexp: str | None = None,
           search_string: str | None = None) -> tuple[list[bytes], int]:
    """The file's lines without those matching, and how many were removed."""
    bre_c = re.compile(line_bytes(regexp)) if regexp is not None else None
    b_line = line_bytes(line) if line is not None else None

    def matches(cur: bytes) -> bool:
        if bre_c is not None:
            return bool(bre_c.search(cur))
        if search_string is not None:
            return line_bytes(search_string) in cur
        return b_line == cur.rstrip(b"\r\n")

    kept = [cur for cur in lines if not matches(cur)]
    return kept, len(lines) - len(kept)


def line_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def split_lines(data: bytes) -> list[bytes]:
    """As Python's readlines() (Ansible's): split after each \\n only."""
    return io.BytesIO(data).readlines()


# --- the module ---------------------------------------------------------------------------------

@register
class LineInFile(HostModule):
    """One line in a file on the host is there (or is not), as Ansible's lineinfile.

    Changed: when the file's content changed (a second run reports unchanged).
    Check mode: writes nothing; --diff shows the edit it would make.
    Example:
        - name: the engine starts halted after a restart
          lineinfile:
            path: "{{ titan_home }}/etc/execution.conf"
            regexp: "^start_halted="
            line: start_halted=true
            create: true
    """

    name = "lineinfile"
    args = {
        "path": Arg(str, help="the file (Ansible's alias: dest)"), "dest": Arg(str),
        "state": Arg(str, default="present", choices=("present", "absent")),
        "line": Arg((str, int, float), help="a lone {{ number }} is written as its text"),
        "regexp": Arg(str), "search_string": Arg(str),
        "insertafter": Arg(str, help="EOF (default), BOF, or a regular expression"),
        "insertbefore": Arg(str, help="BOF or a regular expression"),
        "backrefs": Arg(bool, default=False), "create": Arg(bool, default=False),
        "backup": Arg(bool, default=False), "firstmatch": Arg(bool, default=False),
        "mode": Arg((str, int), help="octal string like '0640'"),
    }

    @classmethod
    def check_combination(cls, args: dict) -> list[str]:
        problems = []
        if ("path" in args) == ("dest" in args):
            problems.append("exactly one of 'path' or its alias 'dest' is required")
        for one, other in (("insertbefore", "insertafter"), ("regexp", "search_string"),
                           ("backrefs", "search_string")):
            if args.get(one) is not None and args.get(other) is not None:
                problems.append(f"{one!r} and {other!r} are mutually exclusive")
        if args.get("state", "present") == "present":
            if args.get("line") is None:
                problems.append("'line' is required with state=present")
            if args.get("backrefs") and args.get("regexp") is None:
                problems.append("'regexp' is required with backrefs=true")
        elif all(args.get(k) is None for k in ("line", "regexp", "search_string")):
            problems.append("one of 'line', 'search_string' or 'regexp' is required with state=absent")
        for key in ("regexp", "insertafter", "insertbefore"):
            problem = _regex_problem(args.get(key))
            if problem:
                problems.append(f"argument {key!r}: {problem}")
        problem = mode_problem(args.get("mode"))
        return problems + ([problem] if problem else [])

    def apply(self, ctx: TaskContext, args: dict) -> Result:
        path = args.get("path") or args["dest"]
        if args.get("line") is not None:
            args = {**args, "line": str(args["line"])}
        for key in ("regexp", "insertafter", "insertbefore"):  # templated ones, now rendered
            problem = _regex_problem(args.get(key))
            if problem:
                return Result(failed=True, msg=f"argument {key!r}: {problem}")
        real = _real_path(ctx, path)
        st = remote_stat(ctx, real)
        data: dict[str, Any] = {"path": path, "backup": ""}
        if st is not None and st.isdir:
            return Result(failed=True, msg=f"Path {path} is a directory !", data={**data, "rc": 256})
        if st is not None and not st.isreg:
            return Result(failed=True, msg=f"{path} is not a regular file ({st.kind})", data=data)
        if st is None and (args["state"] == "absent" or not args["create"]):
            if args["state"] == "absent":
                return Result(msg="file not present", data={**data, "found": 0})
            return Result(failed=True, msg=f"Destination {path} does not exist !",
                          data={**data, "rc": 257})
        before = read_file(ctx, real) if st is not None else b""
        lines = split_lines(before)
        if args["state"] == "present":
            after, msg = present(lines, args["line"], regexp=args.get("regexp"),
                                 search_string=args.get("search_string"),
                                 insertafter=args.get("insertafter"),
                                 insertbefore=args.get("insertbefore"),
                                 backrefs=bool(args["backrefs"]), firstmatch=bool(args["firstmatch"]))
        else:
            after, found = absent(lines, line=args.get("line"), regexp=args.get("regexp"),
                                  search_string=args.get("search_string"))
            msg = f"{found} line(s) removed" if found else ""
            data["found"] = found
        content = b"".join(after)
        content_changed = content != before or st is None and bool(msg)
        mode = parse_mode(args.get("mode"))
        final_mode = mode if mode is not None else (st.mode if st else NEW_FILE_MODE)
        mode_changed = st is not None and mode is not None and st.mode != mode
        data["mode"] = mode_str(final_mode)
        if mode_changed:
            msg = (msg + " and " if msg else "") + "ownership, perms or SE linux context changed"
        if not content_changed and not mode_changed:
            return Result(msg=msg, data=data)
        diff = text_diff(path, before if st is not None else None, content) \
            if ctx.diff and content_changed else None
        if ctx.check:
            return Result(changed=True, msg=msg, diff=diff, data=data)
        if content_changed:
            if st is None:
                parent = posixpath.dirname(real)
                if parent:
                    run_checked(ctx, f"mkdir -p -- {q(parent)}", f"cannot create {parent}")
            elif args["backup"]:
                data["backup"] = make_backup(ctx, real)
            put_file(ctx, real, content, final_mode)
        else:
            run_checked(ctx, f"chmod {final_mode:o} -- {q(real)}", f"cannot chmod {path}")
        return Result(changed=True, msg=msg, diff=diff, data=data)


def _regex_problem(value: Any) -> str | None:
    if not isinstance(value, str) or _is_template(value) or value in ("BOF", "EOF"):
        return None
    try:
        re.compile(line_bytes(value))
    except re.error as exc:
        return f"not a regular expression: {exc}"
    return None


def _real_path(ctx: TaskContext, path: str) -> str:
    """Where the edit lands: a symlink's target, as Ansible writes through it (realpath)."""
    out = ctx.run(f"readlink -f -- {q(path)}")
    real = out.stdout.strip()
    if out.rc != 0 or not real:
        if out.rc != 0 and "No such file" not in out.stderr and out.stderr.strip():
            raise HostFileError(f"cannot resolve {path}: {out.stderr.strip().splitlines()[-1]}")
        return path
    return real
