"""The journal's chain: numbered records, a head that finds deleted last records, and appends
that read only the end of the file."""

from __future__ import annotations

import json

from ripcord import journal as journal_module
from ripcord.journal import Journal


def test_records_are_numbered_and_the_head_is_the_last(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    for n in range(3):
        journal.append({"kind": "run", "n": n})
    records = journal.records()
    assert [r["seq"] for r in records] == [1, 2, 3]
    from ripcord import __version__
    assert {(r["ripcord_version"], bool(r["controller"])) for r in records} == {(__version__, True)}
    assert journal.head == {"seq": 3, "hash": records[-1]["hash"]}
    assert journal.verify(journal.head) == []


def test_deleting_the_last_records_is_found_with_the_head(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    for n in range(4):
        journal.append({"kind": "run", "n": n})
    head = journal.head
    lines = journal.path.read_bytes().splitlines(keepends=True)
    journal.path.write_bytes(b"".join(lines[:2]))  # the last two records gone, chain intact
    assert journal.verify() == []  # the chain alone cannot tell
    assert journal.verify(head) == ["the chain ends at seq 2, before the head's seq 4: "
                                    "the last records were deleted"]


def test_a_record_rewritten_at_the_heads_place_is_named(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    journal.append({"kind": "run"})
    head = journal.head
    journal.path.write_bytes(b"")
    journal.append({"kind": "forged"})  # a new chain with a record of the same number
    assert journal.verify(head) == [f"line 1 ({journal.records()[0]['id']}): not the record the "
                                    "head names (seq 1)"]


class _Counting:
    """A file handle that counts the bytes read through it."""

    def __init__(self, handle):
        self.handle, self.read_bytes = handle, 0

    def seek(self, *args):
        return self.handle.seek(*args)

    def read(self, size=-1):
        data = self.handle.read(size)
        self.read_bytes += len(data)
        return data


def test_an_append_reads_only_the_end_of_a_long_journal(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.append({"kind": "first"})
    first = journal.records()[0]
    with open(path, "ab") as handle:  # 100,000 records' worth of lines, then a real last one
        line = (json.dumps({**first, "kind": "filler"}) + "\n").encode()
        handle.write(line * 100_000)
    journal.append({"kind": "last"})
    with open(path, "rb") as raw:
        counting = _Counting(raw)
        last, bad = journal_module._tail(counting)
    assert last["kind"] == "last" and bad == 0
    assert counting.read_bytes <= journal_module.TAIL_BLOCK < path.stat().st_size / 100


# --- `invoke journal.verify`: every kind of tampering named, exit 1 -------------------------------

def _verify_cli(path, *args):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(repo),
                           "journal.verify", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "RIPCORD_JOURNAL": str(path)})


def _five(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    for n in range(5):
        journal.append({"kind": "run", "n": n})
    return journal, journal.path.read_bytes().splitlines(keepends=True)


def test_journal_verify_names_an_edit_an_insert_and_a_deletion(tmp_path):
    journal, lines = _five(tmp_path)
    assert _verify_cli(journal.path).returncode == 0
    edited = lines[2].replace(b'"n": 2', b'"n": 7')
    inserted = lines[1]
    for name, content, needle in (
            ("edit", [*lines[:2], edited, *lines[3:]], "line 3 ("),
            ("insert", [*lines[:2], inserted, *lines[2:]], "line 3 ("),
            ("delete", [*lines[:2], *lines[3:]], "line 3 (")):
        journal.path.write_bytes(b"".join(content))
        result = _verify_cli(journal.path)
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert needle in result.stdout, (name, result.stdout)


def test_journal_verify_finds_the_last_record_deleted_given_the_head(tmp_path):
    journal, lines = _five(tmp_path)
    head = journal.head
    journal.path.write_bytes(b"".join(lines[:-1]))
    assert _verify_cli(journal.path).returncode == 0  # without the head, a truncation is silent
    result = _verify_cli(journal.path, "--head", f"{head['seq']}:{head['hash']}")
    assert result.returncode == 1 and "the last records were deleted" in result.stdout, result.stdout


def _append_many(path: str, writer: int) -> None:
    journal = Journal(path)
    for n in range(40):
        journal.append({"kind": "run", "writer": writer, "n": n})


def test_concurrent_runs_never_interleave_or_fork_the_chain(tmp_path):
    import multiprocessing

    path = str(tmp_path / "j.jsonl")
    workers = [multiprocessing.get_context("fork").Process(target=_append_many, args=(path, w))
               for w in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    journal = Journal(path)
    assert [w.exitcode for w in workers] == [0] * 6
    assert journal.verify() == []
    assert [r["seq"] for r in journal.records()] == list(range(1, 241))


# --- every record: edited, inserted or deleted, named; the last one through a kept head ----------

def _ids(journal):
    return [r["id"] for r in journal.records()]


def test_editing_inserting_or_deleting_any_record_is_named(tmp_path):
    journal, lines = _five(tmp_path)
    head, ids = journal.head, _ids(journal)
    for i in range(5):
        edited = lines[i].replace(f'"n": {i}'.encode(), b'"n": 99')
        cases = {"edit": ([*lines[:i], edited, *lines[i + 1:]], f"line {i + 1} ({ids[i]}): content altered"),
                 "insert": ([*lines[:i], lines[i - 1] if i else lines[1], *lines[i:]],
                            f"line {i + 1} ("),
                 "delete": ([*lines[:i], *lines[i + 1:]],
                            f"line {i + 1} ({ids[i + 1]}): previous record missing or changed" if i < 4
                            else "the chain ends at seq 4, before the head's seq 5: the last records "
                                 "were deleted")}
        for name, (content, needle) in cases.items():
            journal.path.write_bytes(b"".join(content))
            problems = journal.verify(head)
            assert problems and needle in problems[0], (i, name, problems)
    journal.path.write_bytes(b"".join(lines))
    assert journal.verify(head) == []


def test_the_head_an_incident_keeps_finds_the_last_record_deleted(tmp_path, monkeypatch):
    """journal.verify, given no --head, checks the chain reaches the heads incidents kept."""
    from ripcord import incident

    monkeypatch.setenv("RIPCORD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RIPCORD_JOURNAL", str(tmp_path / "j.jsonl"))
    meta = incident.open_incident(2, "a drill", None)
    journal = Journal()
    journal.append({"kind": "run"})
    journal.append({"kind": "run"})
    assert [r.get("incident") for r in journal.records()] == [meta["id"]] * 3
    assert incident.heads(meta["id"])[-1]["seq"] == 3
    assert _verify_cli(journal.path).returncode == 0
    lines = journal.path.read_bytes().splitlines(keepends=True)
    journal.path.write_bytes(b"".join(lines[:-1]))
    result = _verify_cli(journal.path)
    assert result.returncode == 1, result.stdout
    assert "the chain ends at seq 2, before the head's seq 3: the last records were deleted" in result.stdout
    assert meta["id"] in result.stdout
