"""The SQL stores' top lists over their table of parts, free of any database driver.

A window is covered by whole hours, then 5-minute buckets, then minutes at the edges
(`split_levels`). A sealed hour or 5-minute bucket is read through its index (`window_index`:
the head of its busiest keys, the rest looked up only when a key needs it), plus any late part
it received after it was sealed, read whole; a bucket without an index (not sealed yet, or
sealed by a version before the indexes) is read whole, or from the finer level when it is not
stored at all. Every part of a bucket is a list of its own: a top list only sums counts, so the
parts need not be merged first.
"""

from __future__ import annotations

from typing import Any

from wikipulse.stores.window_tables import FINER, INDEX_DIMS, TAIL_DIMS, Fetch, Steps, runs
from wikipulse.window_blobs import Part, decode_part
from wikipulse.window_index import Ranked, TopPlan, ranked_of
from wikipulse.window_query import TopItem, TopQuery, split_levels
from wikipulse.window_topn import best
from wikipulse.windows import MINUTE

__all__ = ["read_top"]


def _whole(dim: str, data: bytes) -> Ranked[Any]:
    """A stored users' or pages' blob as a list known whole."""
    part = Part()
    decode_part(part, dim, data)
    if part.users is not None:
        return Ranked(part.users.names, part.users.n)
    assert part.pages is not None
    return Ranked(part.pages.keys, part.pages.n)


#: Where an index's head came from: (granularity, bucket) -> the list.
Sources = dict[tuple[int, int], Ranked[Any]]


def _lists(g: int, dim: str, lo: int, hi: int, sources: Sources) -> Steps[list[Ranked[Any]]]:
    """Every list of users (`u`) or pages (`p`) covering the buckets of [lo, hi) at `g`."""
    lists: list[Ranked[Any]] = []
    indexed: set[int] = set()
    if g != MINUTE:
        for bucket, _, data in (yield Fetch(g, (INDEX_DIMS[dim],), lo, hi)):
            ranked = sources[g, bucket] = ranked_of(data, dim == "p")
            lists.append(ranked)
            indexed.add(bucket)
        if indexed:
            late = yield Fetch(g, (dim,), buckets=tuple(sorted(indexed)), min_part=1)
            lists += [_whole(dim, data) for _, _, data in late]
    missing = [bucket for bucket in range(lo - lo % g, hi, g) if bucket not in indexed]
    for start, end in runs(missing, g):
        stored: set[int] = set()
        for bucket, _, data in (yield Fetch(g, (dim,), start, end)):
            lists.append(_whole(dim, data))
            stored.add(bucket)
        if g == MINUTE:
            continue
        finer = [bucket for bucket in range(start, end, g) if bucket not in stored]
        for first, last in runs(finer, g):
            lists += yield from _lists(FINER[g], dim, first, last, sources)
    return lists


def read_top(query: TopQuery) -> Steps[list[TopItem]]:
    """The busiest keys: whole hours, then 5 minutes, then minutes at the edges."""
    levels = split_levels(query.since, query.until)
    if query.by == "server_name":
        servers: dict[tuple[str, ...], int] = {}
        for level in levels:
            rows = yield Fetch(level.granularity, ("c",), level.since, level.until)
            have = {bucket for bucket, _, _ in rows}
            missing = range(level.since, level.until, level.granularity)
            for start, end in runs([b for b in missing if b not in have], level.granularity):
                rows += yield from _finer_counts(level.granularity, start, end)
            for _, _, data in rows:
                part = Part()
                decode_part(part, "c", data)
                assert part.counts is not None
                for name, kinds in part.counts.rows.items():
                    key = (name,)
                    servers[key] = servers.get(key, 0) + sum(row[0] for row in kinds.values())
        return best(servers, query.limit)
    dim = "u" if query.by == "user" else "p"
    lists: list[Ranked[Any]] = []
    sources: Sources = {}
    for level in levels:
        lists += yield from _lists(level.granularity, dim, level.since, level.until, sources)
    plan = TopPlan(lists, query.limit)
    wanted = {id(lists[i]) for i in plan.tails()}
    by_g: dict[int, list[int]] = {}
    for (g, bucket), ranked in sources.items():
        if id(ranked) in wanted:
            by_g.setdefault(g, []).append(bucket)
    for g, buckets in by_g.items():  # only the tails the answer needs
        for bucket, _, data in (yield Fetch(g, (TAIL_DIMS[dim],), buckets=tuple(sorted(buckets)))):
            sources[g, bucket].attach(data)
    if dim == "u":
        return [((name,), n) for name, n in plan.result()]
    return list(plan.result())


def _finer_counts(g: int, lo: int, hi: int) -> Steps[list[tuple[int, str, bytes]]]:
    """The `c` rows of the buckets of [lo, hi) at `g` not stored, from the finer levels."""
    if g == MINUTE:
        return []
    finer = FINER[g]
    rows: list[tuple[int, str, bytes]] = yield Fetch(finer, ("c",), lo, hi)
    have = {bucket for bucket, _, _ in rows}
    missing = [b for b in range(lo, hi, finer) if b not in have]
    for start, end in runs(missing, finer):
        rows += yield from _finer_counts(finer, start, end)
    return rows
