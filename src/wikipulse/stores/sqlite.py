"""The SQLite store: one file, one transaction per batch, exactly-once across crashes.

Tables:

- `state`: one row with total, bots, distinct_users, the stream position, the count of event ids
  ever recorded (`ids_end`) and the token of the last batch committed (the idempotence key).
- `servers(name, events)`: per-server counts, upserted.
- `users(name)`: every user seen; `INSERT OR IGNORE` tells how many are new, so the exact
  distinct count is kept in `state` and a snapshot never counts the table.
- `recent_batches(seq, end_offset, ids)`: the dedup window, one row per batch holding its event
  ids as a JSON array; rows whose ids all fall out of the newest `dedup_window` are deleted.
  One row per batch rather than one per id keeps a commit at two statements for the window.

A commit is one `BEGIN IMMEDIATE ... COMMIT`, so the counts, the users, the window and the
position move together or not at all. A commit whose acknowledgement was lost is recognised by
its batch token and not applied twice. The database runs in WAL mode with
`synchronous=NORMAL` by default: a commit survives the process being killed (even `kill -9`),
but the last commits before a power loss or OS crash may roll back -- together with their
position, so the replay after restart counts them again, once. Pass `synchronous="FULL"` to
survive power loss at the price of an fsync per commit.

Time windows (`sqlite_windows.py`) are written by the same transaction, so they are exactly
once like the counters; a background task prunes them behind the newest event time.

All database work runs off the event loop: a writer thread with its own connection and a
reader thread with another, so snapshots (WAL readers) never wait for a commit.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec

from wikipulse.lease import Fence, check_fence
from wikipulse.stats import Batch, Stats
from wikipulse.stores import (
    ResumePoint,
    StoreError,
    sqlite_windows,
    window_tables,
)
from wikipulse.stores.sqlite_lease import LEASE_SCHEMA, SQLiteLease, check_in_transaction
from wikipulse.stores.sqlite_thread import Checkpointer, ConnectionThread
from wikipulse.stores.window_pruner import WindowPruner
from wikipulse.window_query import SeriesQuery, SeriesRows, TopItem, TopQuery

if TYPE_CHECKING:
    from wikipulse.config import Settings

__all__ = ["SQLiteStore"]

# 3: time windows, 4: the writer's lease, 5: windows as blobs, 6: blobs in parts
_SCHEMA_VERSION = 6
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    total INTEGER NOT NULL DEFAULT 0,
    bots INTEGER NOT NULL DEFAULT 0,
    distinct_users INTEGER NOT NULL DEFAULT 0,
    position TEXT,
    ids_end INTEGER NOT NULL DEFAULT 0,
    last_batch TEXT
);
INSERT OR IGNORE INTO state (id) VALUES (1);
CREATE TABLE IF NOT EXISTS servers (
    name TEXT PRIMARY KEY, events INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recent_batches (
    seq INTEGER PRIMARY KEY, end_offset INTEGER NOT NULL, ids BLOB NOT NULL
);
"""
    + sqlite_windows.WINDOW_SCHEMA
    + LEASE_SCHEMA
)
# Rows go in as one JSON document each: one statement instead of a Python call per row
# (json_each is built into SQLite since 3.38); `WHERE true` lets the parser see the upsert.
_INSERT_USERS = "INSERT OR IGNORE INTO users (name) SELECT value FROM json_each(?)"
_UPSERT_SERVERS = (
    "INSERT INTO servers (name, events) SELECT key, value FROM json_each(?) WHERE true "
    "ON CONFLICT (name) DO UPDATE SET events = events + excluded.events"
)
_encode = msgspec.json.Encoder().encode
_decode_ids = msgspec.json.Decoder(list[str]).decode


class SQLiteStore:
    """Keep the statistics in a SQLite file, committing each batch in one transaction."""

    def __init__(
        self,
        path: str | Path,
        *,
        dedup_window: int = 100_000,
        create_schema: bool = True,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        window_retention_hours: float = 48.0,
    ) -> None:
        if dedup_window < 1:
            raise ValueError("dedup_window must be at least 1")
        self._path = str(path)
        self._window = dedup_window
        # Users this store has committed (touched only by the writer thread): a batch sends
        # only names not in here, so each user costs one INSERT for the life of the process.
        self._known_users: set[str] = set()
        self._create_schema = create_schema
        self._synchronous = synchronous
        self._writer: ConnectionThread | None = None
        self._reader: ConnectionThread | None = None
        self._checkpointer: Checkpointer | None = None
        self._pruner = WindowPruner(self._prune_chunk, int(window_retention_hours * 3600))
        # Where the windows' writer is (newest minute, sealed buckets); moved on after COMMIT.
        self._win_state = window_tables.WriterState()
        self._fence: Fence | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SQLiteStore:
        """Build the store from `sqlite_path`, `dedup_window` and `migrate_on_start`."""
        return cls(
            settings.sqlite_path,
            dedup_window=settings.dedup_window,
            create_schema=settings.migrate_on_start,
            window_retention_hours=settings.window_retention_hours,
        )

    async def migrate(self) -> None:
        """Create the tables if they do not exist yet."""
        worker = ConnectionThread(self._path, self._synchronous)
        try:
            await worker.run(_create_schema)
        finally:
            await worker.close()

    async def open(self) -> None:
        """Open the writer and reader connections, creating the schema if asked to."""
        self._writer = ConnectionThread(self._path, self._synchronous)
        if self._create_schema:
            await self._writer.run(_create_schema)
        version = await self._writer.run(lambda c: c.execute("PRAGMA user_version").fetchone()[0])
        if version != _SCHEMA_VERSION:
            await self.close()
            raise StoreError(
                f"SQLite database {self._path!r} has no up-to-date wikipulse schema "
                f"(version {version}, expected {_SCHEMA_VERSION}); run `wikipulse migrate`"
            )
        self._reader = ConnectionThread(self._path, self._synchronous)
        self._checkpointer = Checkpointer(self._path, self._synchronous)
        await self._writer.run(Checkpointer.take_over)
        self._win_state = await self._writer.run(sqlite_windows.load_state)
        span = await self._reader.run(sqlite_windows.read_span)
        self._pruner.note(span[1] if span else None)

    async def commit(self, batch: Batch) -> None:
        """Apply the batch and move the position in one transaction."""
        check_fence(self._fence)
        await self._need(self._writer).run(lambda conn: self._transact(conn, batch))
        if self._checkpointer is not None:
            self._checkpointer.nudge()
        self._pruner.note(self._win_state.newest)  # not the delta's: that would sum it again

    def lease(self) -> SQLiteLease:
        """The writer's lease, in the `lease` table (see `sqlite_lease.py`)."""
        return SQLiteLease(lambda work: self._need(self._writer).run(work))

    def set_fence(self, fence: Fence | None) -> None:
        """Check every later commit against this fence, in the commit's transaction."""
        self._fence = fence

    async def window_span(self) -> tuple[int, int] | None:
        """The oldest and newest minute kept."""
        return await self._need(self._reader).run(sqlite_windows.read_span)

    async def window_series(self, query: SeriesQuery) -> SeriesRows:
        """The rows of a timeseries, read as of one commit."""
        return await self._need(self._reader).run(lambda c: sqlite_windows.read_series(c, query))

    async def window_top(self, query: TopQuery) -> list[TopItem]:
        """The busiest keys of the window."""
        return await self._need(self._reader).run(lambda c: sqlite_windows.read_top(c, query))

    async def prune_windows(self) -> int:
        """Drop windows older than the retention period now."""
        return await self._pruner.prune()

    async def _prune_chunk(self, cutoff: int, limit: int) -> int:
        writer = self._need(self._writer)
        return await writer.run(lambda c: sqlite_windows.prune_chunk(c, cutoff, limit))

    async def snapshot(self) -> Stats:
        """Read counts and servers inside one read transaction."""
        return await self._need(self._reader).run(_read_snapshot)

    async def resume_point(self) -> ResumePoint:
        """Read the position and the newest `dedup_window` event ids, oldest first."""
        return await self._need(self._reader).run(self._read_resume_point)

    async def close(self) -> None:
        """Stop pruning, close both connections and stop their threads."""
        await self._pruner.close()
        if self._writer is not None:  # buckets still sealing: written, not read back later
            await self._writer.run(
                lambda c: sqlite_windows.write_pending(c, self._win_state, self._fence)
            )
        if self._checkpointer is not None:
            await self._checkpointer.close()
        for worker in (self._reader, self._writer):
            if worker is not None:
                await worker.close()
        self._reader = self._writer = self._checkpointer = None

    def _need(self, worker: ConnectionThread | None) -> ConnectionThread:
        if worker is None:
            raise RuntimeError("the SQLite store is not open")
        return worker

    def _transact(self, conn: sqlite3.Connection, batch: Batch) -> None:
        unknown = batch.users - self._known_users
        fence = self._fence
        conn.execute("BEGIN IMMEDIATE")
        try:
            check_in_transaction(conn, fence)
            windows = self._apply(conn, batch, unknown)
            conn.execute("COMMIT")
        except BaseException:
            # SQLite may already have rolled back by itself; a second ROLLBACK would fail.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._known_users |= unknown
        if windows is not None:
            self._win_state = windows

    def _apply(
        self, conn: sqlite3.Connection, batch: Batch, users: set[str]
    ) -> window_tables.WriterState | None:
        """Run every statement of a commit in the open transaction; return the windows' state."""
        ids_end, last_batch = conn.execute("SELECT ids_end, last_batch FROM state").fetchone()
        if batch.token == last_batch:
            return None  # committed before, but the caller never heard so: do not count it twice
        ids = batch.event_ids
        new_users = 0
        if users:
            new_users = conn.execute(_INSERT_USERS, (_encode(list(users)),)).rowcount
        if batch.by_server_name:
            conn.execute(_UPSERT_SERVERS, (_encode(batch.by_server_name),))
        windows = sqlite_windows.write(
            conn, batch.windows, self._win_state, last_batch, batch.token
        )
        if ids and batch.position is not None:
            # The window protects a resume from the position; a batch without a position
            # (an NDJSON replay) cannot be resumed from, so its ids need not be kept.
            ids_end += len(ids)
            conn.execute(
                "INSERT INTO recent_batches (end_offset, ids) VALUES (?, ?)",
                (ids_end, _encode(ids)),
            )
            trim_to = ids_end - self._window
            conn.execute("DELETE FROM recent_batches WHERE end_offset <= ?", (trim_to,))
        conn.execute(
            "UPDATE state SET total = total + ?, bots = bots + ?, distinct_users = distinct_users"
            " + ?, position = coalesce(?, position), ids_end = ?, last_batch = ?",
            (batch.total, batch.bots, new_users, batch.position, ids_end, batch.token),
        )
        return windows

    def _read_resume_point(self, conn: sqlite3.Connection) -> ResumePoint:
        conn.execute("BEGIN")
        try:
            (position,) = conn.execute("SELECT position FROM state").fetchone()
            ids: list[str] = []
            for (blob,) in conn.execute("SELECT ids FROM recent_batches ORDER BY seq"):
                ids.extend(_decode_ids(blob))
        finally:
            conn.execute("COMMIT")
        return ResumePoint(position, ids[-self._window :])


def _create_schema(conn: sqlite3.Connection) -> None:
    sqlite_windows.drop_old_tables(conn)
    conn.executescript(_SCHEMA)
    sqlite_windows.upgrade_blobs(conn)
    conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")


def _read_snapshot(conn: sqlite3.Connection) -> Stats:
    conn.execute("BEGIN")  # one read transaction: the counts and servers of one commit
    try:
        total, bots, users = conn.execute(
            "SELECT total, bots, distinct_users FROM state"
        ).fetchone()
        servers = dict(conn.execute("SELECT name, events FROM servers"))
    finally:
        conn.execute("COMMIT")
    return Stats(total, users, bots, servers)
