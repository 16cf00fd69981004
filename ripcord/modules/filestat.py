"""stat and fetch: look at a file on the host, bring it back to the controller.

stat never changes anything; a registered stat's `size` is the mark that wait_for's
search_regex `offset` starts from, so only log lines written after the mark count.

fetch copies a remote file into a controller directory, as Ansible does: dest/<host>/<src path>
(or, with flat, dest itself, or dest/<basename> when dest ends with "/" or is a directory).
A relative dest is relative to the playbook's directory. It is changed when the local copy was
created or differed; under --check nothing is written locally. The local copy gets the remote
file's read bits (never write for group or others), so a 0600 file stays private.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import tempfile
from pathlib import Path

from ripcord.modules.base import Arg, Result, TaskContext, register
from ripcord.modules.filesupport import HostModule, remote_stat


@register
class Stat(HostModule):
    """Facts about one path on the host (exists, size, mode, mtime, type, sha256).

    data: exists, path, size, mode ("0640"), mtime (float), isdir, isreg, islnk and sha256
    (readable regular files, with get_checksum). The same facts are also under `stat`, so
    Ansible's `result.stat.exists` spelling works.

    Changed: never.
    Check mode: runs as usual (it changes nothing).
    Example:
        - name: is the engine halted by its file?
          stat:
            path: "{{ titan_home }}/HALT"
          register: halt_file
        - debug:
            msg: "halt file present: {{ halt_file.stat.exists }}"
    """

    name = "stat"
    args = {"path": Arg(str, required=True), "get_checksum": Arg(bool, default=True),
            "follow": Arg(bool, default=False, help="report the target of a symlink")}

    def apply(self, ctx: TaskContext, args: dict) -> Result:
        st = remote_stat(ctx, args["path"], follow=bool(args["follow"]),
                         checksum=bool(args["get_checksum"]))
        facts = st.facts() if st else {"exists": False, "path": args["path"]}
        return Result(msg=f"{args['path']}: {'exists' if st else 'does not exist'}",
                      data={**facts, "stat": dict(facts)})


def local_sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@register
class Fetch(HostModule):
    """Copies a file from the host into a controller directory (dest/<host>/<path>, or flat).

    Changed: when the local copy was created or differed.
    Check mode: writes nothing locally; reports whether it would.
    Example:
        - name: keep the engine's log with the incident
          fetch:
            src: "{{ titan_home }}/logs/execution.log"
            dest: evidence/
    """

    name = "fetch"
    what = "src"
    args = {"src": Arg(str, required=True), "dest": Arg(str, required=True),
            "flat": Arg(bool, default=False), "fail_on_missing": Arg(bool, default=True)}

    @staticmethod
    def local_path(ctx: TaskContext, src: str, dest: str, flat: bool) -> Path:
        base = Path(dest) if os.path.isabs(dest) else Path(ctx.playbook_dir, dest)
        if flat:
            return base / posixpath.basename(src) if dest.endswith("/") or base.is_dir() else base
        relative = posixpath.normpath("/" + src).lstrip("/")  # no way out of base with ../
        return base / ctx.host / relative

    def apply(self, ctx: TaskContext, args: dict) -> Result:
        src = args["src"]
        local = self.local_path(ctx, src, args["dest"], bool(args["flat"]))
        st = remote_stat(ctx, src, checksum=True)
        data = {"src": src, "dest": str(local)}
        if st is None:
            if args["fail_on_missing"]:
                return Result(failed=True, msg=f"{src} does not exist on {ctx.host}", data=data)
            return Result(msg=f"{src} does not exist on {ctx.host}; nothing fetched", data=data)
        if not st.isreg:
            return Result(failed=True, msg=f"{src} is not a regular file ({st.kind})", data=data)
        if st.sha256 is None:
            return Result(failed=True, msg=f"{src} is not readable on {ctx.host}", data=data)
        data.update(remote_checksum=st.sha256, size=st.size)
        if local.is_dir():
            return Result(failed=True, msg=f"local {local} is a directory", data=data)
        if local_sha256(local) == st.sha256:
            return Result(msg=f"{local} is up to date", data={**data, "checksum": st.sha256})
        verb = "updated" if local.exists() else "created"
        if ctx.check:
            return Result(changed=True, msg=f"{local} would be {verb}", data=data)
        data["checksum"] = self.download(ctx, src, local, st.mode)
        note = "" if data["checksum"] == st.sha256 else " (it changed during the transfer)"
        return Result(changed=True, msg=f"{local} {verb} from {ctx.host}:{src}{note}", data=data)

    @staticmethod
    def download(ctx: TaskContext, src: str, local: Path, remote_mode: int) -> str:
        """SFTP src to a temporary file beside local, then rename; returns the copy's sha256."""
        assert ctx.conn is not None
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=".part")
        os.close(fd)
        try:
            ctx.conn.fabric.sftp().get(src, tmp)
            os.chmod(tmp, remote_mode & 0o644 | 0o600)
            digest = local_sha256(Path(tmp)) or ""
            os.replace(tmp, local)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest
