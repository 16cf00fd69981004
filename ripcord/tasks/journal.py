"""`journal.show` and `journal.verify`: the record of every run, read back and checked.

verify names the first record that was edited, inserted or deleted and exits 1; given the head a
run's --json printed (`--head SEQ:HASH`), it also finds the last records deleted, as it does with
the heads every incident's folder keeps (ripcord.incident), which a truncation cannot rewrite.
"""

from __future__ import annotations

import time

from invoke import Collection, Exit

from ripcord.cli import emit_json, run_task
from ripcord.errors import EXIT_FAILED, InputError
from ripcord.tasks.options import task


def _since(value: str) -> float:
    """--since: seconds since the epoch, an ISO date/time (UTC), or an age such as 30m, 2h, 7d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
            return time.time() - float(value[:-1]) * units[value[-1]]
        if value.replace(".", "", 1).isdigit():
            return float(value)
        from datetime import UTC, datetime

        moment = datetime.fromisoformat(value)
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    except ValueError:
        raise InputError(f"--since {value!r}: give an age (30m, 2h, 7d), an ISO time or epoch "
                         "seconds") from None


@task(help={"since": "only records since then: an age (30m, 2h, 7d), an ISO time, epoch seconds",
            "incident": "only records of this incident", "json": "the records as one JSON object",
            "debug": "show tracebacks"})
def show(c, since=None, incident=None, json_=False, debug=False):
    """The journal's records, oldest first: when, who, what, and how it ended."""
    from rich.markup import escape

    from ripcord.journal import Journal
    from ripcord.postmortem import describe
    from ripcord.report import inert

    def body(out):
        start = _since(since) if since else None
        records = [r for r in Journal().records()
                   if (start is None or r.get("ts", 0) >= start)
                   and (incident is None or r.get("incident") == incident)]
        if json_:
            emit_json({"ok": True, "task": "journal.show", "records": records})
            return
        for r in records:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.get("ts", 0)))
            what, result = describe(r)
            out.print(escape(inert(f"{r.get('seq', '?'):>5} {when}Z {r.get('operator', '?'):<10} "
                                   f"{r.get('kind', '?'):<8} {what} -> {result}"
                                   + (f"  ({r['incident']})" if r.get("incident") else ""))),
                      highlight=False)
        out.print(f"{len(records)} record(s)")

    run_task(body, json_mode=json_, debug=debug)


@task(help={"head": "the chain's head a run printed (--json journal_head), as SEQ:HASH",
            "json": "one JSON object", "debug": "show tracebacks"})
def verify(c, head=None, json_=False, debug=False):
    """Check the journal's hash chain: exit 1 naming the first record edited, inserted or deleted
    (the last records too, against --head and the heads the incidents' folders keep)."""
    from ripcord.incident import kept_heads
    from ripcord.journal import Journal

    def body(out):
        expected = None
        if head:
            seq, _, digest = head.partition(":")
            if not seq.isdigit() or len(digest) != 64:
                raise InputError(f"--head {head!r}: expected SEQ:HASH (the journal_head of a run)")
            expected = {"seq": int(seq), "hash": digest}
        journal = Journal()
        heads = [expected] if expected else []
        heads += kept_heads(journal.path)
        problems: list[str] = []
        for one in heads or [None]:
            kept = f" (the head incident {one['incident']} kept)" if one and "incident" in one else ""
            for problem in journal.verify(one):
                problem += kept if "head" in problem else ""
                if problem not in problems:
                    problems.append(problem)
        if json_:
            emit_json({"ok": not problems, "task": "journal.verify", "journal": str(journal.path),
                       "heads": len(heads), "problems": problems})
        elif problems:
            for problem in problems:
                out.print(f"[bold red]broken:[/] {problem}", highlight=False, soft_wrap=True)
        else:
            out.print(f"{journal.path}: the chain is intact ({len(journal.records())} records; "
                      f"{len(heads)} kept head(s) reached)")
        if problems:
            raise Exit(code=EXIT_FAILED)

    run_task(body, json_mode=json_, debug=debug)


collection = Collection("journal", show, verify)
