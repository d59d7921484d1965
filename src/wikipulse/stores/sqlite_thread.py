"""One SQLite connection used only from one dedicated thread, its errors mapped to the port's;
and the checkpoints of the write-ahead log, run from a thread of their own."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from wikipulse.stores import StoreError, StoreUnavailable

__all__ = ["PAGE_SIZE", "Checkpointer", "ConnectionThread"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
#: The page size of a database this makes (see `ConnectionThread._connect`).
PAGE_SIZE = 16384
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
        # 16 KiB pages for a new database (an existing one keeps its own): the window blobs are
        # large, and each page written costs the same whatever its size. Measured 2026-12-02
        # (2-core VM): replay of 500,000 events 1.37-1.38 s at 4 KiB, 1.31-1.33 at 16 KiB,
        # 1.27-1.32 at 64 KiB; but small live commits rewrite whole pages: written at 1,000
        # events/s 1.31, 1.71 and 3.11 MB/s.
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
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


class Checkpointer:
    """Copies the write-ahead log into the database from its own connection and thread.

    SQLite checkpoints inside the commit that takes the log past `wal_autocheckpoint`, on the
    writer's thread: a replay of 500,000 events writes ~120 MB of time windows, and its
    commits spent 1.3 s in such checkpoints (copying pages and waiting for the disk: 0.5 s
    with the database in memory), holding up the next commit. The writer's connection checkpoints
    nothing itself; after each commit it calls `nudge`, and this thread runs a PASSIVE
    checkpoint (which waits for no reader or writer) at most every `interval` seconds, while
    the writer goes on. Closing the last connection checkpoints what is left, as before.
    A checkpoint moves no data a reader or the next start could miss: the log holds it
    until then either way.
    """

    def __init__(self, path: str, synchronous: str, interval: float = 0.2) -> None:
        self._path, self._synchronous, self._interval = path, synchronous, interval
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="wikipulse-sqlite-checkpoints", daemon=True
        )
        self._thread.start()

    @staticmethod
    def take_over(writer: sqlite3.Connection) -> None:
        """Stop the writer's connection from checkpointing in its commits."""
        writer.execute("PRAGMA wal_autocheckpoint = 0")

    def nudge(self) -> None:
        """A commit added to the log: checkpoint soon."""
        self._wake.set()

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=10.0)
        try:
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            while True:
                self._wake.wait()
                if self._stopping.is_set():
                    return
                self._wake.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the next nudge tries again
                    log.warning("SQLite: a checkpoint of %s failed: %s", self._path, exc)
                if self._stopping.wait(self._interval):
                    return
        finally:
            conn.close()

    async def close(self) -> None:
        """Stop the thread (after a checkpoint under way) and close its connection."""
        self._stopping.set()
        self._wake.set()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
