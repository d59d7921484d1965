"""The SQL stores' writer keeps running sums of its open buckets; rebuilt from the table.

Sealing a 5-minute or hour bucket used to read every part of its finer buckets back, decode
and sum them: at full ingest speed that was a third of the writer's time. The writer sees
every event it writes, so it keeps the sums itself (`Sums`): a batch is added to the finest
open bucket holding it, and a bucket that closes is compacted or sealed from memory and added
to its parent. The table stays the truth: the sums are only trusted while the last commit to
the table is the one that made them (`WriterState.token`), so a store that opens, a commit that
failed or was rolled back, or another writer's commit in between makes the next write rebuild
them here, from what the table holds, inside its own transaction. kill -9 and resume therefore
see exactly what the table says, as before.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from wikipulse.stores.window_held import Held, Holding
from wikipulse.stores.window_tables import (
    FIVE_MINUTES,
    GRACE,
    LEVELS,
    Span,
    Steps,
    WriterState,
    fetch,
    start_state,
)
from wikipulse.window_blobs import DIMS, Acc
from wikipulse.windows import HOUR, MINUTE

__all__ = ["Sums", "lift", "no_cycle_collection", "rebuild", "remember"]


@dataclass(slots=True)
class Sums:
    """The writer's running sums of the buckets it has not compacted or sealed yet, so that it
    compacts and seals them from memory instead of reading their parts back.

    `accs[g][bucket]`, for buckets at or above `since[g]`, holds (as accs to be summed) what
    the bucket holds minus what its finer buckets that are held too hold: an open minute is
    whole; an open 5-minute bucket holds its closed minutes, an open hour its sealed 5-minute
    buckets (and late events that arrived for a closed finer bucket). A bucket that closes is
    summed, written and added to its parent.
    """

    accs: dict[int, dict[int, list[Holding]]]
    since: dict[int, int]


@contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Pause Python's cycle collector while window work runs.

    Summing, sorting and encoding buckets allocates hundreds of thousands of small dicts,
    lists and sets that reference counting frees (no cycles); at the default pace (every 700
    container allocations) the collector ran over and over, each pass walking the heap, and
    took more than half of a batch's counting time (`benchmarks/serve_ingest.py`). The pause
    lasts one read or write of the windows (in PostgreSQL across its round trips: paused step
    by step, the collector ran between the steps over what the read had decoded so far);
    whatever it collects is collected after. A collector that was already off stays off.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


#: Each level's parent level.
_PARENT = {MINUTE: FIVE_MINUTES, FIVE_MINUTES: HOUR}


def _put(held: dict[int, list[Holding]], bucket: int, acc: Holding) -> None:
    """Add `acc` to the held bucket (kept as a list, summed only when the bucket closes: an
    open hour costs nothing until then; a catch-up that ends first never pays for it)."""
    have = held.get(bucket)
    if have is None:
        held[bucket] = [acc]
    else:
        have.append(acc)


def remember(sums: Sums, minute: int, acc: Held) -> None:
    """Add a batch's minute to the finest held bucket that holds it (a late event for a closed
    minute goes to its open 5-minute bucket or hour); nothing if every level has sealed it
    (the writer then appends it to the sealed buckets as parts). `acc` is taken over."""
    for g in LEVELS:
        bucket = minute - minute % g
        if bucket >= sums.since[g]:
            _put(sums.accs[g], bucket, acc)
            return


def lift(sums: Sums, g: int, bucket: int, acc: Holding) -> None:
    """A bucket of `g` was written whole: add it to its parent if that is held (taken over)."""
    parent = _PARENT.get(g)
    if parent is None:
        return
    above = bucket - bucket % parent
    if above >= sums.since[parent]:
        _put(sums.accs[parent], above, acc)


def rebuild() -> Steps[WriterState]:
    """The writer's state as the table holds it, with its running sums.

    The sums hold the buckets that end after the newest minute's edge (minutes, 5-minute
    buckets and hours not closed yet); open buckets below that (left by a crash or by an older
    version) are compacted or sealed by reading them back, by the next write, as before.
    """
    spans: dict[int, tuple[int | None, int | None]] = {}
    for g in LEVELS:
        spans[g] = tuple((yield Span(g)))
    coarse = {g: high for g, (_, high) in spans.items() if g != MINUTE and high is not None}
    state = start_state(spans[MINUTE][1], spans[MINUTE][0], coarse)
    accs: dict[int, dict[int, list[Holding]]] = {g: {} for g in LEVELS}
    if state.newest is None:
        state.sums = Sums(accs, dict.fromkeys(LEVELS, 0))
        return state
    edge = state.newest - GRACE
    since = {g: max(edge - edge % g, state.sealed[g]) for g in LEVELS}
    # coarser held buckets must not start above finer ones (only an odd table has them so)
    since[FIVE_MINUTES] = max(since[FIVE_MINUTES], since[HOUR])
    since[MINUTE] = max(since[MINUTE], since[FIVE_MINUTES])
    sums = Sums(accs, since)
    minutes = yield from fetch(MINUTE, DIMS, since[FIVE_MINUTES], state.newest + MINUTE, DIMS)
    for minute, parts in minutes.items():
        acc = Acc()
        for part in parts:
            acc.add_part(part)
        if minute >= since[MINUTE]:
            accs[MINUTE][minute] = [acc]
        else:
            _put(accs[FIVE_MINUTES], minute - minute % FIVE_MINUTES, acc)
    # sealed 5-minute buckets, or their minutes where not sealed yet
    fives = yield from fetch(FIVE_MINUTES, DIMS, since[HOUR], since[FIVE_MINUTES], DIMS)
    for bucket, parts in fives.items():
        acc = Acc()
        for part in parts:
            acc.add_part(part)
        _put(accs[HOUR], bucket - bucket % HOUR, acc)
    state.sums = sums
    return state
