"""Benchmark how long sealing one live-rate hour delays the event loop of the SQL stores' writer.

Sealing an hour merges its twelve 5-minute buckets, sorts and encodes its users and pages and
builds their top-list indexes, in the store's thread, once an hour. The thread holds the GIL
while it computes: Python hands it back every 5 ms, except during a long C call (a sort or an
encoding of ~160,000 pages). This runs that seal on a worker thread, as the store does, while a
task on the loop sleeps 1 ms again and again, and prints the seal's CPU and how late the task
woke up (the delay an API request would see).

    python benchmarks/window_seal_stall.py
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from wikipulse.generate import GeneratorOptions, write_file
from wikipulse.stats import Aggregator, RecentIds
from wikipulse.stores.window_writer import _sealed_rows
from wikipulse.window_blobs import Acc, Part, decode_part, minute_accs


def five_minute_blobs(lines: list[bytes]) -> list[list[tuple[str, bytes]]]:
    """The first hour's twelve 5-minute buckets as the table holds them."""
    aggregator = Aggregator(RecentIds(len(lines) + 1), windows=True)
    for index, line in enumerate(lines):
        aggregator.add_raw(line, str(index))
    fives: dict[int, Acc] = {}
    for minute, acc in minute_accs(aggregator.take().windows).items():
        fives.setdefault(minute - minute % 300, Acc()).add(acc)
    return [acc.blobs() for _, acc in sorted(fives.items())[:12]]


def seal(blobs: list[list[tuple[str, bytes]]]) -> int:
    """Roll the buckets up into the hour's rows, as `window_writer` seals it; return bytes."""
    hour = Acc()
    for bucket in blobs:
        for dim, data in bucket:
            part = Part()
            decode_part(part, dim, data)
            hour.add_part(part)
    return sum(len(row[3]) for row in _sealed_rows(0, hour))


async def probe(blobs: list[list[tuple[str, bytes]]]) -> None:
    """Seal on a thread while a loop task measures its lateness; print the figures."""
    late: list[float] = []
    done = asyncio.Event()

    async def sleeper() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            late.append(time.perf_counter() - started - 0.001)

    task = asyncio.create_task(sleeper())
    await asyncio.sleep(0.1)
    late.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    size = await asyncio.get_running_loop().run_in_executor(None, seal, blobs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    done.set()
    await task
    late.sort()
    print(
        f"hour seal: {size / 1e6:.1f} MB of rows, wall {wall * 1000:.0f} ms,"
        f" CPU {cpu * 1000:.0f} ms;"
        f" loop task late by max {late[-1] * 1000:.1f} ms, median {late[len(late) // 2] * 1000:.1f}"
        f" ms over {len(late)} wake-ups"
    )


def main() -> None:
    """Generate an hour at `--rate` events/s, then probe `--runs` seals."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=58.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hour.ndjson"
        write_file(GeneratorOptions(int(args.rate * 3600 * 1.02), seed=3, rate=args.rate), path)
        blobs = five_minute_blobs(path.read_bytes().splitlines())
    for _ in range(args.runs):
        asyncio.run(probe(blobs))


if __name__ == "__main__":
    main()
