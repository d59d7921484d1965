"""Writing a batch's time windows into the SQL stores' table of parts, free of any driver.

A commit used to read the open minute's blobs, merge the batch in and write them back sorted:
its cost grew with the minute (thousands of users and pages at the live rate), not with the
batch, and it ran holding the GIL, stalling the event loop every commit. Now a commit appends
each bucket it touches as a new *part* (its own small sorted blobs), so it costs what the batch
holds; readers merge a bucket's parts (`window_tables.fetch`). A minute is compacted into one
part once event time has moved `GRACE` past it (once per minute, the price the old way paid
every commit), and any bucket reaching `MAX_PARTS` parts (late events for a closed bucket) is
compacted then, so readers never merge more than that many parts of a closed bucket.

Compacting a minute and sealing a 5-minute or hour bucket encode the running sums the writer
keeps of its open buckets (`window_sums`), not parts read back; only buckets the sums do not
hold (open ones left by a crash or an older version, below the sums after a rebuild, and sealed
ones that were empty until a late event) are still rolled up by reading back (`_seal`).

Everything is written in the caller's transaction, with the counters and the position, so a
crash between two part writes, or between the parts and a compaction, leaves whole commits only.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet

from wikipulse.stores import window_sums
from wikipulse.stores.window_held import (
    Held,
    Pending,
    batch_minutes,
    blob_rows,
    events,
    merged,
    seal_later,
    seal_now,
    sealed_rows,
)
from wikipulse.stores.window_sums import Sums
from wikipulse.stores.window_tables import (
    FINER,
    GRACE,
    Closed,
    Drop,
    PartRow,
    Parts,
    Put,
    Steps,
    WriterState,
    fetch,
    fetch_parts,
)
from wikipulse.window_blobs import DIMS, Acc, Part, decode_part
from wikipulse.window_delta import WindowDelta
from wikipulse.windows import HOUR, MINUTE

__all__ = ["EAGER_EVENTS", "MAX_PARTS", "compact", "flush", "write"]

#: A bucket holding this many parts is compacted at the next write that touches it.
MAX_PARTS = 48
#: A batch with fewer events is live: the writer sums its open buckets as it goes.
EAGER_EVENTS = 5000
_COARSE = (5 * MINUTE, HOUR)


def compact(g: int, bucket: int, held: Held | None = None) -> Steps[None]:
    """Replace the parts of a bucket by one (part 0) holding their sum: `held` when the writer
    holds it (`window_sums`), else read back from the parts."""
    if held is None:
        acc = Acc()
        for _, dim, data in (yield from fetch_parts(g, DIMS, buckets=(bucket,))):
            piece = Part()
            decode_part(piece, dim, data)
            acc.add_part(piece)
        held = acc
    yield Drop(g, (bucket,))
    if g == MINUTE:
        yield Put(g, [(bucket, 0, dim, data) for dim, data in blob_rows(held)])
    else:
        yield Put(g, sealed_rows(bucket, held))


def _append(
    g: int, items: dict[int, list[Held]], only_stored: bool
) -> Steps[tuple[set[int], list[int]]]:
    """Write each bucket's share of the batch as a new part (to every bucket, or only to those
    already stored); return the stored buckets and those that reached `MAX_PARTS` parts."""
    stored: dict[int, tuple[int, int]] = yield Parts(g, buckets=tuple(sorted(items)))
    puts: list[PartRow] = []
    full: list[int] = []
    for bucket, parts in items.items():
        have = stored.get(bucket)
        if have is None and only_stored:
            continue
        part = 0 if have is None else have[0] + 1
        rows = blob_rows(merged(parts, keep=True))
        puts += [(bucket, part, dim, data) for dim, data in rows]
        if have is None:
            continue
        if have[1] + 1 >= MAX_PARTS:
            full.append(bucket)
    if puts:
        yield Put(g, puts)
    return set(stored), full


def _seal(g: int, bucket: int) -> Steps[None]:
    """Roll a closed bucket up from the finer level, read back, and write it as one part."""
    acc = Acc()
    finer = yield from fetch(FINER[g], DIMS, bucket, bucket + g, DIMS)
    for parts in finer.values():
        for part in parts:
            acc.add_part(part)
    if acc.types:
        yield Put(g, sealed_rows(bucket, acc))


def _compact_minutes(sums: Sums, lo: int, hi: int, full: list[int]) -> Steps[None]:
    """Compact the minutes in [lo, hi) that hold several parts and those that reached
    `MAX_PARTS`, from memory where held; add the closed held ones to their 5-minute bucket."""
    found: dict[int, tuple[int, int]] = (yield Parts(MINUTE, lo, hi)) if hi > lo else {}
    held = sums.accs[MINUTE]
    several = {bucket for bucket, (_, count) in found.items() if count > 1}
    for minute in sorted(several | set(full)):
        items = held.get(minute)
        item = None
        if items is not None:
            item = merged(items)
            items[:] = [item]
        yield from compact(MINUTE, minute, item)
    for minute in sorted(bucket for bucket in held if bucket < hi):
        window_sums.lift(sums, MINUTE, minute, merged(held.pop(minute)))


def _seal_level(
    g: int,
    sums: Sums,
    lo: int,
    hi: int,
    late: set[int],
    stored: set[int],
    later: list[Pending] | None,
) -> Steps[None]:
    """Seal the buckets of `g` that closed: the held ones from memory (then added to their
    parent), on the sealing thread where it can if given `later` (added to it, to be written
    by a later write); those the memory does not hold (open ones left below it after a rebuild, and
    sealed ones that were empty until the `late` events of this batch) read back."""
    below = min(hi, sums.since[g])
    closed: set[int] = set((yield Closed(g, lo, below))) if below > lo else set()
    closed |= {bucket for bucket in late if bucket < below}
    for bucket in sorted(closed - stored):  # a stored one got the batch as a part
        yield from _seal(g, bucket)
    held = sums.accs[g]
    for bucket in sorted(b for b in held if b < hi):
        items = held.pop(bucket)
        pending = None if later is None else seal_later(g, bucket, items)
        if later is not None and pending is not None:
            later.append(pending)
            window_sums.lift(sums, g, bucket, pending)
            continue
        item, rows = seal_now(bucket, items)
        if rows:
            yield Put(g, rows)
        window_sums.lift(sums, g, bucket, item)


def flush(
    pending: list[Pending], wait: bool = True, must: AbstractSet[tuple[int, int]] = frozenset()
) -> Steps[list[Pending]]:
    """Write the sealed rows of buckets made on the sealing thread, in the order they were
    asked for; with `wait`, all of them, else those made already, and at least up to the last
    one named in `must`. Return those left."""
    last_needed = max((i for i, p in enumerate(pending) if (p.g, p.bucket) in must), default=-1)
    for i, sealing in enumerate(pending):
        if not (wait or i <= last_needed or sealing.future.done()):
            return pending[i:]
        _, rows = sealing.result()
        if rows:
            yield Put(sealing.g, rows)
    return []


def write(
    delta: WindowDelta,
    state: WriterState,
    last: str | None = None,
    token: str | None = None,
    defer: bool = False,
) -> Steps[WriterState]:
    """Write a batch's windows; return the writer state to keep once the commit succeeded.

    `last` is the token of the last commit to the table, read in this transaction, and `token`
    this commit's: the state's running sums are used only if they were made by `last`, and are
    changed in place, so `state` loses them (a failed commit leaves a state to rebuild).

    With `defer`, buckets that close are summed and sealed on the sealing thread while the
    writer goes on (`window_held.seal_later`), and written by this or a later write once made,
    in order (before any late event is added to one as a part); the store writes those left
    when it closes (`flush`). Until a bucket is written, readers sum it from its finer
    buckets, as they do for any bucket not sealed yet; a crash loses only that speed, and the
    next write after a restart seals it by reading back, as it seals any such bucket.
    """
    sums = state.sums if state.token == last else None
    state.sums = None
    pending = state.pending if sums is not None else []  # a rebuild reads them back instead
    minutes = batch_minutes(delta)
    if not minutes:
        return WriterState(state.newest, state.sealed, sums, token, pending)
    if sums is None:
        state = yield from window_sums.rebuild()
        assert state.sums is not None
        sums = state.sums
    newest = max(minutes) if state.newest is None else max(state.newest, max(minutes))
    edge = newest - GRACE
    sealed = dict(state.sealed)
    # every part first (a batch's accs are taken over by the sums below)
    _, full = yield from _append(
        MINUTE, {minute: [item] for minute, item in minutes.items()}, False
    )
    touched: dict[int, dict[int, list[Held]]] = {g: {} for g in _COARSE}
    for g in _COARSE:
        for minute, item in minutes.items():
            touched[g].setdefault(minute - minute % g, []).append(item)
    # sealed buckets made meanwhile, and any a late event of this batch falls in: written
    # before it is added to them as a part
    must = {(g, bucket) for g in _COARSE for bucket in touched[g]}
    later = yield from flush(pending, wait=not defer, must=must)
    stored: dict[int, set[int]] = {}
    for g in _COARSE:
        # a late event: its sealed bucket gets it too, as a part
        stored[g], full_coarse = yield from _append(g, touched[g], only_stored=True)
        for bucket in sorted(full_coarse):
            yield from compact(g, bucket)
    for minute, item in minutes.items():
        window_sums.remember(sums, minute, item)
    hi = edge - edge % MINUTE  # minutes before it ended GRACE before the newest minute
    lo = sealed.get(MINUTE, 0)
    yield from _compact_minutes(sums, lo, hi, full)
    sealed[MINUTE] = max(lo, hi)
    for g in _COARSE:
        hi = edge - edge % g  # buckets before it ended GRACE before the newest minute
        lo = sealed.get(g, 0)
        yield from _seal_level(
            g, sums, lo, hi, set(touched[g]), stored[g], later if defer else None
        )
        sealed[g] = max(lo, hi)
    for g, done in sealed.items():
        sums.since[g] = max(sums.since[g], done)
    if sum(map(events, minutes.values())) < EAGER_EVENTS:
        _sum_held(sums)
    return WriterState(newest, sealed, sums, token, later)


def _sum_held(sums: Sums) -> None:
    """Sum the open 5-minute buckets and hours now rather than when they close: a live commit
    adds each closed minute (or 5-minute bucket) to its parent as it comes, so the commit that
    seals an hour only sorts and encodes it. A catch-up (big batches) leaves them listed: an
    hour it never finishes is never summed. Buckets held as blobs are left listed too: they
    are summed in C when they close, without the GIL (see `window_held`)."""
    for g in _COARSE:
        for items in sums.accs[g].values():
            if len(items) > 1 and all(isinstance(item, Acc) for item in items):
                items[:] = [merged(items)]
