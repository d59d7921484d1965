"""The PostgreSQL store's time windows: six tables, written inside the store's commit.

The same layout as SQLite's (see `sqlite_windows.py`): `wp_win_counts`, `wp_win_users` and
`wp_win_pages`, each with minute rows (`g` = 60) and hour rows (`g` = 3600) keyed by bucket
first, and the all-wiki `wp_win_totals`, `wp_win_distinct` and `wp_win_users5` per step;
names in byte order ("C") so ties sort by code point as the API promises. A commit upserts
each table with one statement from unnest()ed arrays, rows sorted by key so that two writers
would lock them in the same order.
"""

from __future__ import annotations

from typing import Any

from wikipulse.window_query import SeriesQuery, SeriesRows, TopItem, TopQuery
from wikipulse.windows import MINUTE, STEPS, WindowDelta

__all__ = ["WINDOW_DDL", "prune_chunk", "read_series", "read_span", "read_top", "write"]

WINDOW_DDL = """
CREATE TABLE IF NOT EXISTS wp_win_counts (
    g integer NOT NULL, bucket bigint NOT NULL, server text COLLATE "C" NOT NULL,
    type text COLLATE "C" NOT NULL, events bigint NOT NULL, bots bigint NOT NULL,
    added bigint NOT NULL, removed bigint NOT NULL,
    PRIMARY KEY (g, bucket, server, type)
);
CREATE TABLE IF NOT EXISTS wp_win_users (
    g integer NOT NULL, bucket bigint NOT NULL, "user" text COLLATE "C" NOT NULL,
    server text COLLATE "C" NOT NULL, n bigint NOT NULL, PRIMARY KEY (g, bucket, "user", server)
);
CREATE TABLE IF NOT EXISTS wp_win_totals (
    g integer NOT NULL, bucket bigint NOT NULL, type text COLLATE "C" NOT NULL,
    events bigint NOT NULL, bots bigint NOT NULL, added bigint NOT NULL, removed bigint NOT NULL,
    PRIMARY KEY (g, bucket, type)
);
CREATE TABLE IF NOT EXISTS wp_win_distinct (
    g integer NOT NULL, bucket bigint NOT NULL, users bigint NOT NULL, PRIMARY KEY (g, bucket)
);
CREATE TABLE IF NOT EXISTS wp_win_users5 (
    g integer NOT NULL, bucket bigint NOT NULL, "user" text COLLATE "C" NOT NULL,
    PRIMARY KEY (g, bucket, "user")
);
CREATE TABLE IF NOT EXISTS wp_win_pages (
    g integer NOT NULL, bucket bigint NOT NULL, server text COLLATE "C" NOT NULL,
    title text COLLATE "C" NOT NULL, n bigint NOT NULL, PRIMARY KEY (g, bucket, server, title)
);
"""

_UPSERT_COUNTS = (
    "INSERT INTO wp_win_counts AS t SELECT * FROM unnest($1::integer[], $2::bigint[], "
    "$3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[]) "
    "ON CONFLICT (g, bucket, server, type) DO UPDATE SET events = t.events + excluded.events, "
    "bots = t.bots + excluded.bots, added = t.added + excluded.added, "
    "removed = t.removed + excluded.removed"
)
_UPSERT_USERS = (
    "INSERT INTO wp_win_users AS t SELECT * FROM unnest($1::integer[], $2::bigint[], "
    '$3::text[], $4::text[], $5::bigint[]) ON CONFLICT (g, bucket, "user", server) '
    "DO UPDATE SET n = t.n + excluded.n"
)
_UPSERT_PAGES = (
    "INSERT INTO wp_win_pages AS t SELECT * FROM unnest($1::integer[], $2::bigint[], "
    "$3::text[], $4::text[], $5::bigint[]) ON CONFLICT (g, bucket, server, title) "
    "DO UPDATE SET n = t.n + excluded.n"
)
_UPSERT_TOTALS = (
    "INSERT INTO wp_win_totals AS t SELECT * FROM unnest($1::integer[], $2::bigint[], "
    "$3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[]) "
    "ON CONFLICT (g, bucket, type) DO UPDATE SET events = t.events + excluded.events, "
    "bots = t.bots + excluded.bots, added = t.added + excluded.added, "
    "removed = t.removed + excluded.removed"
)
# Run before the users are written: how many of the batch's (step, bucket, user) are new.
# Minute and hour users are found in wp_win_users, 5-minute ones in wp_win_users5.
_NEW_USERS = (
    "SELECT j.g, j.b, count(*) FROM unnest($1::integer[], $2::bigint[], $3::text[]) "
    "AS j(g, b, u) WHERE NOT EXISTS (SELECT 1 FROM wp_win_users w "
    'WHERE w.g = j.g AND w.bucket = j.b AND w."user" = j.u) '
    "AND NOT EXISTS (SELECT 1 FROM wp_win_users5 f "
    'WHERE f.g = j.g AND f.bucket = j.b AND f."user" = j.u) GROUP BY j.g, j.b'
)
_INSERT_USERS5 = (
    "INSERT INTO wp_win_users5 SELECT * FROM unnest($1::integer[], $2::bigint[], $3::text[]) "
    "ON CONFLICT DO NOTHING"
)
_UPSERT_DISTINCT = (
    "INSERT INTO wp_win_distinct AS t SELECT * FROM unnest($1::integer[], $2::bigint[], "
    "$3::bigint[]) ON CONFLICT (g, bucket) DO UPDATE SET users = t.users + excluded.users"
)
_TOTALS = (
    "SELECT bucket, type, events, bots, added, removed FROM wp_win_totals "
    "WHERE g = $1 AND bucket >= $2 AND bucket < $3"
)
_DISTINCT = (
    "SELECT bucket, users FROM wp_win_distinct WHERE g = $1 AND bucket >= $2 AND bucket < $3"
)
# Only fixed text is formatted into these ({where} is made of fixed clauses); values are bound.
_SERIES_COUNTS = (
    "SELECT bucket - bucket % $1 AS b, type, sum(events)::bigint, sum(bots)::bigint, "
    "sum(added)::bigint, sum(removed)::bigint FROM wp_win_counts WHERE {where} GROUP BY b, type"
)
_SERIES_USERS = (
    'SELECT bucket - bucket % $1 AS b, count(DISTINCT "user") FROM wp_win_users '
    "WHERE {where} GROUP BY b"
)
_TOP = {
    "server_name": "SELECT server, sum(events)::bigint AS c FROM wp_win_counts WHERE {where} "
    "GROUP BY server ORDER BY c DESC, server LIMIT $1",
    "user": 'SELECT "user", sum(n)::bigint AS c FROM wp_win_users WHERE {where} '
    'GROUP BY "user" ORDER BY c DESC, "user" LIMIT $1',
    "page": "SELECT server, title, sum(n)::bigint AS c FROM wp_win_pages WHERE {where} "
    "GROUP BY server, title ORDER BY c DESC, server, title LIMIT $1",
}
_PRUNE = (
    "DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} "
    "WHERE g = $1 AND bucket <= $2 LIMIT $3))"
)
_TABLES = (
    "wp_win_totals",
    "wp_win_distinct",
    "wp_win_users5",
    "wp_win_counts",
    "wp_win_users",
    "wp_win_pages",
)
FIVE_MINUTES = 300


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    rows.sort()
    return [list(column) for column in zip(*rows, strict=True)]


async def write(conn: Any, delta: WindowDelta) -> None:
    """Upsert a batch's window rows, inside the caller's open transaction."""
    if not delta:
        return
    counts, users, pages = delta.flat_rows()
    await conn.execute(_UPSERT_COUNTS, *_columns(counts))
    await conn.execute(_UPSERT_TOTALS, *_columns(list(delta.totals())))
    if users:
        bucket_users: list[tuple[Any, ...]] = list(delta.bucket_users())
        new = [tuple(row) for row in await conn.fetch(_NEW_USERS, *_columns(bucket_users))]
        if new:
            await conn.execute(_UPSERT_DISTINCT, *_columns(new))
        fives = [key for key in bucket_users if key[0] == FIVE_MINUTES]
        if fives:
            await conn.execute(_INSERT_USERS5, *_columns(fives))
        await conn.execute(_UPSERT_USERS, *_columns(users))
    if pages:
        await conn.execute(_UPSERT_PAGES, *_columns(pages))


async def read_span(conn: Any) -> tuple[int, int] | None:
    """The oldest and newest minute kept."""
    row = await conn.fetchrow(
        "SELECT min(bucket), max(bucket) FROM wp_win_counts WHERE g = $1", MINUTE
    )
    return None if row[0] is None else (row[0], row[1])


async def read_series(conn: Any, query: SeriesQuery) -> SeriesRows:
    """The rows of a timeseries (the caller holds one read-only transaction)."""
    if query.server_name is None:  # all wikis: the per-step totals, a few rows a bucket
        span = (query.step, query.since, query.until)
        counts = await conn.fetch(_TOTALS, *span)
        distinct = await conn.fetch(_DISTINCT, *span)
        return SeriesRows([tuple(r) for r in counts], [tuple(r) for r in distinct])
    where = "g = $2 AND bucket >= $3 AND bucket < $4"
    params: list[Any] = [query.step, query.granularity, query.since, query.until]
    if query.server_name is not None:
        where += " AND server = $5"
        params.append(query.server_name)
    counts = await conn.fetch(_SERIES_COUNTS.format(where=where), *params)
    users = await conn.fetch(_SERIES_USERS.format(where=where), *params)
    return SeriesRows([tuple(r) for r in counts], [tuple(r) for r in users])


async def read_top(conn: Any, query: TopQuery) -> list[TopItem]:
    """The busiest keys, summed over the minute and hour ranges of the window."""
    ranges = query.ranges()
    if not ranges:
        return []
    clauses = []
    params: list[Any] = [query.limit]
    for r in ranges:
        n = len(params)
        clauses.append(f"(g = ${n + 1} AND bucket >= ${n + 2} AND bucket < ${n + 3})")
        params += [r.granularity, r.since, r.until]
    rows = await conn.fetch(_TOP[query.by].format(where=" OR ".join(clauses)), *params)
    return [(tuple(row[:-1]), row[-1]) for row in rows]


async def prune_chunk(conn: Any, cutoff: int, limit: int) -> int:
    """Delete up to `limit` rows per table and granularity that end at or before `cutoff`."""
    deleted = 0
    async with conn.transaction():
        for table in _TABLES:
            for g in STEPS:
                status = await conn.execute(_PRUNE.format(table=table), g, cutoff - g, limit)
                deleted += int(status.split()[-1])
    return deleted
