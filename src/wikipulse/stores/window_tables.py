"""The SQL stores' time-window logic over one table of blobs, free of any database driver.

Both SQL stores keep one row per (granularity `g`, dimension, bucket) holding a blob
(`window_blobs`): minutes (60), 5 minutes (300) and hours (3600). The logic is written once
here as generators that yield requests (`Fetch`, `Put`, `Closed`) and receive their results;
`sqlite_windows` and `postgres_windows` run them against their connection (synchronously or
with await) inside the caller's transaction.

Writing a batch: the minutes it touches are read, merged with it and written back (a few rows
however many events: the cost of a commit no longer grows with its distinct users and pages).
5-minute and hour buckets are *sealed* once event time has moved `GRACE` seconds past their
end: rolled up from the finer level and written once. A late event for a sealed bucket is
merged into it too, so every level stays exact. Until a bucket is sealed, readers build it
from the finer level (`fetch` falls back level by level), so answers never depend on sealing,
only their speed does. Sealing progress is kept by the writer (`WriterState`) and only moves
on once the transaction committed.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from wikipulse.window_blobs import (
    DIMS,
    Acc,
    Part,
    add_row,
    decode_part,
    minute_accs,
)
from wikipulse.window_query import SeriesQuery, SeriesRows, TopItem, TopQuery, split_levels
from wikipulse.window_topn import best, top_items
from wikipulse.windows import HOUR, MINUTE, WindowDelta

__all__ = [
    "FINER",
    "GRACE",
    "LEVELS",
    "Closed",
    "Fetch",
    "Put",
    "Request",
    "Steps",
    "WriterState",
    "fetch",
    "read_series",
    "read_top",
    "start_state",
    "write",
]

_T = TypeVar("_T")
FIVE_MINUTES = 300
#: The granularities kept, finest first, and where each coarse one is rolled up from.
LEVELS = (MINUTE, FIVE_MINUTES, HOUR)
FINER = {FIVE_MINUTES: MINUTE, HOUR: FIVE_MINUTES}
#: A 5-minute or hour bucket is sealed once the newest event time is this far past its end.
GRACE = 120
#: (bucket, dimension, blob) as a store returns and writes them.
Row = tuple[int, str, bytes]


@dataclass(frozen=True, slots=True)
class Fetch:
    """Rows of `dims` at granularity `g`: buckets in [lo, hi), or exactly `buckets` if given."""

    g: int
    dims: tuple[str, ...]
    lo: int = 0
    hi: int = 0
    buckets: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Put:
    """Insert or replace these rows at granularity `g`."""

    g: int
    rows: list[Row]


@dataclass(frozen=True, slots=True)
class Closed:
    """The `g`-aligned buckets holding minute rows in [lo, hi): the result is a set of ints."""

    g: int
    lo: int
    hi: int


Request = Fetch | Put | Closed
Steps = Generator[Request, Any, _T]


@dataclass(slots=True)
class WriterState:
    """The newest minute written and, per coarse level, below which every bucket is sealed."""

    newest: int | None = None
    sealed: dict[int, int] = field(default_factory=dict)


def start_state(newest: int | None, oldest: int | None, coarse_max: dict[int, int]) -> WriterState:
    """The writer's state when a store opens, from what the table holds."""
    sealed = {}
    for g in (FIVE_MINUTES, HOUR):
        if g in coarse_max:
            sealed[g] = coarse_max[g] + g
        else:
            sealed[g] = 0 if oldest is None else oldest - oldest % g
    return WriterState(newest, sealed)


def _parts(rows: list[Row]) -> dict[int, Part]:
    parts: dict[int, Part] = {}
    for bucket, dim, data in rows:
        part = parts.get(bucket)
        if part is None:
            part = parts[bucket] = Part()
        decode_part(part, dim, data)
    return parts


def fetch(
    g: int, dims: tuple[str, ...], lo: int, hi: int, fallback: tuple[str, ...]
) -> Steps[dict[int, list[Part]]]:
    """The buckets of [lo, hi) at `g`: a stored bucket as one part, one not sealed yet as the
    parts of the finer level it is made of (read with the dimensions `fallback`)."""
    stored = _parts((yield Fetch(g, dims, lo, hi)))
    found = {bucket: [part] for bucket, part in stored.items()}
    if g == MINUTE:
        return found
    runs: list[list[int]] = []
    for bucket in range(lo - lo % g, hi, g):
        if bucket in stored:
            continue
        if runs and runs[-1][1] == bucket:
            runs[-1][1] = bucket + g
        else:
            runs.append([bucket, bucket + g])
    for start, end in runs:
        finer = yield from fetch(FINER[g], fallback, start, end, fallback)
        for bucket, parts in finer.items():
            found.setdefault(bucket - bucket % g, []).extend(parts)
    return found


def _merge_into(g: int, accs: dict[int, list[Acc]], always: bool) -> Steps[set[int]]:
    """Add the batch's parts of each bucket to the stored bucket (to every bucket, or only to
    those already stored); return the buckets that were stored."""
    stored = _parts((yield Fetch(g, DIMS, buckets=tuple(sorted(accs)))))
    puts: list[Row] = []
    for bucket, parts in accs.items():
        part = stored.get(bucket)
        if part is None and not always:
            continue
        if part is None and len(parts) == 1:
            merged = parts[0]
        else:
            merged = Acc()
            if part is not None:
                merged.add_part(part)
            for acc in parts:
                merged.add(acc)
        puts += [(bucket, dim, data) for dim, data in merged.blobs()]
    if puts:
        yield Put(g, puts)
    return set(stored)


def write(delta: WindowDelta, state: WriterState) -> Steps[WriterState]:
    """Write a batch's windows; return the writer state to keep once the commit succeeded."""
    minutes = minute_accs(delta)
    if not minutes:
        return state
    newest = max(minutes) if state.newest is None else max(state.newest, max(minutes))
    yield from _merge_into(MINUTE, {minute: [acc] for minute, acc in minutes.items()}, True)
    sealed = dict(state.sealed)
    for g in (FIVE_MINUTES, HOUR):
        touched: dict[int, list[Acc]] = {}
        for minute, acc in minutes.items():
            touched.setdefault(minute - minute % g, []).append(acc)
        # a late event: its sealed bucket gets it too
        have = yield from _merge_into(g, touched, always=False)
        edge = newest - GRACE
        hi = edge - edge % g  # buckets before it ended GRACE before the newest minute
        lo = sealed.get(g, 0)
        closed: set[int] = set((yield Closed(g, lo, hi))) if hi > lo else set()
        closed |= {bucket for bucket in touched if bucket < hi}
        closed -= have  # merged with the batch above
        for bucket in sorted(closed):
            acc = Acc()
            finer = yield from fetch(FINER[g], DIMS, bucket, bucket + g, DIMS)
            for parts in finer.values():
                for part in parts:
                    acc.add_part(part)
            if acc.types:
                yield Put(g, [(bucket, dim, data) for dim, data in acc.blobs()])
        sealed[g] = max(lo, hi)
    return WriterState(newest, sealed)


def read_series(query: SeriesQuery) -> Steps[SeriesRows]:
    """The rows of a timeseries, from the buckets of its step (all wikis, or one)."""
    server = query.server_name
    dim = "t" if server is None else "c"
    found = yield from fetch(query.step, (dim,), query.since, query.until, (dim, "u"))
    counts: list[tuple[int, str, int, int, int, int]] = []
    users: list[tuple[int, int]] = []
    for bucket, parts in found.items():
        part = parts[0]
        if len(parts) == 1 and part.users is None:  # stored at this step
            if part.totals is not None:
                kinds, distinct = part.totals.types, part.totals.distinct
            else:
                assert part.counts is not None
                assert server is not None
                kinds = part.counts.rows.get(server, {})
                distinct = part.counts.distinct.get(server, 0)
        else:  # not sealed yet: summed from the finer level, users as a set union (in C)
            kinds = {}
            names: set[str] = set()
            for piece in parts:
                if piece.totals is not None:
                    found_kinds = piece.totals.types
                elif piece.counts is not None and server is not None:
                    found_kinds = piece.counts.rows.get(server, {})
                else:
                    found_kinds = {}
                for kind, row in found_kinds.items():
                    add_row(kinds, kind, row)
                if piece.users is not None:
                    listed = piece.users
                    if server is None:
                        names.update(listed.names)
                    else:
                        at = listed.names.__getitem__
                        names.update(map(at, listed.members.get(server, ())))
            distinct = len(names)
        counts += [(bucket, kind, r[0], r[1], r[2], r[3]) for kind, r in kinds.items()]
        if distinct:
            users.append((bucket, distinct))
    return SeriesRows(counts, users)


_TOP_DIM = {"server_name": "c", "user": "u", "page": "p"}


def read_top(query: TopQuery) -> Steps[list[TopItem]]:
    """The busiest keys: whole hours, then 5 minutes, then minutes at the edges."""
    dim = _TOP_DIM[query.by]
    parts: list[Part] = []
    for part in split_levels(query.since, query.until):
        found = yield from fetch(part.granularity, (dim,), part.since, part.until, (dim,))
        for pieces in found.values():
            parts += pieces
    if query.by == "server_name":
        servers: dict[tuple[str, ...], int] = {}
        for piece in parts:
            assert piece.counts is not None
            for name, kinds in piece.counts.rows.items():
                key = (name,)
                servers[key] = servers.get(key, 0) + sum(row[0] for row in kinds.values())
        return best(servers, query.limit)
    if query.by == "user":
        lists = [(p.users.names, p.users.n) for p in parts if p.users is not None]
        return [((name,), n) for name, n in top_items(lists, query.limit)]
    pages = [(p.pages.keys, p.pages.n) for p in parts if p.pages is not None]
    return [(key, n) for key, n in top_items(pages, query.limit)]
