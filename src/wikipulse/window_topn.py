"""Exact top-N over many lists of (key, count) sorted by count, highest first; pure.

A top list over a day merges ~50 buckets (hours, then 5-minute and minute buckets at the
edges), each holding every key it saw. Summing every key of every bucket costs a Python
operation per key; a threshold pass sums exactly only the keys that can still reach the top:
over lists at hand in full (`top_items`), over lists with a table of their counts too
(`top_of_tables`, the memory store), and over lists known by their heads, whose tails are read
only where the answer needs them (`HeadsPlan`, the SQL stores' indexes and Cassandra's heads).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Callable, Hashable, Mapping, Sequence
from itertools import repeat
from typing import Generic, TypeVar

from wikipulse.window_blobs import add_dict

__all__ = ["HeadsPlan", "best", "top_items", "top_of_tables"]

_K = TypeVar("_K", bound=Hashable)


def _full_merge(lists: Sequence[tuple[Sequence[_K], Sequence[int]]]) -> dict[_K, int]:
    totals: dict[_K, int] = {}
    for keys, counts in lists:
        add_dict(totals, dict(zip(keys, counts, strict=True)))
    return totals


def best(totals: dict[_K, int], limit: int) -> list[tuple[_K, int]]:
    """The `limit` highest counts, ties by key ascending (only the tied tail is sorted)."""
    if not totals:
        return []
    floor = heapq.nlargest(limit, totals.values())[-1]
    items = [(k, n) for k, n in totals.items() if n >= floor]
    items.sort(key=lambda kv: (-kv[1], kv[0]))
    return items[:limit]


def top_items(
    lists: Sequence[tuple[Sequence[_K], Sequence[int]]], limit: int
) -> list[tuple[_K, int]]:
    """The exact `limit` busiest keys over lists of (keys, counts) sorted by count, highest first.

    A threshold pass: the first `limit` keys of every list give partial sums, the `limit`-th of
    which, `floor`, bounds the answer from below. A key missing from the top of all `m` lists by
    less than `floor / m` in each sums to less than `floor`, so only keys reaching `floor / m`
    somewhere are summed exactly, from every list.
    """
    lists = [(keys, counts) for keys, counts in lists if keys]
    total_len = sum(len(keys) for keys, _ in lists)
    if len(lists) <= 1 or total_len <= 20_000:
        return best(_full_merge(lists), limit)
    partial: dict[_K, int] = {}
    for keys, counts in lists:
        add_dict(partial, dict(zip(keys[:limit], counts[:limit], strict=True)))
    if len(partial) < limit:
        return best(_full_merge(lists), limit)
    floor = heapq.nlargest(limit, partial.values())[-1]
    m = len(lists)
    candidates: set[_K] = set()
    for keys, counts in lists:
        # counts descend, so `count * m < floor` is False, then True: find the first True
        end = bisect_left(counts, True, key=lambda n: n * m < floor)
        candidates.update(keys[:end])
    if len(candidates) * m > total_len:  # no cheaper than summing everything
        return best(_full_merge(lists), limit)
    totals = dict.fromkeys(candidates, 0)
    for keys, counts in lists:
        found = dict(zip(keys, counts, strict=True))
        get = found.get
        for key in candidates:
            totals[key] += get(key, 0)
    return best(totals, limit)


def top_of_tables(
    lists: Sequence[tuple[Sequence[_K], Sequence[int]]],
    tables: Sequence[Mapping[_K, int]],
    limit: int,
) -> list[tuple[_K, int]]:
    """`top_items` for buckets whose counts are also at hand as tables (`tables[i]` maps every
    key of `lists[i]` to its count): a threshold pass that deepens until it is exact.

    The keys within the first `depth` entries of any list are summed exactly from the tables.
    A key outside all of them counts at most `counts[depth]` in each list, so at most their sum,
    `bound`; once the `limit`-th exact sum is above `bound`, no other key can enter (or tie
    into) the answer. Otherwise the depth grows fourfold. Over a day of pages (~50 buckets of
    100,000+ keys) this sums a few thousand keys where `top_items` summed them all.
    """
    pairs = [(lst, table) for lst, table in zip(lists, tables, strict=True) if lst[0]]
    total_len = sum(len(keys) for (keys, _), _ in pairs)
    if len(pairs) <= 1 or total_len <= 20_000:
        return best(_full_merge([lst for lst, _ in pairs]), limit)
    depth = limit
    while True:
        candidates: set[_K] = set()
        for (keys, _), _ in pairs:
            candidates.update(keys[:depth])
        if len(candidates) * len(pairs) >= total_len:  # no cheaper than summing everything
            return best(_full_merge([lst for lst, _ in pairs]), limit)
        bound = sum(counts[depth] for (_, counts), _ in pairs if depth < len(counts))
        order = list(candidates)
        sums = [0] * len(order)
        for _, table in pairs:
            sums = list(map(int.__add__, sums, map(table.get, order, repeat(0))))
        totals = dict(zip(order, sums, strict=True))
        found = best(totals, limit)
        if bound == 0 or (len(found) == limit and found[-1][1] > bound):
            return found
        depth *= 4


class HeadsPlan(Generic[_K]):
    """Exact top-N over lists known by their *heads*: each list's busiest keys with their
    counts, and `tail_max`, the largest count its head leaves out (0: the head is the list).

    Threshold style (TPUT): the heads' sums bound each key's total from below, so the
    `limit`-th of them, `floor`, bounds the answer from below. A key can reach `floor` only if
    its sum plus the `tail_max` of every list whose head lacks it does; a key in no head can
    reach at most the sum of all `tail_max`. When that is below `floor`, only the keys that
    can still reach it are *candidates*, and a list's tail is needed only if it has one and
    some candidate is missing from its head (usually none: the busiest keys of a day are in
    the head of every hour). Otherwise every tail is needed. Exact either way: every key left
    out has an upper bound below the `limit`-th count found.
    """

    def __init__(self, heads: Sequence[dict[_K, int]], tail_max: Sequence[int], limit: int) -> None:
        self.heads, self.tail_max, self.limit = heads, tail_max, limit
        self.lower: dict[_K, int] = {}
        covered: dict[_K, int] = {}  # per key: the tail_max of the lists whose head holds it
        for head, most in zip(heads, tail_max, strict=True):
            add_dict(self.lower, head)
            if most:
                add_dict(covered, dict.fromkeys(head, most))
        unseen = sum(tail_max)  # the most a key in no head can count
        lower = self.lower
        floor = heapq.nlargest(limit, lower.values())[-1] if len(lower) >= limit else 0
        #: The keys whose upper bound reaches the floor; None: every key (every tail read).
        self.candidates: list[_K] | None = None
        if unseen < floor:
            get, need = covered.get, floor - unseen
            self.candidates = [key for key, n in lower.items() if n - get(key, 0) >= need]

    def needed(self) -> list[int]:
        """The positions of the lists whose tails the answer needs."""
        with_tails = [i for i, most in enumerate(self.tail_max) if most]
        candidates = self.candidates
        if candidates is None:
            return with_tails
        return [i for i in with_tails if any(key not in self.heads[i] for key in candidates)]

    def result(
        self, lookup: Callable[[int, _K], int], whole: Callable[[int], dict[_K, int]]
    ) -> list[tuple[_K, int]]:
        """The answer, given the needed tails: `lookup(i, key)` is the count in list `i` of a
        key its head lacks, `whole(i)` every key of list `i` (head included) with its count."""
        if self.candidates is None:
            totals: dict[_K, int] = {}
            for i, (head, most) in enumerate(zip(self.heads, self.tail_max, strict=True)):
                add_dict(totals, whole(i) if most else head)
            return best(totals, self.limit)
        tails = [(i, head) for i, head in enumerate(self.heads) if self.tail_max[i]]
        exact: dict[_K, int] = {}
        for key in self.candidates:
            n = self.lower[key]
            for i, head in tails:
                if key not in head:
                    n += lookup(i, key)
            exact[key] = n
        return best(exact, self.limit)
