"""The PostgreSQL store: asyncpg, a connection pool, one transaction per batch, exactly-once.

Tables (in a configurable schema, `public` by default, set as each connection's search_path)
and the statements of a commit are in `postgres_sql.py`: the counters, the users (whose new
rows keep the distinct count exact) and the dedup window, one row of ids per batch.

Time windows (`postgres_windows.py`) are written by the same transaction, so they are exactly
once like the counters; a background task prunes them behind the newest event time.

A commit locks the state row (`FOR UPDATE`), so concurrent writers serialise, then writes
everything in one READ COMMITTED transaction. A batch whose commit succeeded but whose
acknowledgement was lost (the connection dropped during COMMIT) is recognised by its batch
token and not counted twice on retry. Snapshots run in a REPEATABLE READ, read-only transaction,
so a reader sees every table as of one commit. Lost connections surface as `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints

from wikipulse.lease import Fence, check_fence
from wikipulse.stats import Batch, Stats
from wikipulse.stores import (
    ResumePoint,
    StoreError,
    StoreUnavailable,
    postgres_windows,
    window_tables,
)
from wikipulse.stores import postgres_sql as sql
from wikipulse.stores.postgres_lease import LEASE_DDL, PostgresLease, check_in_transaction
from wikipulse.stores.window_pruner import WindowPruner
from wikipulse.window_query import SeriesQuery, SeriesRows, TopItem, TopQuery

if TYPE_CHECKING:
    from wikipulse.config import Settings

__all__ = ["PostgresStore"]

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# What a dropped, refused or shut-down server raises; a caller may retry after these.
_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TooManyConnectionsError,
)


class PostgresStore:
    """Keep the statistics in PostgreSQL, committing each batch in one transaction."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        dedup_window: int = 100_000,
        create_schema: bool = True,
        min_pool: int = 1,
        max_pool: int = 4,
        timeout: float = 10.0,
        window_retention_hours: float = 48.0,
        lease_seconds: float = 10.0,
    ) -> None:
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema must match {_SCHEMA_NAME.pattern}")
        if dedup_window < 1:
            raise ValueError("dedup_window must be at least 1")
        self._dsn = dsn
        self._schema = schema
        self._window = dedup_window
        # Users this store has committed: a batch sends only names not in here, so each user
        # costs one INSERT for the life of the process (other writers are still handled by
        # ON CONFLICT DO NOTHING).
        self._known_users: set[str] = set()
        self._create_schema = create_schema
        self._min_pool = min_pool
        self._max_pool = max_pool
        self._timeout = timeout
        self._pool: asyncpg.Pool | None = None
        # A transaction left open by a paused or cut-off writer would hold its locks, and
        # with them a standby's takeover, for ever: the server ends it after a lease period.
        self._server_settings = {
            "search_path": schema,
            "idle_in_transaction_session_timeout": str(max(1, int(lease_seconds * 1000))),
        }
        self._fence: Fence | None = None
        self._pruner = WindowPruner(self._prune_chunk, int(window_retention_hours * 3600))
        # Where the windows' writer is (newest minute, sealed buckets); moved on after COMMIT.
        self._win_state = window_tables.WriterState()

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresStore:
        """Build the store from `postgres_dsn`, `dedup_window` and `migrate_on_start`."""
        return cls(
            settings.postgres_dsn.get_secret_value(),
            dedup_window=settings.dedup_window,
            create_schema=settings.migrate_on_start,
            window_retention_hours=settings.window_retention_hours,
            lease_seconds=settings.lease_seconds,
        )

    async def migrate(self) -> None:
        """Create the schema and tables if they do not exist yet."""
        try:
            conn = await asyncpg.connect(
                self._dsn, timeout=self._timeout, server_settings=self._server_settings
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {_describe(exc)}") from exc
        try:
            await self._migrate(conn)
        finally:
            await conn.close()

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            # Two services starting together must not both create the tables at once.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self._schema)
            # The name is checked against _SCHEMA_NAME, so quoting it is enough.
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
            await conn.execute(sql.DDL)
            await postgres_windows.drop_old_tables(conn)
            await conn.execute(postgres_windows.WINDOW_DDL)
            await postgres_windows.upgrade_blobs(conn)
            await conn.execute(LEASE_DDL)

    async def open(self) -> None:
        """Create the connection pool, and the schema if asked to."""
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                server_settings=self._server_settings,
                min_size=self._min_pool,
                max_size=self._max_pool,
                timeout=self._timeout,
                command_timeout=self._timeout,
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {_describe(exc)}") from exc
        if self._create_schema:
            async with self._connection() as conn:
                await self._migrate(conn)
        try:
            span = await self.window_span()
        except asyncpg.UndefinedTableError as exc:
            await self.close()
            raise StoreError(
                f"PostgreSQL schema {self._schema!r} has no up-to-date wikipulse tables ({exc}); "
                "run `wikipulse migrate`"
            ) from exc
        async with self._connection() as conn:
            self._win_state = await postgres_windows.load_state(conn)
        self._pruner.note(span[1] if span else None)

    async def commit(self, batch: Batch) -> None:
        """Apply the batch and move the position in one transaction."""
        unknown = batch.users - self._known_users
        fence = self._fence
        check_fence(fence)
        async with self._connection() as conn, conn.transaction():
            await check_in_transaction(conn, fence)
            windows = await self._apply(conn, batch, unknown)
        self._known_users |= unknown
        if windows is not None:
            self._win_state = windows
        self._pruner.note(self._win_state.newest)  # not the delta's: that would sum it again

    async def _apply(
        self, conn: asyncpg.Connection, batch: Batch, users: set[str]
    ) -> window_tables.WriterState | None:
        """Run every statement of a commit in the open transaction; return the windows' state."""
        ids_end, last_batch = await conn.fetchrow(sql.LOCK_STATE)
        if batch.token == last_batch:
            return None  # committed before, but the caller never heard so: do not count it twice
        ids = batch.event_ids
        new_users = 0
        if users:
            # Sorted, so that two writers lock the same rows in the same order (no deadlock).
            new_users = await conn.fetchval(sql.INSERT_USERS, sorted(users))
        if batch.by_server_name:
            names = sorted(batch.by_server_name)
            counts = [batch.by_server_name[name] for name in names]
            await conn.execute(sql.UPSERT_SERVERS, names, counts)
        windows = await postgres_windows.write(
            conn, batch.windows, self._win_state, last_batch, batch.token
        )
        if ids and batch.position is not None:
            # The window protects a resume from the position; a batch without a position
            # (an NDJSON replay) cannot be resumed from, so its ids need not be kept.
            ids_end += len(ids)
            await conn.execute(sql.INSERT_RECENT, ids_end, ids)
            await conn.execute(sql.TRIM_RECENT, ids_end - self._window)
        await conn.execute(
            sql.UPDATE_STATE,
            batch.total,
            batch.bots,
            new_users,
            batch.position,
            ids_end,
            batch.token,
        )
        return windows

    def lease(self) -> PostgresLease:
        """The writer's lease, in `wp_lease` (see `postgres_lease.py`)."""
        return PostgresLease(self._connection)

    def set_fence(self, fence: Fence | None) -> None:
        """Check every later commit against this fence, in the commit's transaction."""
        self._fence = fence

    async def snapshot(self) -> Stats:
        """Read counts and servers as of one commit (REPEATABLE READ, read-only)."""
        async with self._read_only() as conn:
            row = await conn.fetchrow("SELECT total, bots, distinct_users FROM wp_state")
            servers = await conn.fetch("SELECT name, events FROM wp_servers")
        return Stats(
            row["total"], row["distinct_users"], row["bots"], {r[0]: r[1] for r in servers}
        )

    async def resume_point(self) -> ResumePoint:
        """Read the position and the newest `dedup_window` event ids, oldest first."""
        async with self._read_only() as conn:
            position = await conn.fetchval("SELECT position FROM wp_state")
            rows = await conn.fetch("SELECT ids FROM wp_recent ORDER BY seq")
        ids = [event_id for row in rows for event_id in row[0]]
        return ResumePoint(position, ids[-self._window :])

    async def window_span(self) -> tuple[int, int] | None:
        """The oldest and newest minute kept."""
        async with self._read_only() as conn:
            return await postgres_windows.read_span(conn)

    async def window_series(self, query: SeriesQuery) -> SeriesRows:
        """The rows of a timeseries, read as of one commit."""
        async with self._read_only() as conn:
            return await postgres_windows.read_series(conn, query)

    async def window_top(self, query: TopQuery) -> list[TopItem]:
        """The busiest keys of the window."""
        async with self._read_only() as conn:
            return await postgres_windows.read_top(conn, query)

    async def prune_windows(self) -> int:
        """Drop windows older than the retention period now."""
        return await self._pruner.prune()

    async def _prune_chunk(self, cutoff: int, limit: int) -> int:
        async with self._connection() as conn:
            return await postgres_windows.prune_chunk(conn, cutoff, limit)

    async def close(self) -> None:
        """Stop pruning, then close the pool, waiting for connections in use to be released."""
        await self._pruner.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @asynccontextmanager
    async def _read_only(self) -> AsyncIterator[Any]:
        """A pooled connection in a read-only REPEATABLE READ transaction: one commit's view."""
        async with (
            self._connection() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield conn

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection; connection failures inside become `StoreUnavailable`."""
        if self._pool is None:
            raise RuntimeError("the PostgreSQL store is not open")
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"PostgreSQL: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
