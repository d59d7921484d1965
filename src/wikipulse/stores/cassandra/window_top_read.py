"""Top users and pages of the Cassandra windows: merged from the sealed rows' heads, with the
full blob of a bucket (its tail) read only when the merge needs it (`window_head.merge`);
top wikis summed in full. Buckets are read by the store's `WindowReader`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable
from typing import TYPE_CHECKING

from wikipulse.stores.cassandra.window_cql import minute_columns
from wikipulse.stores.cassandra.window_head import Head, key_counts, merge
from wikipulse.stores.cassandra.window_sums import add_top, busiest
from wikipulse.window_query import TopItem, TopQuery, split_levels
from wikipulse.windows import HOUR, MINUTE

if TYPE_CHECKING:
    from wikipulse.stores.cassandra.window_read import Row, WindowReader

__all__ = ["TopReader"]

#: How often a top list is read again by heads when a version read by its head was overwritten.
_TOP_ATTEMPTS = 3


class TopReader:
    """Answer top-list queries from the buckets a `WindowReader` reads."""

    def __init__(self, reader: WindowReader) -> None:
        self._reader = reader

    async def top(self, query: TopQuery) -> list[TopItem]:
        """The busiest keys of the query's ranges, over every ingester."""
        if query.by == "server_name":  # a few hundred wikis a bucket: summed in full
            totals: dict[str, dict[str, int]] = {}
            for _, _, row in await self._top_rows(query, "counts"):
                add_top(totals, query.by, row["counts"])
            return busiest(totals, query.by, query.limit)
        for _ in range(_TOP_ATTEMPTS):
            try:
                return await self._top_keys(query)
            except _Moved:
                continue  # a version read by its head was overwritten meanwhile: read again
        return await self._top_keys(query, heads=False)

    async def _top_rows(self, query: TopQuery, cols: str) -> list[tuple[str, int, Row]]:
        """(ingester, granularity, committed row) of every bucket the query sums."""
        out: list[tuple[str, int, Row]] = []
        for ingester in await self._reader.ingesters():
            for part in split_levels(query.since, query.until):
                if part.granularity != MINUTE:
                    groups = await self._reader.level(
                        ingester, part.granularity, part.since, part.until, cols
                    )
                    out += [(ingester, r["_g"], r) for _, found in groups for r in found]
                else:
                    found = await self._reader.buckets(
                        ingester, MINUTE, part.since, part.until, minute_columns(cols)
                    )
                    out += [(ingester, MINUTE, r) for r in found.values()]
        return out

    async def _top_keys(self, query: TopQuery, heads: bool = True) -> list[TopItem]:
        """Users or pages: merged from the buckets' heads, tails read only where needed."""
        by = query.by
        col = "users" if by == "user" else "pages"
        rows = await self._top_rows(query, f"{col}_head" if heads else col)
        exact: list[dict[tuple[str, ...], int]] = []
        lists: list[Head] = []
        old: list[Awaitable[dict[tuple[str, ...], int]]] = []
        for ingester, g, row in rows:
            full = functools.partial(self._tail, by, col, ingester, g, row)
            if row.get(f"{col}_head") is not None:
                lists.append(Head.decode(row[f"{col}_head"], full))
            elif col in row:  # read in full: a minute, or heads=False
                exact.append(key_counts(by, row[col]))
            else:  # an hour row written before heads existed
                old.append(full())
        exact += await asyncio.gather(*old)
        return await merge(exact, lists, query.limit, _gather)

    async def _tail(
        self, by: str, col: str, ingester: str, g: int, head_row: Row
    ) -> dict[tuple[str, ...], int]:
        """The full blob of the version whose head was read (the same epoch and seq)."""
        bucket = head_row["bucket"]
        params = [ingester, g, bucket - bucket % HOUR, bucket, bucket + g]
        for row in await self._reader.execute(f"win_read:{col}", params):
            if (row["epoch"], row["seq"]) == (head_row["epoch"], head_row["seq"]):
                return key_counts(by, row[col])
        raise _Moved


class _Moved(Exception):
    """A bucket version read by its head is no longer there (two commits overwrote its slot)."""


async def _gather(
    work: list[Awaitable[dict[tuple[str, ...], int]]],
) -> list[dict[tuple[str, ...], int]]:
    return list(await asyncio.gather(*work))
