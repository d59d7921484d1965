"""Benchmark how long sealing one live-rate hour delays the event loop of the SQL stores' writer.

Sealing an hour ranks and encodes its users and pages and builds their top-list indexes, in
the store's thread, once an hour. The thread holds the GIL while it computes: Python hands it
back every 5 ms, except during a long C call (a sort or an encoding of ~160,000 pages). This
runs that seal on a worker thread, as the store does, while a task on the loop sleeps 1 ms
again and again, and prints the seal's CPU and how late the task woke up (the delay an API
request would see), for the two ways the writer has sealed an hour, back to back:

- `read back`: the way before the writer kept sums: decode the twelve 5-minute buckets' blobs,
  sum them, rank with `sorted` (`Acc.structs`) and build the indexes;
- `from memory`: the writer's way now (`window_sums`, `window_rank`): live commits summed the
  hour as its 5-minute buckets closed, so the seal ranks it (a bucket sort) and builds the
  indexes, with the cycle collector paused as the writer pauses it.

    python benchmarks/window_seal_stall.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import msgspec

from wikipulse.dedup import RecentIds
from wikipulse.generate import GeneratorOptions, write_file
from wikipulse.stats import Aggregator
from wikipulse.stores.window_held import sealed_rows
from wikipulse.stores.window_sums import no_cycle_collection
from wikipulse.stores.window_tables import INDEX_DIMS, TAIL_DIMS
from wikipulse.window_blobs import DIMS, Acc, Part, decode_part
from wikipulse.window_index import index_blobs
from wikipulse.window_minutes import minute_accs

_encode = msgspec.msgpack.Encoder().encode


def five_minute_blobs(lines: list[bytes]) -> list[list[tuple[str, bytes]]]:
    """The first hour's twelve 5-minute buckets as the table holds them."""
    aggregator = Aggregator(RecentIds(len(lines) + 1), windows=True)
    for index, line in enumerate(lines):
        aggregator.add_raw(line, str(index))
    fives: dict[int, Acc] = {}
    for minute, acc in minute_accs(aggregator.take().windows).items():
        fives.setdefault(minute - minute % 300, Acc()).add(acc)
    return [acc.blobs() for _, acc in sorted(fives.items())[:12]]


def read_back(blobs: list[list[tuple[str, bytes]]]) -> int:
    """The seal before the sums: decode and sum the buckets, rank with `sorted`, index."""
    structs = summed_hour(blobs).structs()
    rows = [_encode(value) for value in structs]
    _, _, users, pages = structs
    for keys, n in ((users.names, users.n), (pages.keys, pages.n)):
        index = index_blobs(keys, n)
        if index is not None:
            rows += index
    assert len(rows) == len(DIMS) + len(INDEX_DIMS) + len(TAIL_DIMS)
    return sum(map(len, rows))


def from_memory(hour: Acc) -> int:
    """The seal now: the hour summed already, ranked, encoded and indexed by the writer."""
    with no_cycle_collection():
        return sum(len(row[3]) for row in sealed_rows(0, hour))


def summed_hour(blobs: list[list[tuple[str, bytes]]]) -> Acc:
    """The hour as the writer's sums hold it when it closes (summed outside the timing)."""
    hour = Acc()
    for bucket in blobs:
        for dim, data in bucket:
            part = Part()
            decode_part(part, dim, data)
            hour.add_part(part)
    return hour


async def probe(name: str, seal: Callable[[], int]) -> tuple[float, float]:
    """Seal on a thread while a loop task measures its lateness; print and return the CPU
    seconds and the worst lateness."""
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
    size = await asyncio.get_running_loop().run_in_executor(None, seal)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    done.set()
    await task
    late.sort()
    print(
        f"{name:12} {size / 1e6:.1f} MB of rows, wall {wall * 1000:.0f} ms,"
        f" CPU {cpu * 1000:.0f} ms;"
        f" loop task late by max {late[-1] * 1000:.1f} ms, median {late[len(late) // 2] * 1000:.1f}"
        f" ms over {len(late)} wake-ups",
        flush=True,
    )
    return cpu, late[-1]


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
    found: dict[str, list[tuple[float, float]]] = {"read back": [], "from memory": []}
    for _ in range(args.runs):
        found["read back"].append(asyncio.run(probe("read back", lambda: read_back(blobs))))
        seal_hour = partial(from_memory, summed_hour(blobs))
        found["from memory"].append(asyncio.run(probe("from memory", seal_hour)))
    print(f"\nload average {os.getloadavg()[0]:.1f}; best / worst of {args.runs} runs")
    for name, runs in found.items():
        cpus, lates = sorted(c for c, _ in runs), sorted(late for _, late in runs)
        print(
            f"{name:12} seal CPU {cpus[0] * 1000:5.0f} / {cpus[-1] * 1000:5.0f} ms,"
            f" loop late by at most {lates[0] * 1000:5.1f} / {lates[-1] * 1000:5.1f} ms"
        )


if __name__ == "__main__":
    main()
