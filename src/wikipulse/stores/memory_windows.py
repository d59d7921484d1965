"""The memory store's time windows: per-bucket maps at minute and hour granularity.

Committed deltas are kept as they come (one tuple per event, see `WindowDelta`) and summed
into the per-bucket maps when something reads them (or when many are waiting), so a replay
that never asks for windows does not pay for summing them; the data held is the same.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator, Mapping
from operator import itemgetter
from typing import Any, TypeVar

from wikipulse.window_delta import WindowDelta
from wikipulse.window_query import Range, SeriesQuery, SeriesRows, TopItem, TopQuery
from wikipulse.window_topn import top_of_tables
from wikipulse.windows import GRANULARITIES, MINUTE, STEPS

__all__ = ["MemoryWindows"]

#: Index the waiting deltas once they hold this many events (about a day of the live stream),
#: so that a store nobody reads still prunes what falls out of the retention period.
_INDEX_AFTER_EVENTS = 5_000_000

_V = TypeVar("_V")
_Rows = dict[tuple[str, str], list[int]]
_Keys = dict[tuple[str, str], int]
#: A bucket's keys and counts sorted by count (highest first), and the same as a table.
_Ranked = tuple[list[Any], list[int], Mapping[Any, int]]


class MemoryWindows:
    """Time windows in process memory, pruned to `retention_seconds` behind the newest event."""

    def __init__(self, retention_seconds: int) -> None:
        self._retention = retention_seconds
        self._waiting: list[WindowDelta] = []
        self._waiting_events = 0
        self._counts: dict[int, dict[int, _Rows]] = {g: {} for g in GRANULARITIES}
        self._users: dict[int, dict[int, _Keys]] = {g: {} for g in GRANULARITIES}
        self._pages: dict[int, dict[int, _Keys]] = {g: {} for g in GRANULARITIES}
        # All wikis, per timeseries step: sums per bucket and type, and the users per bucket.
        self._totals: dict[int, dict[int, dict[str, list[int]]]] = {s: {} for s in STEPS}
        self._bucket_users: dict[int, dict[int, set[str]]] = {s: {} for s in STEPS}
        self._newest: int | None = None
        # Top lists: per ("user" or "page", granularity, bucket), its keys and counts sorted by
        # count, built when first read and dropped when the bucket changes, so a top list over
        # many closed buckets merges sorted lists (`top_items`) instead of summing every key.
        self._ranked: dict[tuple[str, int, int], _Ranked] = {}

    def add(self, delta: WindowDelta, events: int) -> None:
        """Keep a committed delta (no await: readers never see half of it)."""
        if delta:
            self._waiting.append(delta)
            self._waiting_events += events
            if self._waiting_events >= _INDEX_AFTER_EVENTS:
                self._index()

    def _index(self) -> None:
        waiting, self._waiting, self._waiting_events = self._waiting, [], 0
        for delta in waiting:
            if self._ranked:
                for minute in {key[0] for key in delta.compact().counts}:
                    for g in GRANULARITIES:
                        for by in ("user", "page"):
                            self._ranked.pop((by, g, minute - minute % g), None)
            for g, counts, users, pages in delta.granular():
                self._apply_rows(self._counts[g], counts)
                _apply_keys(self._users[g], users)
                _apply_keys(self._pages[g], pages)
            for step, bucket, kind, *row in delta.totals():
                have = self._totals[step].setdefault(bucket, {}).get(kind)
                if have is None:
                    self._totals[step][bucket][kind] = row
                else:
                    for i in range(4):
                        have[i] += row[i]
            for step, bucket, user in delta.bucket_users():
                self._bucket_users[step].setdefault(bucket, set()).add(user)
            newest = delta.newest()
            if newest is not None and (self._newest is None or newest > self._newest):
                self._newest = newest
        if waiting:
            self._drop_old()

    @staticmethod
    def _apply_rows(table: dict[int, _Rows], rows: dict[tuple[int, str, str], list[int]]) -> None:
        for (bucket, server, kind), row in rows.items():
            cell = table.setdefault(bucket, {})
            have = cell.get((server, kind))
            if have is None:
                cell[(server, kind)] = list(row)
            else:
                for i in range(4):
                    have[i] += row[i]

    def prune(self) -> int:
        """Drop buckets that end before the retention period; return how many went."""
        self._index()
        return self._drop_old()

    def _drop_old(self) -> int:
        if self._newest is None:
            return 0
        cutoff = self._newest - self._retention
        dropped = 0
        tables: list[tuple[int, dict[int, Any]]] = [
            (g, table)
            for g in GRANULARITIES
            for table in (self._counts[g], self._users[g], self._pages[g])
        ]
        tables += [(s, self._totals[s]) for s in STEPS]
        tables += [(s, self._bucket_users[s]) for s in STEPS]
        for g, table in tables:
            old = [bucket for bucket in table if bucket + g <= cutoff]
            for bucket in old:
                dropped += len(table.pop(bucket))
        for key in [key for key in self._ranked if key[2] + key[1] <= cutoff]:
            del self._ranked[key]
        return dropped

    def span(self) -> tuple[int, int] | None:
        """The oldest and newest minute kept."""
        self._index()
        minutes = self._counts[MINUTE]
        if not minutes:
            return None
        return min(minutes), max(minutes)

    def series(self, query: SeriesQuery) -> SeriesRows:
        """The timeseries rows, summed per bucket and type."""
        self._index()
        g, step, server = query.granularity, query.step, query.server_name
        if server is None:  # all wikis: the per-step totals and users
            return SeriesRows(
                [
                    (b, kind, *row)  # type: ignore[misc]
                    for b, cell in _buckets(self._totals[step], query.since, query.until, step)
                    for kind, row in cell.items()
                ],
                [
                    (b, len(names))
                    for b, names in _buckets(
                        self._bucket_users[step], query.since, query.until, step
                    )
                ],
            )
        counts: dict[tuple[int, str], list[int]] = {}
        users: dict[int, set[str]] = {}
        for bucket, cell in _buckets(self._counts[g], query.since, query.until, g):
            start = bucket - bucket % step
            for (name, kind), row in cell.items():
                if server is None or name == server:
                    have = counts.setdefault((start, kind), [0, 0, 0, 0])
                    for i in range(4):
                        have[i] += row[i]
        for bucket, keys in _buckets(self._users[g], query.since, query.until, g):
            seen = users.setdefault(bucket - bucket % step, set())
            seen.update(user for name, user in keys if server is None or name == server)
        return SeriesRows(
            [(b, kind, r[0], r[1], r[2], r[3]) for (b, kind), r in counts.items()],
            [(b, len(names)) for b, names in users.items()],
        )

    def top(self, query: TopQuery) -> list[TopItem]:
        """The busiest keys over the query's ranges."""
        self._index()
        if query.by != "server_name":
            found = [
                self._ranked_keys(query.by, part.granularity, bucket, keys)
                for part in query.ranges()
                for bucket, keys in _in(self._users if query.by == "user" else self._pages, part)
            ]
            lists = [(keys, n) for keys, n, _ in found]
            items = top_of_tables(lists, [table for _, _, table in found], query.limit)
            if query.by == "user":
                return [((user,), n) for user, n in items]
            return list(items)
        totals: Counter[tuple[str, ...]] = Counter()
        for part in query.ranges():
            for _, cell in _in(self._counts, part):
                for (name, _kind), row in cell.items():
                    totals[(name,)] += row[0]
        return heapq.nsmallest(query.limit, totals.items(), key=lambda kv: (-kv[1], kv[0]))

    def _ranked_keys(self, by: str, g: int, bucket: int, keys: _Keys) -> _Ranked:
        """A bucket's users (summed over wikis) or pages, sorted by count, highest first, and
        the same as a table (the pages' is the bucket's own dict, the users' their sums)."""
        found = self._ranked.get((by, g, bucket))
        if found is None:
            table: Mapping[Any, int]
            if by == "user":
                users: dict[str, int] = {}
                for (_name, user), n in keys.items():
                    users[user] = users.get(user, 0) + n
                table = users
            else:
                table = keys
            ranked = sorted(table.items(), key=itemgetter(1), reverse=True)
            found = ([k for k, _ in ranked], [n for _, n in ranked], table)
            self._ranked[(by, g, bucket)] = found
        return found


def _apply_keys(table: dict[int, _Keys], keys: dict[tuple[int, str, str], int]) -> None:
    last_bucket, cell = None, None
    for (bucket, server, key), n in keys.items():
        if bucket != last_bucket or cell is None:
            cell = table.setdefault(bucket, {})
            last_bucket = bucket
        pair = (server, key)
        cell[pair] = cell.get(pair, 0) + n


def _buckets(table: dict[int, _V], since: int, until: int, g: int) -> Iterator[tuple[int, _V]]:
    """The table's buckets in [since, until), by walking the range (tables are sparse)."""
    if (until - since) // g > len(table):
        for bucket, cell in table.items():
            if since <= bucket < until:
                yield bucket, cell
        return
    for bucket in range(since - since % g, until, g):
        if bucket >= since and bucket in table:
            yield bucket, table[bucket]


def _in(tables: dict[int, dict[int, _V]], part: Range) -> Iterator[tuple[int, _V]]:
    return _buckets(tables[part.granularity], part.since, part.until, part.granularity)
