"""One SQLite connection used only from one dedicated thread, its errors mapped to the port's."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from wikipulse.stores import StoreError, StoreUnavailable

__all__ = ["ConnectionThread"]

_T = TypeVar("_T")
# Primary result codes worth waiting out: busy, locked, I/O error, disk full.
_TRANSIENT = {5, 6, 10, 13}


class ConnectionThread:
    """One connection used only from one dedicated thread."""

    def __init__(self, path: str, synchronous: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wikipulse-sqlite")
        self._path = path
        self._synchronous = synchronous
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=10.0)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        # A larger cache and rarer checkpoints: the users index is written all over, and a
        # page dirtied by many commits is then copied back to the database once, not each time.
        conn.execute("PRAGMA cache_size = -65536")
        conn.execute("PRAGMA wal_autocheckpoint = 10000")
        return conn

    async def run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `work` with the connection on the worker thread."""

        def call() -> _T:
            if self._conn is None:
                self._conn = self._connect()
            return work(self._conn)

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, call)
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if code in _TRANSIENT:  # locked, busy, disk I/O or full: worth retrying later
                raise StoreUnavailable(f"SQLite: {exc}") from exc
            raise StoreError(f"SQLite database {self._path!r}: {exc}") from exc

    async def close(self) -> None:
        """Close the connection on its own thread, then stop the thread."""

        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, close)
        self._executor.shutdown(wait=False)
