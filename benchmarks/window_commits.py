"""Benchmark what a commit costs the SQLite store's writer thread at the live rate and in catch-up.

The writer thread holds the GIL while it folds a batch's windows into the table, so its CPU
time per commit is how long the event loop (the API's requests) can stall behind a commit.
Live: `--rate` events/s of event time (58, the live feed's) committed every 0.5 s of it
(`--batch` events), over `--minutes`; the figure that matters is a commit late in a minute, when
the open minute already holds thousands of events. Catch-up: the same file in batches of
`--catchup` events. CPU is measured in the writer thread itself (`time.thread_time`).

    python benchmarks/window_commits.py
    PYTHONPATH=/path/to/other/checkout/src python benchmarks/window_commits.py   # A/B
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from wikipulse.generate import GeneratorOptions, write_file
from wikipulse.ingest import Pipeline
from wikipulse.stores.sqlite import SQLiteStore

#: Issue #9's /stats p99 target is 10 ms: a typical live commit (p90, second half of the run:
#: neither a compaction, once a minute, nor a seal) should hold the GIL far less than that.
TARGET_MS = 2.0


class TimedStore(SQLiteStore):
    """SQLite store recording the writer thread's CPU seconds and events of each commit."""

    cpu: list[tuple[float, int]]

    def _transact(self, conn: Any, batch: Any) -> None:
        started = time.thread_time()
        super()._transact(conn, batch)
        self.cpu.append((time.thread_time() - started, batch.total))


async def run(lines: list[bytes], db: Path, batch: int) -> list[tuple[float, int]]:
    """Feed the lines in batches of `batch` events; return (CPU s, events) per commit."""
    store = TimedStore(db, dedup_window=100_000)
    store.cpu = []
    await store.open()
    try:
        pipeline = Pipeline(store, max_events=batch, max_ms=10**9, dedup_window=100_000)
        for index, line in enumerate(lines):
            await pipeline.add(line, str(index))
        await pipeline.flush()
    finally:
        await store.close()
    return store.cpu


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0-1) of values, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    """Generate the events, run both phases, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=58.0)
    parser.add_argument("--batch", type=int, default=29)
    parser.add_argument("--catchup", type=int, default=50_000)
    parser.add_argument("--catchup-minutes", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        live = scratch / "live.ndjson"
        count = int(args.minutes * 60 * args.rate)
        write_file(GeneratorOptions(count, seed=3, rate=args.rate, page_skew=4), live)
        lines = live.read_bytes().splitlines()
        cpu = asyncio.run(run(lines, scratch / "live.db", args.batch))
        ms = [c * 1000 for c, _ in cpu]
        late = ms[len(ms) // 2 :]
        print(f"live: {count:,} events at {args.rate:g}/s, {len(ms)} commits of {args.batch}")
        print(
            f"  writer CPU per commit, ms: mean {statistics.mean(ms):.2f}  p50 {pct(ms, 0.5):.2f}"
            f"  p90 {pct(ms, 0.9):.2f}  p99 {pct(ms, 0.99):.2f}  max {max(ms):.1f}"
        )
        worst = sorted(range(len(ms)), key=ms.__getitem__)[-3:]
        print("  slowest commits (index: ms):", ", ".join(f"{i}: {ms[i]:.0f}" for i in worst))
        p90, p99 = pct(late, 0.9), pct(late, 0.99)
        verdict = "MET" if p90 <= TARGET_MS else "NOT MET"
        print(
            f"  second half p90 {p90:.2f} ms (target <= {TARGET_MS:g} ms): {verdict};"
            f" p99 {p99:.2f} ms (compactions and seals)"
        )
        catch = scratch / "catchup.ndjson"
        count = int(args.catchup_minutes * 60 * args.rate)
        write_file(GeneratorOptions(count, seed=4, rate=args.rate, page_skew=4), catch)
        lines = catch.read_bytes().splitlines()
        started = time.process_time()
        cpu = asyncio.run(run(lines, scratch / "catchup.db", args.catchup))
        total = sum(c for c, _ in cpu)
        print(f"catch-up: {count:,} events in {len(cpu)} commits of up to {args.catchup:,}")
        print(
            f"  writer CPU {total:.2f} s ({count / total:,.0f} events per writer CPU-second),"
            f" max per commit {max(c for c, _ in cpu) * 1000:.0f} ms;"
            f" process CPU {time.process_time() - started:.2f} s"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
