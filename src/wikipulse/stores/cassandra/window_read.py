"""Reading the Cassandra store's time windows: committed versions only, over every ingester.

For each ingester a reader reads the window rows first and that ingester's committed epochs
*after* them: a version whose commit landed before the epochs were read is then recognised,
and a writer never overwrites a bucket's newest committed version, so every bucket read has
a committed version among its slots (see `windows.py`). Whole hours come from hour rows;
an hour without a valid hour row (the newest event's hour, an hour not sealed yet, or one whose
row a later late event made stale) is summed from its minutes. Timeseries are answered here,
top lists by `window_top_read` over the same bucket reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from wikipulse.stores.cassandra.window_blob import decode_counts, decode_keys
from wikipulse.stores.cassandra.window_cql import minute_columns
from wikipulse.stores.cassandra.window_seal import Execute, parse_stale
from wikipulse.stores.cassandra.window_sums import (
    add_counts,
    one_wiki_counts,
    one_wiki_users,
)
from wikipulse.stores.cassandra.window_top_read import TopReader
from wikipulse.stores.cassandra.windows import committed_version
from wikipulse.window_query import (
    FIVE_MINUTES,
    SeriesQuery,
    SeriesRows,
    TopItem,
    TopQuery,
)
from wikipulse.windows import HOUR, MINUTE

__all__ = ["WindowQueries", "WindowReader"]

Row = dict[str, Any]


@dataclass(slots=True)
class _Meta:
    """One ingester as a reader needs it: its committed epochs and newest minute."""

    epochs: dict[str, int]
    newest: int | None
    stale: dict[tuple[int, int], int]  # (g, bucket) -> the last commit that touched it sealable


class WindowReader:
    """Answer window queries from the committed versions of every ingester's buckets."""

    def __init__(self, retention_seconds: int, execute: Execute) -> None:
        self._retention = retention_seconds
        self.execute = execute
        self._tops = TopReader(self)

    async def ingesters(self) -> list[str]:
        """Every ingester that has a partition (each keeps its own windows)."""
        return [row["ingester_id"] for row in await self.execute("win_ingesters", [])]

    async def _meta(self, ingester: str) -> _Meta:
        rows = await self.execute("win_meta", [ingester, ["epoch", "stale", "window"]])
        epochs = {r["name"]: r["last_seq"] for r in rows if r["kind"] == "epoch"}
        marks = [r["last_seq"] for r in rows if r["kind"] == "window"]
        stale = {parse_stale(r["name"]): r["last_seq"] for r in rows if r["kind"] == "stale"}
        return _Meta(epochs, marks[0] if marks else None, stale)

    async def span(self) -> tuple[int, int] | None:
        """The oldest and newest minute kept (within the retention), over every ingester."""
        ingesters = await self.ingesters()
        metas = await asyncio.gather(*(self._meta(i) for i in ingesters))
        newest = max((m.newest for m in metas if m.newest is not None), default=None)
        if newest is None:
            return None
        cutoff = newest - self._retention
        since = max(cutoff - cutoff % MINUTE, 0)
        # The oldest minute kept: hours are searched from the cutoff on, a few at a time, so
        # a store filled over the whole retention answers after the first few reads.
        step = 6 * HOUR
        for start in range(since - since % HOUR, newest + MINUTE, step):
            first, end = max(start, since), min(start + step, newest + MINUTE)
            found = await asyncio.gather(
                *(self.buckets(i, MINUTE, first, end, "") for i in ingesters)
            )
            oldest = min((min(rows) for rows in found if rows), default=None)
            if oldest is not None:
                return oldest, newest
        return newest, newest

    async def buckets(
        self, ingester: str, g: int, since: int, until: int, cols: str
    ) -> dict[int, Row]:
        """Per bucket of [since, until) at granularity g, its newest committed version."""
        rows = await self._read(ingester, g, since, until, cols)
        meta = await self._meta(ingester)
        return self._committed(rows, meta, g)

    async def _read(self, ingester: str, g: int, since: int, until: int, cols: str) -> list[Row]:
        first = since - since % HOUR
        reads = [
            self.execute(
                f"win_read:{cols}",
                [ingester, g, period, max(since, period), min(until, period + HOUR)],
            )
            for period in range(first, until, HOUR)
        ]
        return [row for rows in await asyncio.gather(*reads) for row in rows]

    def _committed(self, rows: Iterable[Row], meta: _Meta, g: int) -> dict[int, Row]:
        """Per bucket, its committed version of highest seq, if the bucket ends after the
        retention's cutoff (an hour is kept whole while any of it is, as the other stores do)."""
        best: dict[int, Row] = {}
        cutoff = None if meta.newest is None else meta.newest - self._retention
        for row in rows:
            if not committed_version(row, meta.epochs):
                continue
            bucket = row["bucket"]
            if g != MINUTE and row["seq"] < meta.stale.get((g, bucket), 0):
                continue  # sealed before a late event touched it (`window_seal.py`)
            if cutoff is not None and bucket + g <= cutoff:
                continue
            have = best.get(bucket)
            if have is None or row["seq"] > have["seq"]:
                best[bucket] = row
        return best

    async def level(
        self, ingester: str, g: int, since: int, until: int, cols: str
    ) -> list[tuple[int, list[Row]]]:
        """Buckets of `g` (5 minutes or an hour) over [since, until), each from its valid sealed
        row, else from the next finer level (5 minutes, then minutes) for that bucket alone.

        Rows carry `_g`, the level they come from: a bucket summed from finer rows must read
        users (not `users_n`), and minutes are read in full (they have no heads).
        """
        rows = await self._read(ingester, g, since, until, cols)
        meta = await self._meta(ingester)
        sealed = self._committed(rows, meta, g)
        out: dict[int, list[Row]] = {}
        missing: list[int] = []
        for bucket in range(since, until, g):
            row = sealed.get(bucket)
            if row is not None and not _lacks_names(row, cols):
                row["_g"] = g
                out[bucket] = [row]
            else:
                missing.append(bucket)
        if missing:
            finer = cols.replace("users_n", "user_names").replace("wiki_users", "users")
            parts = await asyncio.gather(
                *(self._finer(ingester, g, start, end, finer) for start, end in _runs(missing, g))
            )
            for part in parts:
                for row in part:
                    b = row["bucket"]
                    out.setdefault(b - b % g, []).append(row)
        return sorted(out.items())

    async def _finer(self, ingester: str, g: int, since: int, until: int, cols: str) -> list[Row]:
        """The rows of the next level down over [since, until)."""
        if g == HOUR:
            groups = await self.level(ingester, FIVE_MINUTES, since, until, cols)
            return [row for _, rows in groups for row in rows]
        minute_cols = minute_columns(cols)
        found = await self.buckets(ingester, MINUTE, since, until, minute_cols)
        for row in found.values():
            row["_g"] = MINUTE
        return list(found.values())

    async def top(self, query: TopQuery) -> list[TopItem]:
        """The busiest keys of the query's ranges, over every ingester (`window_top_read`)."""
        return await self._tops.top(query)

    async def series(self, query: SeriesQuery) -> SeriesRows:
        """Per step bucket and type: the sums; per step bucket: the distinct users."""
        ingesters = await self.ingesters()
        g, step, server = query.granularity, query.step, query.server_name
        alone = len(ingesters) == 1
        exact_n = alone and server is None and step in (g, FIVE_MINUTES)
        # One wiki from sealed rows: each wiki's distinct users, not every wiki's users.
        exact_wiki = alone and server is not None and step != MINUTE
        # All wikis: the per-type sums stored with each bucket, not every wiki's counts.
        counted = "counts" if server is not None else "totals"
        cols = f"{counted},users_n" if exact_n else f"{counted},users"
        if server is None and not exact_n:
            cols = f"{counted},user_names"  # sealed rows list their names (minutes: users)
        if exact_wiki:
            cols = f"{counted},wiki_users"
        counts: dict[tuple[int, str], list[int]] = {}
        users: dict[int, set[str]] = {}
        user_n: dict[int, int] = {}
        for ingester in ingesters:
            if g == HOUR or step % FIVE_MINUTES == 0:
                level = HOUR if g == HOUR else FIVE_MINUTES
                groups = await self.level(ingester, level, query.since, query.until, cols)
            else:
                found = await self.buckets(
                    ingester, MINUTE, query.since, query.until, minute_columns(cols)
                )
                groups = [(b, [row]) for b, row in found.items()]
            if exact_wiki and any(r.get("wiki_users", b"") is None for _, rs in groups for r in rs):
                # A sealed row from before `wiki_users`: read the users themselves.
                exact_wiki, cols = False, f"{counted},users"
                level = HOUR if g == HOUR else FIVE_MINUTES
                groups = await self.level(ingester, level, query.since, query.until, cols)
            for bucket, rows in groups:
                start = bucket - bucket % step
                names = users.setdefault(start, set())
                for row in rows:
                    if server is None:
                        add_counts(counts, start, decode_counts(row[counted]), None)
                    else:
                        add_counts(counts, start, one_wiki_counts(row[counted], server), server)
                    if exact_n and len(rows) == 1 and row.get("users_n") is not None:
                        user_n[start] = row["users_n"]
                        continue
                    if exact_wiki and server and len(rows) == 1 and row.get("wiki_users"):
                        user_n[start] = _wiki_users.decode(row["wiki_users"]).get(server, 0)
                        continue
                    if server is None:
                        listed = row.get("user_names")
                        if listed is not None:
                            names.update(_names.decode(listed))
                        else:
                            for keys in decode_keys(row.get("users")).values():
                                names.update(keys)
                    else:
                        names.update(one_wiki_users(row.get("users"), server))
        for start, names in users.items():
            if start not in user_n:
                user_n[start] = len(names)
        return SeriesRows(
            [(b, kind, r[0], r[1], r[2], r[3]) for (b, kind), r in counts.items()],
            sorted(user_n.items()),
        )


_wiki_users = msgspec.msgpack.Decoder(dict[str, int])
_names = msgspec.msgpack.Decoder(list[str])


def _lacks_names(row: Row, cols: str) -> bool:
    """Whether a sealed row was asked for its names but was sealed before it had them (its
    bucket is then summed from the finer level)."""
    return "user_names" in cols and row.get("user_names") is None


def _runs(buckets: list[int], g: int) -> list[tuple[int, int]]:
    """Ascending buckets of width `g` as [start, end) runs of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for bucket in buckets:
        if runs and runs[-1][1] == bucket:
            runs[-1] = (runs[-1][0], bucket + g)
        else:
            runs.append((bucket, bucket + g))
    return runs


class WindowQueries:
    """The `WindowStore` methods of the Cassandra store, answered by its `WindowReader`."""

    _window_reader: WindowReader

    async def window_span(self) -> tuple[int, int] | None:
        """The oldest and newest minute kept, over every ingester."""
        return await self._window_reader.span()

    async def window_series(self, query: SeriesQuery) -> SeriesRows:
        """The rows of a timeseries, from committed bucket versions only."""
        return await self._window_reader.series(query)

    async def window_top(self, query: TopQuery) -> list[TopItem]:
        """The busiest keys of the window."""
        return await self._window_reader.top(query)

    async def prune_windows(self) -> int:
        """Nothing to delete: window rows expire by TTL, and reads skip what is too old."""
        return 0
