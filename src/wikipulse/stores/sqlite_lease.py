"""The writer's lease in SQLite: one row, checked inside every commit's transaction.

For several `wikipulse ingest` processes on one machine sharing one database file. The
expiry is on the machine's wall clock (every process reads the same one). Each operation,
and each commit's check, runs in a `BEGIN IMMEDIATE` transaction, which takes the
database's write lock: a takeover and a commit are strictly ordered, and a commit that finds
another token (or an expired lease) raises `LeaseLost` and rolls back all it wrote.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from wikipulse.lease import Fence, LeaseInfo, judge

__all__ = ["LEASE_SCHEMA", "SQLiteLease", "check_in_transaction"]

_T = TypeVar("_T")

LEASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT,
    token INTEGER NOT NULL DEFAULT 0,
    expires_at REAL
);
INSERT OR IGNORE INTO lease (id) VALUES (1);
"""

Run = Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]


def _row(conn: sqlite3.Connection) -> tuple[str | None, int, float | None]:
    row = conn.execute("SELECT holder, token, expires_at FROM lease WHERE id = 1").fetchone()
    if row is None:
        return None, 0, None
    return row[0], int(row[1]), row[2]


def check_in_transaction(conn: sqlite3.Connection, fence: Fence | None) -> None:
    """Inside a commit's transaction: raise `LeaseLost` unless this commit may write.

    With a fence, the row must name its holder and token and not have expired; without one
    (`serve`, a replay), nobody may hold an unexpired lease.
    """
    holder, token, expires = _row(conn)
    live = expires is not None and expires > time.time()
    judge(fence, holder, token, live)


def _immediate(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], _T]) -> _T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


class SQLiteLease:
    """The `Lease` port on a SQLite store's writer connection."""

    def __init__(self, run: Run) -> None:
        self._run = run

    async def acquire(self, holder: str, seconds: float) -> int | None:
        """Take the lease if free or expired; the new token, else None."""

        def take(conn: sqlite3.Connection) -> int | None:
            current, token, expires = _row(conn)
            now = time.time()
            if current is not None and expires is not None and expires > now:
                return None
            conn.execute(
                "UPDATE lease SET holder = ?, token = ?, expires_at = ? WHERE id = 1",
                (holder, token + 1, now + seconds),
            )
            return token + 1

        got: int | None = await self._run(lambda c: _immediate(c, take))
        return got

    async def renew(self, holder: str, token: int, seconds: float) -> bool:
        """Extend the lease if still held with this token and not expired."""

        def extend(conn: sqlite3.Connection) -> bool:
            now = time.time()
            cursor = conn.execute(
                "UPDATE lease SET expires_at = ? "
                "WHERE id = 1 AND holder = ? AND token = ? AND expires_at > ?",
                (now + seconds, holder, token, now),
            )
            return cursor.rowcount == 1

        renewed: bool = await self._run(lambda c: _immediate(c, extend))
        return renewed

    async def release(self, holder: str, token: int) -> None:
        """Expire the lease now if still held with this token."""

        def expire(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE lease SET expires_at = ? WHERE id = 1 AND holder = ? AND token = ?",
                (time.time(), holder, token),
            )

        await self._run(lambda c: _immediate(c, expire))

    async def info(self) -> LeaseInfo:
        """The live holder (None if free or expired) and the newest token."""

        def read(conn: sqlite3.Connection) -> LeaseInfo:
            holder, token, expires = _row(conn)
            live = expires is not None and expires > time.time()
            return LeaseInfo(holder if live else None, token)

        info: LeaseInfo = await self._run(read)
        return info
