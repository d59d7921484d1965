"""The SQLite store's time windows: six tables, written inside the store's commit.

Tables, each holding minute rows (`g` = 60) and hour rows (`g` = 3600), keyed by bucket first:

- `win_counts(g, bucket, server, type)`: events, bots, bytes added and removed;
- `win_users(g, bucket, user, server)`: events per user and wiki (distinct users, top users);
- `win_pages(g, bucket, server, title)`: events per page (top pages).

And, for a timeseries of all wikis, per step `g` in 60, 300 and 3600 and bucket:

- `win_totals(g, bucket, type)`: the sums over all wikis;
- `win_distinct(g, bucket)`: the distinct users, counted at commit from the batch's
  (step, bucket, user) keys not yet in `win_users` (minutes, hours) or `win_users5`
  (5-minute buckets, which only this needs).

A commit upserts the batch's rows of both granularities with one statement per table (the
rows travel as one JSON array, read with `json_each`), in the same transaction as the counters
and the position. Reads sum minute rows for the edges of a window and hour rows for the whole
hours inside it. Pruning deletes a bounded number of rows per transaction, so a commit never
waits long behind it.
"""

from __future__ import annotations

import sqlite3

import msgspec

from wikipulse.window_query import SeriesQuery, SeriesRows, TopItem, TopQuery
from wikipulse.windows import MINUTE, STEPS, WindowDelta

__all__ = ["WINDOW_SCHEMA", "prune_chunk", "read_series", "read_span", "read_top", "write"]

WINDOW_SCHEMA = """
CREATE TABLE IF NOT EXISTS win_counts (
    g INTEGER NOT NULL, bucket INTEGER NOT NULL, server TEXT NOT NULL, type TEXT NOT NULL,
    events INTEGER NOT NULL, bots INTEGER NOT NULL,
    added INTEGER NOT NULL, removed INTEGER NOT NULL,
    PRIMARY KEY (g, bucket, server, type)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS win_users (
    g INTEGER NOT NULL, bucket INTEGER NOT NULL, user TEXT NOT NULL, server TEXT NOT NULL,
    n INTEGER NOT NULL, PRIMARY KEY (g, bucket, user, server)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS win_totals (
    g INTEGER NOT NULL, bucket INTEGER NOT NULL, type TEXT NOT NULL,
    events INTEGER NOT NULL, bots INTEGER NOT NULL,
    added INTEGER NOT NULL, removed INTEGER NOT NULL,
    PRIMARY KEY (g, bucket, type)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS win_distinct (
    g INTEGER NOT NULL, bucket INTEGER NOT NULL, users INTEGER NOT NULL,
    PRIMARY KEY (g, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS win_users5 (
    g INTEGER NOT NULL, bucket INTEGER NOT NULL, user TEXT NOT NULL,
    PRIMARY KEY (g, bucket, user)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS win_pages (
    g INTEGER NOT NULL, bucket INTEGER NOT NULL, server TEXT NOT NULL, title TEXT NOT NULL,
    n INTEGER NOT NULL, PRIMARY KEY (g, bucket, server, title)
) WITHOUT ROWID;
"""

_UPSERT_COUNTS = (
    "INSERT INTO win_counts SELECT value->>0, value->>1, value->>2, value->>3, value->>4, "
    "value->>5, value->>6, value->>7 FROM json_each(?) WHERE true "
    "ON CONFLICT DO UPDATE SET events = events + excluded.events, bots = bots + excluded.bots, "
    "added = added + excluded.added, removed = removed + excluded.removed"
)
_UPSERT_KEYS = (
    "INSERT INTO {table} SELECT value->>0, value->>1, value->>2, value->>3, value->>4 "
    "FROM json_each(?) WHERE true ON CONFLICT DO UPDATE SET n = n + excluded.n"
)
_UPSERT_USERS = _UPSERT_KEYS.format(table="win_users")
_UPSERT_TOTALS = (
    "INSERT INTO win_totals SELECT value->>0, value->>1, value->>2, value->>3, value->>4, "
    "value->>5, value->>6 FROM json_each(?) WHERE true "
    "ON CONFLICT DO UPDATE SET events = events + excluded.events, bots = bots + excluded.bots, "
    "added = added + excluded.added, removed = removed + excluded.removed"
)
# Run before the users are written: how many of the batch's (step, bucket, user) are new.
# Minute and hour users are found in win_users, 5-minute ones in win_users5.
_NEW_USERS = (
    "SELECT value->>0 AS g, value->>1 AS b, count(*) FROM json_each(?) WHERE NOT EXISTS ("
    "SELECT 1 FROM win_users WHERE g = value->>0 AND bucket = value->>1 AND user = value->>2) "
    "AND NOT EXISTS (SELECT 1 FROM win_users5 WHERE g = value->>0 AND bucket = value->>1 "
    "AND user = value->>2) GROUP BY g, b"
)
_INSERT_USERS5 = (
    "INSERT OR IGNORE INTO win_users5 SELECT value->>0, value->>1, value->>2 FROM json_each(?)"
)
_UPSERT_DISTINCT = (
    "INSERT INTO win_distinct SELECT value->>0, value->>1, value->>2 FROM json_each(?) "
    "WHERE true ON CONFLICT DO UPDATE SET users = users + excluded.users"
)
_UPSERT_PAGES = _UPSERT_KEYS.format(table="win_pages")
FIVE_MINUTES = 300
_KEYS = {
    "win_totals": "g, bucket, type",
    "win_distinct": "g, bucket",
    "win_users5": "g, bucket, user",
    "win_counts": "g, bucket, server, type",
    "win_users": "g, bucket, user, server",
    "win_pages": "g, bucket, server, title",
}
# Only fixed text is formatted into these ({where} is made of fixed clauses); values are bound.
_SERIES_COUNTS = (
    "SELECT bucket - bucket % :step AS b, type, sum(events), sum(bots), sum(added), "
    "sum(removed) FROM win_counts WHERE {where} GROUP BY b, type"
)
_TOTALS = (
    "SELECT bucket, type, events, bots, added, removed FROM win_totals "
    "WHERE g = :step AND bucket >= :since AND bucket < :until"
)
_DISTINCT = (
    "SELECT bucket, users FROM win_distinct WHERE g = :step "
    "AND bucket >= :since AND bucket < :until"
)
_SERIES_USERS = (
    "SELECT bucket - bucket % :step AS b, count(DISTINCT user) FROM win_users "
    "WHERE {where} GROUP BY b"
)
_TOP = {
    "server_name": "SELECT server, sum(events) AS c FROM win_counts WHERE {where} "
    "GROUP BY server ORDER BY c DESC, server LIMIT ?",
    "user": "SELECT user, sum(n) AS c FROM win_users WHERE {where} "
    "GROUP BY user ORDER BY c DESC, user LIMIT ?",
    "page": "SELECT server, title, sum(n) AS c FROM win_pages WHERE {where} "
    "GROUP BY server, title ORDER BY c DESC, server, title LIMIT ?",
}
_PRUNE = (
    "DELETE FROM {table} WHERE ({key}) IN "
    "(SELECT {key} FROM {table} WHERE g = ? AND bucket <= ? LIMIT ?)"
)
_encode = msgspec.json.Encoder().encode


def write(conn: sqlite3.Connection, delta: WindowDelta) -> None:
    """Upsert a batch's window rows, inside the caller's open transaction."""
    if not delta:
        return
    counts, users, pages = delta.flat_rows()
    conn.execute(_UPSERT_COUNTS, (_encode(counts),))
    conn.execute(_UPSERT_TOTALS, (_encode(delta.totals()),))
    if users:
        bucket_users = delta.bucket_users()
        new = conn.execute(_NEW_USERS, (_encode(bucket_users),)).fetchall()
        conn.execute(_UPSERT_DISTINCT, (_encode(new),))
        fives = [key for key in bucket_users if key[0] == FIVE_MINUTES]
        conn.execute(_INSERT_USERS5, (_encode(fives),))
        conn.execute(_UPSERT_USERS, (_encode(users),))
    if pages:
        conn.execute(_UPSERT_PAGES, (_encode(pages),))


def read_span(conn: sqlite3.Connection) -> tuple[int, int] | None:
    """The oldest and newest minute kept."""
    row = conn.execute(
        "SELECT min(bucket), max(bucket) FROM win_counts WHERE g = ?", (MINUTE,)
    ).fetchone()
    return None if row[0] is None else (row[0], row[1])


def read_series(conn: sqlite3.Connection, query: SeriesQuery) -> SeriesRows:
    """The rows of a timeseries, in one read transaction."""
    where = "g = :g AND bucket >= :since AND bucket < :until"
    if query.server_name is not None:
        where += " AND server = :server"
    params = {
        "step": query.step,
        "g": query.granularity,
        "since": query.since,
        "until": query.until,
        "server": query.server_name,
    }
    conn.execute("BEGIN")
    try:
        if query.server_name is None:  # all wikis: the per-step totals, a few rows a bucket
            counts = conn.execute(_TOTALS, params).fetchall()
            users = conn.execute(_DISTINCT, params).fetchall()
        else:
            counts = conn.execute(_SERIES_COUNTS.format(where=where), params).fetchall()
            users = conn.execute(_SERIES_USERS.format(where=where), params).fetchall()
    finally:
        conn.execute("COMMIT")
    return SeriesRows(counts, users)


def read_top(conn: sqlite3.Connection, query: TopQuery) -> list[TopItem]:
    """The busiest keys, summed over the minute and hour ranges of the window."""
    ranges = query.ranges()
    if not ranges:
        return []
    where = " OR ".join("(g = ? AND bucket >= ? AND bucket < ?)" for _ in ranges)
    params: list[int] = [v for r in ranges for v in (r.granularity, r.since, r.until)]
    sql = _TOP[query.by].format(where=where)
    rows = conn.execute(sql, (*params, query.limit)).fetchall()
    return [(tuple(row[:-1]), row[-1]) for row in rows]


def prune_chunk(conn: sqlite3.Connection, cutoff: int, limit: int) -> int:
    """Delete up to `limit` rows per table and granularity that end at or before `cutoff`."""
    deleted = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, key in _KEYS.items():
            for g in STEPS:
                sql = _PRUNE.format(table=table, key=key)
                deleted += conn.execute(sql, (g, cutoff - g, limit)).rowcount
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return deleted
