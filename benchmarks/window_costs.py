"""Where the time windows' work goes in a replay into a SQL store: each stage timed on one core.

A replay into SQLite takes several times as long as it did before the time windows existed
(issue #10 asks for at most 1.5x). This script times, in one process and one thread, each
stage of the windows' work that a replay of the same events does (the replay runs the first
two in its worker processes, the rest in the store's one writer thread), next to the work
the replay did before the windows: decoding and counting. The cycle collector is paused, as
the store's writer pauses it.

    python benchmarks/window_costs.py                 # 500,000 generated events, best of 3
    python benchmarks/window_costs.py --events 200000 --runs 1
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

from datafiles import generated
from wikipulse.dedup import RecentIds
from wikipulse.replay.bulk import BLOCK_LINES, fold_block
from wikipulse.stats import Aggregator
from wikipulse.stores import window_rank
from wikipulse.stores.window_held import acc_of, merged
from wikipulse.window_blobs import Acc
from wikipulse.window_delta import WindowDelta
from wikipulse.window_index import index_blobs
from wikipulse.window_minutes import minute_accs
from wikipulse.windows import HOUR

FIVE_MINUTES = 300
_encode = msgspec.msgpack.Encoder().encode  # as the writer encodes a bucket's blobs


def _fold(lines: list[bytes], windows: bool) -> Aggregator:
    agg = Aggregator(RecentIds(1), windows=windows)
    for start in range(0, len(lines), BLOCK_LINES):
        fold_block(agg, lines[start : start + BLOCK_LINES])
    return agg


def _coarse(minutes: dict[int, Acc], g: int) -> dict[int, Acc]:
    """Buckets of `g` seconds summed from finer accs (taken over), as the writer seals them."""
    groups: dict[int, list[Acc]] = {}
    for bucket, acc in minutes.items():
        groups.setdefault(bucket - bucket % g, []).append(acc)
    return {bucket: acc_of(merged(list(accs))) for bucket, accs in groups.items()}


def _seal(accs: dict[int, Acc]) -> tuple[float, float]:
    """Seconds to rank and encode the buckets, and to build their top-list indexes."""
    started = time.perf_counter()
    structs = [window_rank.structs(acc) for acc in accs.values()]
    for values in structs:
        list(map(_encode, values))
    encoded = time.perf_counter()
    for _, _, users, pages in structs:
        index_blobs(users.names, users.n)
        index_blobs(pages.keys, pages.n)
    return encoded - started, time.perf_counter() - encoded


def _stages(lines: list[bytes]) -> dict[str, float]:
    """One run of every stage: name -> seconds."""
    out: dict[str, float] = {}

    def timed(name: str, work: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = work()
        out[name] = time.perf_counter() - started
        return result

    timed("decode and count (no windows)", lambda: _fold(lines, windows=False))
    agg = timed("decode, count, record window rows", lambda: _fold(lines, windows=True))
    delta: WindowDelta = agg.batch.windows
    timed("pack the rows (worker)", delta.pack)
    minutes = timed("unpack them into minutes (writer)", lambda: minute_accs(delta))
    timed("encode minute parts (writer)", lambda: [window_rank.blobs(a) for a in minutes.values()])
    fives = timed("sum 5-minute buckets (writer)", lambda: _coarse(minutes, FIVE_MINUTES))
    out["rank and encode 5-minute buckets"], out["index 5-minute buckets"] = _seal(fives)
    hours = timed("sum hours from them (writer)", lambda: _coarse(fives, HOUR))
    out["rank and encode hours"], out["index hours"] = _seal(hours)
    return out


def main() -> None:
    """Time each stage `--runs` times and print the best of each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    lines = generated(args.events, args.seed).read_bytes().splitlines()
    best: dict[str, float] = {}
    gc.disable()
    for _ in range(args.runs):
        for name, seconds in _stages(lines).items():
            best[name] = min(best.get(name, seconds), seconds)
        gc.collect()
    print(
        f"{len(lines):,} events, best of {args.runs} runs, one thread,"
        f" Python {sys.version.split()[0]}"
    )
    for name, seconds in best.items():
        print(f"{name:40} {seconds:7.2f} s")
    before = best["decode and count (no windows)"]
    windows = (
        sum(seconds for name, seconds in best.items() if "(no windows)" not in name)
        - (best["decode, count, record window rows"])
    )
    recorded = best["decode, count, record window rows"] - before
    writer = windows - best["pack the rows (worker)"]
    print(
        f"the windows add {windows + recorded:.2f} s to the {before:.2f} s of decoding and"
        f" counting ({(windows + recorded) / before:.1f}x); {writer:.2f} s of it runs in the"
        " store's one writer thread"
    )


if __name__ == "__main__":
    main()
