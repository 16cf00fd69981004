"""env: set or remove one KEY=VALUE line in a .env file, without the secrets leaving the host.

A .env file holds the host's secrets. The edit runs on the host in POSIX sh (no sed, no awk,
no python): the file is read line by line, the first `KEY=` line is replaced in place (later
duplicates dropped) or the line is appended, into a 0600 temporary file that is renamed over the
original. The new value travels on the command's stdin, never in argv; nothing of the file's
content comes back to the controller, only line numbers and flags. So the result, the message
and the diff name the key and never a value (the diff shows the key with the value redacted).

The file is kept mode 0600 (created 0600 when missing); when the content changes, the previous
file is kept as path.<timestamp>.bak, also 0600. A symlinked .env is edited at its target. The
temporary file and the backup's are made by mktemp (unpredictable names, O_EXCL) and renamed
into place, so no planted name or symlink is ever written through.
A value of plain characters (letters, digits, `_@%+=:,./-`) is written as is; any other is
single-quoted, `'` written as `'\\''`, so `. .env` gives back the same bytes and never runs any of
them (ripcord's dotenv reader and the Titan services read that form back). A value cannot hold a
newline, CR or NUL: refused with a clear error. Only `KEY=` lines count as the key (`export
KEY=...` lines are left alone).
"""

from __future__ import annotations

import re

from ripcord.dotenv import quote
from ripcord.modules.base import Arg, Result, TaskContext, _is_template, register
from ripcord.modules.filesupport import HostFileError, HostModule, backup_name, q
from ripcord.templating import REDACTED

KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# $1..: path, key, state, check (0|1), backup path; stdin: the value as written (quoted), one line.
SCRIPT = r"""
p=$1 k=$2 state=$3 check=$4 bak=$5
umask 077
IFS= read -r v || :
f=$(readlink -f -- "$p" 2>/dev/null) && [ -n "$f" ] || f=$p
d=$(dirname -- "$f")
[ -d "$d" ] || { echo "ERR the directory $d does not exist"; exit 0; }
exists=0 mode= n=0 found= same=0 changed=0 b=
if [ -e "$f" ]; then
  [ -f "$f" ] || { echo "ERR $p is not a regular file"; exit 0; }
  [ -r "$f" ] || { echo "ERR $p is not readable"; exit 0; }
  exists=1 mode=$(stat -c %a -- "$f")
elif [ "$state" = absent ]; then
  echo "OK exists=0 lines=0 changed=0 same=0 mode= found="; exit 0
fi
tmp= out=/dev/null
trap 'rm -f -- "$tmp"' EXIT
if [ "$check" = 0 ]; then
  tmp=$(mktemp -- "$d/.$(basename -- "$f").ripcord-XXXXXXXXXX") ||
    { echo "ERR cannot write beside $f"; exit 0; }
  out=$tmp
fi
want="$k=$v"
{
  if [ $exists = 1 ]; then
    while IFS= read -r l || [ -n "$l" ]; do
      n=$((n + 1))
      case $l in
        "$k="*)
          if [ -z "$found" ]; then
            [ "$l" = "$want" ] && same=1
            [ "$state" = present ] && printf '%s\n' "$want"
          fi
          found="$found $n" ;;
        *) printf '%s\n' "$l" ;;
      esac
    done < "$f"
  fi
  if [ "$state" = present ] && [ -z "$found" ]; then printf '%s\n' "$want"; fi
} > "$out" || { echo "ERR cannot write beside $f"; exit 0; }
set -- $found
if [ "$state" = present ]; then
  [ $# -eq 1 ] && [ $same = 1 ] || changed=1
else
  [ $# -eq 0 ] || changed=1
fi
if [ "$check" = 0 ]; then
  if [ $changed = 1 ]; then
    if [ $exists = 1 ]; then
      b=$(mktemp -- "$bak.XXXXXXXXXX") && cat -- "$f" > "$b" && mv -fT -- "$b" "$bak" ||
        { rm -f -- "$b"; echo "ERR cannot back up $p"; exit 0; }
    fi
    mv -fT -- "$tmp" "$f" || { echo "ERR cannot replace $p"; exit 0; }
  elif [ $exists = 1 ] && [ "$mode" != 600 ]; then
    chmod 600 -- "$f" || { echo "ERR cannot chmod $p"; exit 0; }
  fi
fi
echo "OK exists=$exists lines=$n changed=$changed same=$same mode=$mode found=$*"
"""


def redacted_diff(path: str, key: str, report: dict, state: str) -> str:
    """The change as a unified diff that names the key and never shows a value."""
    line = f"{key}={REDACTED}\n"
    found = [int(n) for n in report["found"].split()]
    if not report["exists"]:
        return f"--- /dev/null\n+++ {path} (after)\n@@ -0,0 +1,1 @@\n+{line}"
    hunks, shift = [], 0  # shift: lines added minus removed above the current hunk
    if state == "present" and not found:
        total = int(report["lines"])
        hunks.append(f"@@ -{total},0 +{total + 1},1 @@\n+{line}")
    for index, number in enumerate(found):
        if index == 0 and state == "present":
            if not report["same"]:
                hunks.append(f"@@ -{number},1 +{number},1 @@\n-{line}+{line}")
            continue
        hunks.append(f"@@ -{number},1 +{number + shift - 1},0 @@\n-{line}")
        shift -= 1
    return f"--- {path} (before)\n+++ {path} (after)\n" + "".join(hunks)


@register
class Env(HostModule):
    """Sets or removes one KEY=VALUE line in a .env file; the value never leaves the host.

    Changed: when the file's content changed (the old file kept as path.<timestamp>.bak).
    Check mode: writes nothing; reports which key would be set or removed (never its value).
    Example:
        - name: slow the engine's order rate
          env:
            path: "{{ env_file }}"
            key: TITAN_MAX_ORDERS_PER_S
            value: 5
    """

    name = "env"
    args = {"path": Arg(str, required=True, help="the .env file"),
            "key": Arg(str, required=True),
            "value": Arg((str, int, float), secret=True, help="required with state=present"),
            "state": Arg(str, default="present", choices=("present", "absent"))}

    @classmethod
    def check_combination(cls, args):
        problems = []
        key = args.get("key")
        if isinstance(key, str) and not _is_template(key) and not KEY.match(key):
            problems.append(f"argument 'key': {key!r} is not a variable name "
                            "(letters, digits and _, not starting with a digit)")
        state = args.get("state", "present")
        if state == "present" and "value" not in args:
            problems.append("argument 'value' is required with state=present")
        if state == "absent" and "value" in args:
            problems.append("argument 'value' makes no sense with state=absent")
        return problems

    def apply(self, ctx: TaskContext, args: dict) -> Result:
        path, key, state = args["path"], args["key"], args["state"]
        if not KEY.match(key):
            return Result(failed=True, msg=f"{key!r} is not a valid .env key")
        value = "" if state == "absent" else str(args["value"])
        if ctx.secrets is not None:
            ctx.secrets.add(value)
        if any(c in value for c in "\n\r\0"):
            return Result(failed=True, msg=f"the value for {key} must be a single line "
                                           "(no newline, CR or NUL)")
        backup = backup_name(path)
        argv = " ".join(q(a) for a in (path, key, state, int(ctx.check), backup))
        out = ctx.run(f"/bin/sh -c {q(SCRIPT)} env-edit {argv}", stdin=quote(value) + "\n")
        report = self.parse(out.stdout, out.stderr, path)
        data = {"path": path, "key": key, "state": state, "mode": "0600"}
        mode_fixed = bool(report["exists"]) and report["mode"] != "600"
        if not report["changed"] and not mode_fixed:
            return Result(msg=f"{key} is already {'set' if state == 'present' else 'absent'} "
                              f"in {path}", data=data)
        would = "would be " if ctx.check else ""
        notes = []
        if report["changed"]:
            verb = "removed" if state == "absent" else ("updated" if report["found"] else "added")
            notes.append(f"{key} {would}{verb}" + ("" if report["exists"] else f" ({path} created)"))
            if report["exists"] and not ctx.check:
                data["backup_file"] = backup
        if mode_fixed:
            notes.append(f"mode {would}changed {int(report['mode'], 8):04o} -> 0600")
        diff = redacted_diff(path, key, report, state) if ctx.diff and report["changed"] else None
        return Result(changed=True, msg=f"{path}: {'; '.join(notes)}", diff=diff, data=data)

    @staticmethod
    def parse(stdout: str, stderr: str, path: str) -> dict:
        """The script's last line. Its stderr carries the shell's reason for a failure (the
        value never reaches stderr: it is only ever printf'd into the file)."""
        last = (stdout.strip().splitlines() or [""])[-1]
        if last.startswith("ERR "):
            reason = (stderr.strip().splitlines() or [""])[-1].rsplit(": ", 1)[-1]
            raise HostFileError(last[4:] + (f": {reason}" if reason else ""))
        if not last.startswith("OK "):
            raise HostFileError(f"cannot edit {path}: unexpected output from the host")
        head, _, found = last[3:].partition(" found=")
        report = dict(field.split("=", 1) for field in head.split())
        return {"exists": report["exists"] == "1", "changed": report["changed"] == "1",
                "same": report["same"] == "1", "mode": report["mode"], "lines": report["lines"],
                "found": found.strip()}
