"""The SQL stores' time-window logic over one table of blobs, free of any database driver.

Both SQL stores keep rows keyed (granularity `g`, dimension, bucket, part) holding a blob
(`window_blobs`): minutes (60), 5 minutes (300) and hours (3600). A bucket is the sum of its
parts; a closed bucket is compacted into one part (number 0). The logic is written once here as
generators that yield requests (`Fetch`, `Put`, `Drop`, `Parts`, `Closed`) and receive their
results; `sqlite_windows` and `postgres_windows` run them against their connection
(synchronously or with await) inside the caller's transaction.

Writing a batch (`window_writer`) appends its buckets as new parts, so a commit costs what the
batch holds, not what the open minute already holds. Readers merge the parts of a bucket
(`fetch`): only open minutes (and buckets that got late events) have several. A 5-minute or
hour bucket is *sealed* once event time has moved `GRACE` seconds past its end: rolled up from
the finer level and written once. Until then readers build it from the finer level (`fetch`
falls back level by level), so answers never depend on sealing, only their speed does. How far
minutes are compacted and buckets sealed is kept by the writer (`WriterState`) and only moves
on once the transaction committed; it is rebuilt from the table when a store opens, and with
it the writer's running sums of its open buckets (`window_sums`), which seal them from memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from wikipulse.window_blobs import (
    DIMS,
    Acc,
    Counts,
    Part,
    add_row,
    decode_part,
)
from wikipulse.window_index import counts_of, index_pages, users_of
from wikipulse.window_query import SeriesQuery, SeriesRows
from wikipulse.windows import HOUR, MINUTE

if TYPE_CHECKING:
    from wikipulse.stores.window_held import Pending
    from wikipulse.stores.window_sums import Sums

__all__ = [
    "ALL_DIMS",
    "FINER",
    "GRACE",
    "INDEX_DIMS",
    "LEVELS",
    "TAIL_DIMS",
    "Closed",
    "Drop",
    "Fetch",
    "Parts",
    "Put",
    "Request",
    "Span",
    "Steps",
    "WriterState",
    "fetch",
    "fetch_parts",
    "merge_blobs",
    "read_series",
    "runs",
    "start_state",
]

_T = TypeVar("_T")
FIVE_MINUTES = 300
#: The granularities kept, finest first, and where each coarse one is rolled up from.
LEVELS = (MINUTE, FIVE_MINUTES, HOUR)
FINER = {FIVE_MINUTES: MINUTE, HOUR: FIVE_MINUTES}
#: A 5-minute or hour bucket is sealed once the newest event time is this far past its end.
GRACE = 120
#: The top-list indexes (`window_index`) of users and pages, kept by sealed coarse buckets:
#: their heads and their tails.
INDEX_DIMS = {"u": "U", "p": "P"}
TAIL_DIMS = {"u": "Ut", "p": "Pt"}
#: Every dimension a row can have.
ALL_DIMS = (*DIMS, *INDEX_DIMS.values(), *TAIL_DIMS.values())
#: (bucket, dimension, blob) as a store returns them (every part of a bucket, any order).
Row = tuple[int, str, bytes]
#: (bucket, part, dimension, blob) as a store writes them.
PartRow = tuple[int, int, str, bytes]


@dataclass(frozen=True, slots=True)
class Fetch:
    """Rows of `dims` at granularity `g`: buckets in [lo, hi), or exactly `buckets` if given."""

    g: int
    dims: tuple[str, ...]
    lo: int = 0
    hi: int = 0
    buckets: tuple[int, ...] | None = None
    #: only parts numbered this or above (1: the late parts of a sealed bucket)
    min_part: int = 0


@dataclass(frozen=True, slots=True)
class Put:
    """Insert or replace these rows at granularity `g`."""

    g: int
    rows: list[PartRow]


@dataclass(frozen=True, slots=True)
class Drop:
    """Delete every part of these buckets at granularity `g`, all dimensions."""

    g: int
    buckets: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Parts:
    """Per stored bucket of `g` in [lo, hi), or of exactly `buckets` if given: (its highest
    part number, its number of parts); the result is a dict."""

    g: int
    lo: int = 0
    hi: int = 0
    buckets: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Closed:
    """The `g`-aligned buckets holding minute rows in [lo, hi): the result is a set of ints."""

    g: int
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class Span:
    """The lowest and highest bucket stored at `g` (dimension `t`): a (min, max) pair of ints,
    or (None, None) when there is none."""

    g: int


Request = Fetch | Put | Drop | Parts | Closed | Span
Steps = Generator[Request, Any, _T]


@dataclass(slots=True)
class WriterState:
    """The newest minute written and, per level, below which every bucket is compacted (minutes)
    or sealed (5 minutes, hours: written, or `pending`); the running sums (None: rebuilt from
    the table by the next write), valid only while the last commit to the table is `token`,
    the one that made them."""

    newest: int | None = None
    sealed: dict[int, int] = field(default_factory=dict)
    sums: Sums | None = None
    token: str | None = None
    #: Sealed buckets still being made on the sealing thread, in the order asked, to be
    #: written by a later write (or `window_writer.flush`); valid with the sums only.
    pending: list[Pending] = field(default_factory=list)


def start_state(newest: int | None, oldest: int | None, coarse_max: dict[int, int]) -> WriterState:
    """The writer's state when a store opens, from what the table holds."""
    sealed = {MINUTE: 0 if oldest is None else oldest}  # the first commit compacts what is left
    for g in (FIVE_MINUTES, HOUR):
        if g in coarse_max:
            sealed[g] = coarse_max[g] + g
        else:
            sealed[g] = 0 if oldest is None else oldest - oldest % g
    return WriterState(newest, sealed)


def merge_blobs(blobs: dict[str, list[bytes]], dims: tuple[str, ...]) -> Part:
    """One bucket summed from the blobs of its parts, with the dimensions `dims` only
    (distinct users are recounted from the users' blobs, which must be among `blobs`)."""
    acc = Acc()
    for dim, datas in blobs.items():
        for data in datas:
            piece = Part()
            decode_part(piece, dim, data)
            acc.add_part(piece)
    totals, counts, users, pages = acc.structs()
    return Part(
        totals if "t" in dims else None,
        counts if "c" in dims else None,
        users if "u" in dims else None,
        pages if "p" in dims else None,
    )


def _stored(
    g: int, dims: tuple[str, ...], rows: list[Row], server: str | None, light: bool
) -> Steps[dict[int, Part]]:
    """The fetched buckets, each decoded (`c` only for `server` if given; `u` only for a set
    union if `light`), or summed from its parts where it has several."""
    blobs: dict[int, dict[str, list[bytes]]] = {}
    for bucket, dim, data in rows:
        blobs.setdefault(bucket, {}).setdefault(dim, []).append(data)
    several = [b for b, found in blobs.items() if any(len(d) > 1 for d in found.values())]
    if several and "u" not in dims and ("t" in dims or "c" in dims):
        # distinct users of a bucket in parts: the union of its parts' users
        for bucket, dim, data in (yield Fetch(g, ("u",), buckets=tuple(sorted(several)))):
            blobs[bucket].setdefault(dim, []).append(data)
    parts: dict[int, Part] = {}
    for bucket in several:
        parts[bucket] = merge_blobs(blobs.pop(bucket), dims)
    for bucket, found in blobs.items():
        part = parts[bucket] = Part()
        for dim, (data,) in found.items():
            if dim == "c" and server is not None:
                part.counts = Counts(*counts_of(data, server))
            elif dim == "u" and light:
                part.users = users_of(data, server)
            else:
                decode_part(part, dim, data)
    return parts


def fetch_parts(
    g: int,
    dims: tuple[str, ...],
    lo: int = 0,
    hi: int = 0,
    buckets: tuple[int, ...] | None = None,
) -> Steps[list[Row]]:
    """The rows of `Fetch(g, dims, lo, hi, buckets)`, with a `p` row made from the index for
    each sealed bucket that keeps its pages there only (`window_held.sealed_rows`): what a
    reader that sums whole buckets needs (`dims` with `p` must hold `t`, which every part
    has, so a part without `p` shows)."""
    rows: list[Row] = yield Fetch(g, dims, lo, hi, buckets)
    if "p" not in dims or g == MINUTE:
        return rows
    if "t" not in dims:
        raise ValueError("pages of a coarse level are read with their totals")
    short = Counter(bucket for bucket, dim, _ in rows if dim == "t")
    short.subtract(bucket for bucket, dim, _ in rows if dim == "p")
    indexed = tuple(sorted(bucket for bucket, n in short.items() if n > 0))
    if indexed:
        index: dict[int, dict[str, bytes]] = {}
        for bucket, dim, data in (
            yield Fetch(g, (INDEX_DIMS["p"], TAIL_DIMS["p"]), buckets=indexed)
        ):
            index.setdefault(bucket, {})[dim] = data
        for bucket in indexed:
            found = index.get(bucket, {})
            head, tail = found.get(INDEX_DIMS["p"]), found.get(TAIL_DIMS["p"])
            if head is None or tail is None:
                raise ValueError(f"time windows: bucket {bucket} of {g} s has no pages")
            rows.append((bucket, "p", index_pages(head, tail)))
    return rows


def runs(buckets: list[int], g: int) -> list[tuple[int, int]]:
    """Ascending `g`-aligned buckets as [start, end) runs of adjacent ones."""
    found: list[list[int]] = []
    for bucket in buckets:
        if found and found[-1][1] == bucket:
            found[-1][1] = bucket + g
        else:
            found.append([bucket, bucket + g])
    return [(start, end) for start, end in found]


def fetch(
    g: int,
    dims: tuple[str, ...],
    lo: int,
    hi: int,
    fallback: tuple[str, ...],
    server: str | None = None,
    light: bool = False,
) -> Steps[dict[int, list[Part]]]:
    """The buckets of [lo, hi) at `g`: a stored bucket as one part, one not sealed yet as the
    parts of the finer level it is made of (read with the dimensions `fallback`); `server`
    and `light` as in `_stored`."""
    stored = yield from _stored(g, dims, (yield from fetch_parts(g, dims, lo, hi)), server, light)
    found = {bucket: [part] for bucket, part in stored.items()}
    if g == MINUTE:
        return found
    missing = [bucket for bucket in range(lo - lo % g, hi, g) if bucket not in stored]
    for start, end in runs(missing, g):
        finer = yield from fetch(FINER[g], fallback, start, end, fallback, server, light)
        for bucket, parts in finer.items():
            found.setdefault(bucket - bucket % g, []).extend(parts)
    return found


def read_series(query: SeriesQuery) -> Steps[SeriesRows]:
    """The rows of a timeseries, from the buckets of its step (all wikis, or one)."""
    server = query.server_name
    dim = "t" if server is None else "c"
    since, until = query.since, query.until
    found = yield from fetch(query.step, (dim,), since, until, (dim, "u"), server, light=True)
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
