"""Journal appends: the same time on a journal of 100,000 records as on an empty one.

An append reads only the end of the file (the last record, for its hash and number), so its cost
must not grow with the journal. This times N appends (fsync included, as every run pays) to an
empty journal and to one of 100,000 records, and reports the medians and their ratio. No fleet
needed; a few seconds: `python bench/journal.py` (--records, --appends to change the sizes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ripcord.journal import Journal, _tail  # noqa: E402

RECORD = {"kind": "play", "playbook": "halt.yml", "pattern": "all", "exit_code": 0,
          "hosts": {f"exec-{i}": {"ok": 4, "changed": 1} for i in range(8)}}


def grown(path: Path, records: int) -> Journal:
    """A real chain of `records` short records, written fast (as append() would have made them,
    without an fsync each)."""
    from ripcord.journal import _digest

    with open(path, "w") as handle:
        prev = "0" * 64
        for seq in range(1, records + 1):
            body = {"id": f"{seq:012x}", "ts": 0.0, "kind": "run", "seq": seq, "prev": prev}
            prev = _digest(prev, body)
            handle.write(json.dumps({**body, "hash": prev}, sort_keys=True) + "\n")
    return Journal(path)


def tail_us(journal: Journal) -> float:
    """What an append reads: the end of the file, back to the last record."""
    with open(journal.path, "rb") as handle:
        start = time.perf_counter()
        _tail(handle)
        return (time.perf_counter() - start) * 1e6


def append_ms(journal: Journal) -> float:
    start = time.perf_counter()
    journal.append(RECORD)
    return (time.perf_counter() - start) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--appends", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        empty = Journal(Path(tmp) / "empty.jsonl")
        large = grown(Path(tmp) / "large.jsonl", args.records)
        size_mb = large.path.stat().st_size / 1e6
        times: dict[str, list[float]] = {"empty": [], "large": []}
        for n in range(args.appends + 5):  # interleaved, so the machine's noise falls on both
            for name, journal in (("empty", empty), ("large", large)):
                if n >= 5:  # the first five warm up
                    times[name].append(append_ms(journal))
                else:
                    append_ms(journal)
        reads = {name: statistics.median(tail_us(j) for _ in range(1000))
                 for name, j in (("empty", empty), ("large", large))}
        assert large.head["seq"] == args.records + args.appends + 5, "appends chained to the end"
    empty_ms, large_ms = (statistics.median(times[k]) for k in ("empty", "large"))
    print(f"append to a new journal:  {empty_ms:.3f} ms (median of {args.appends}, fsync included)")
    print(f"append to {args.records:,} records ({size_mb:.0f} MB): {large_ms:.3f} ms")
    print(f"ratio: {large_ms / empty_ms:.2f}")
    print(f"reading the end (what an append reads): {reads['empty']:.0f} us on the new journal, "
          f"{reads['large']:.0f} us on the large one")
    return 0 if large_ms / empty_ms < 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
