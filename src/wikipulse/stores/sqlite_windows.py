"""The SQLite store's time windows: one table of blob parts, written inside the store's commit.

`win_parts(g, dim, bucket, part, data)`: per granularity (60, 300, 3600), dimension and bucket,
one or more parts whose sum is the bucket, each a msgpack blob (see `window_blobs`; the logic
is `window_tables` and `window_writer`; this module runs it on a connection). A commit appends
the parts of the buckets its batch touches, compacts closed minutes and seals closed 5-minute
and hour buckets, in the same transaction as the counters and the position. Pruning deletes a
bounded number of rows per transaction.

Schema version 5 kept one blob per bucket in `win_parts`: migrating copies each as part 0 of
`win_parts` (nothing is lost). Versions 3 and 4 held a row per (bucket, key) in six `win_*`
tables; migrating drops them (the windows then restart from nothing; the counters are kept).
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import msgspec

from wikipulse.lease import Fence
from wikipulse.stores import window_sums, window_top, window_writer
from wikipulse.stores import window_tables as tables
from wikipulse.stores.sqlite_lease import check_in_transaction
from wikipulse.window_delta import WindowDelta
from wikipulse.window_query import SeriesQuery, SeriesRows, TopItem, TopQuery
from wikipulse.windows import MINUTE

__all__ = [
    "OLD_TABLES",
    "WINDOW_SCHEMA",
    "drop_old_tables",
    "load_state",
    "prune_chunk",
    "read_series",
    "read_span",
    "read_top",
    "upgrade_blobs",
    "write",
    "write_pending",
]

log = logging.getLogger(__name__)

WINDOW_SCHEMA = """
CREATE TABLE IF NOT EXISTS win_parts (
    g INTEGER NOT NULL, dim TEXT NOT NULL, bucket INTEGER NOT NULL, part INTEGER NOT NULL,
    data BLOB NOT NULL, PRIMARY KEY (g, dim, bucket, part)
);
"""
#: The tables of schema version 3 (a row per bucket and key).
OLD_TABLES = ("win_counts", "win_users", "win_totals", "win_distinct", "win_users5", "win_pages")
_RANGE = (
    "SELECT bucket, dim, data FROM win_parts WHERE g = ? AND dim = ? AND bucket >= ? "
    "AND bucket < ? AND part >= ?"
)
_AT = (
    "SELECT bucket, dim, data FROM win_parts WHERE g = ? AND dim = ? "
    "AND bucket IN (SELECT value FROM json_each(?)) AND part >= ?"
)
_PUT = (
    "INSERT INTO win_parts (g, dim, bucket, part, data) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (g, dim, bucket, part) DO UPDATE SET data = excluded.data"
)
_DROP = (
    "DELETE FROM win_parts WHERE g = ? AND dim = ? AND bucket IN (SELECT value FROM json_each(?))"
)
_PARTS_RANGE = (
    "SELECT bucket, max(part), count(*) FROM win_parts WHERE g = ? AND dim = 't' "
    "AND bucket >= ? AND bucket < ? GROUP BY bucket"
)
_PARTS_AT = (
    "SELECT bucket, max(part), count(*) FROM win_parts WHERE g = ? AND dim = 't' "
    "AND bucket IN (SELECT value FROM json_each(?)) GROUP BY bucket"
)
_CLOSED = (
    "SELECT DISTINCT bucket - bucket % ? FROM win_parts WHERE g = 60 AND dim = 't' "
    "AND bucket >= ? AND bucket < ?"
)
_SPAN = "SELECT min(bucket), max(bucket) FROM win_parts WHERE g = ? AND dim = 't'"
_PRUNE = (
    "DELETE FROM win_parts WHERE rowid IN "
    "(SELECT rowid FROM win_parts WHERE g = ? AND dim = ? AND bucket <= ? LIMIT ?)"
)
_encode = msgspec.json.Encoder().encode


def upgrade_blobs(conn: sqlite3.Connection) -> None:
    """Move schema version 5's one blob per bucket (`win_blobs`) into `win_parts` as part 0."""
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'win_blobs'"
    ).fetchone()
    if found is None:
        return
    moved = conn.execute(
        "INSERT OR IGNORE INTO win_parts (g, dim, bucket, part, data) "
        "SELECT g, dim, bucket, 0, data FROM win_blobs"
    ).rowcount
    conn.execute("DROP TABLE win_blobs")
    log.warning("time windows: moved %d rows of win_blobs into win_parts (kept as is)", moved)


def drop_old_tables(conn: sqlite3.Connection) -> None:
    """Drop the window tables of schema version 3, saying so if there were any."""
    old = [
        name
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if name in OLD_TABLES
    ]
    for name in old:
        conn.execute(f"DROP TABLE {name}")  # a fixed name from OLD_TABLES
    if old:
        log.warning(
            "time windows: dropped the old window tables (%s); windows restart from the "
            "next events committed, the counters are kept",
            ", ".join(old),
        )


def _run(conn: sqlite3.Connection, steps: tables.Steps[Any]) -> Any:
    """Run the requests of a `window_tables` generator on the connection; return its result."""
    try:
        with window_sums.no_cycle_collection():  # one pause for the whole run (no await here)
            request = next(steps)
            while True:
                request = steps.send(_answer(conn, request))
    except StopIteration as stop:
        return stop.value


def _answer(conn: sqlite3.Connection, request: tables.Request) -> Any:
    if isinstance(request, tables.Fetch):
        rows: list[tuple[int, str, bytes]] = []
        for dim in request.dims:
            if request.buckets is None:
                params: tuple[Any, ...] = (request.g, dim, request.lo, request.hi, request.min_part)
                rows += conn.execute(_RANGE, params).fetchall()
            else:
                params = (request.g, dim, _encode(request.buckets), request.min_part)
                rows += conn.execute(_AT, params).fetchall()
        return rows
    if isinstance(request, tables.Put):
        g = request.g
        puts = [(g, dim, bucket, part, data) for bucket, part, dim, data in request.rows]
        conn.executemany(_PUT, puts)
        return None
    if isinstance(request, tables.Drop):
        buckets = _encode(request.buckets)
        for dim in tables.ALL_DIMS:
            conn.execute(_DROP, (request.g, dim, buckets))
        return None
    if isinstance(request, tables.Parts):
        if request.buckets is None:
            params = (request.g, request.lo, request.hi)
            found = conn.execute(_PARTS_RANGE, params)
        else:
            found = conn.execute(_PARTS_AT, (request.g, _encode(request.buckets)))
        return {bucket: (top, count) for bucket, top, count in found}
    if isinstance(request, tables.Span):
        return conn.execute(_SPAN, (request.g,)).fetchone()
    return {row[0] for row in conn.execute(_CLOSED, (request.g, request.lo, request.hi))}


def load_state(conn: sqlite3.Connection) -> tables.WriterState:
    """The writer's state from the table (newest minute, how far buckets are sealed)."""
    spans = {g: conn.execute(_SPAN, (g,)).fetchone() for g in tables.LEVELS}
    coarse = {g: span[1] for g, span in spans.items() if g != MINUTE and span[1] is not None}
    return tables.start_state(spans[MINUTE][1], spans[MINUTE][0], coarse)


def write(
    conn: sqlite3.Connection,
    delta: WindowDelta,
    state: tables.WriterState,
    last: str | None = None,
    token: str | None = None,
) -> tables.WriterState:
    """Write a batch's windows inside the caller's open transaction; return the next state
    (`last`: the token of the table's last commit, `token`: this one's; see `window_writer`).
    Buckets that close are sealed on the sealing thread meanwhile (`defer`): SQLite has one
    writer, whose thread is a replay's serial part; the store writes those left when it
    closes (`write_pending`)."""
    steps = window_writer.write(delta, state, last, token, defer=True)
    result: tables.WriterState = _run(conn, steps)
    return result


def write_pending(
    conn: sqlite3.Connection, state: tables.WriterState, fence: Fence | None = None
) -> None:
    """Write the sealed buckets still being made (waiting for them) in a transaction of their
    own, if the state is still the table's: if another commit came since (or the lease was
    lost), the next write reads those buckets back instead. They change no count."""
    pending, state.pending = state.pending, []
    if not pending:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        check_in_transaction(conn, fence)
        (last,) = conn.execute("SELECT last_batch FROM state").fetchone()
        if last == state.token:
            _run(conn, window_writer.flush(pending))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def read_span(conn: sqlite3.Connection) -> tuple[int, int] | None:
    """The oldest and newest minute kept."""
    row = conn.execute(_SPAN, (MINUTE,)).fetchone()
    return None if row[0] is None else (row[0], row[1])


def _read(conn: sqlite3.Connection, steps: tables.Steps[Any]) -> Any:
    conn.execute("BEGIN")  # one read transaction: every row as of one commit
    try:
        return _run(conn, steps)
    finally:
        conn.execute("COMMIT")


def read_series(conn: sqlite3.Connection, query: SeriesQuery) -> SeriesRows:
    """The rows of a timeseries, in one read transaction."""
    rows: SeriesRows = _read(conn, tables.read_series(query))
    return rows


def read_top(conn: sqlite3.Connection, query: TopQuery) -> list[TopItem]:
    """The busiest keys of the window, in one read transaction."""
    items: list[TopItem] = _read(conn, window_top.read_top(query))
    return items


def prune_chunk(conn: sqlite3.Connection, cutoff: int, limit: int) -> int:
    """Delete up to `limit` rows per granularity and dimension ending at or before `cutoff`."""
    deleted = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        for g in tables.LEVELS:
            for dim in tables.ALL_DIMS:
                deleted += conn.execute(_PRUNE, (g, dim, cutoff - g, limit)).rowcount
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return deleted
