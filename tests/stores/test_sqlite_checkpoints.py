"""SQLite's write-ahead log is copied into the database by the checkpointer's thread."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tests.support.counting import expected_stats
from wikipulse.ingest import Pipeline
from wikipulse.stores.sqlite import SQLiteStore
from wikipulse.stores.sqlite_thread import PAGE_SIZE

pytestmark = pytest.mark.anyio


def _in_database_file(db: Path) -> int:
    """The total as the database file alone holds it (immutable: the log is not read); -1
    while the file does not even hold the tables."""
    conn = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        return int(conn.execute("SELECT total FROM state").fetchone()[0])
    except sqlite3.OperationalError:
        return -1
    finally:
        conn.close()


async def test_commits_reach_the_database_file_without_the_writer_checkpointing(
    tmp_path: Path, events: list[bytes]
) -> None:
    """A few small commits stay far below SQLite's automatic checkpoint (10,000 pages), so
    only the checkpointer's thread can have copied them into the database file; the
    writer's own connection checkpoints nothing. Closing leaves everything in the file."""
    db = tmp_path / "stats.db"
    store = SQLiteStore(db, dedup_window=5000)
    await store.open()
    try:
        assert store._writer is not None
        pages = await store._writer.run(
            lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
        assert pages == 0
        pipeline = Pipeline(store, max_events=100, dedup_window=5000)
        for index, line in enumerate(events[:300]):
            await pipeline.add(line, str(index))
        await pipeline.flush()
        expected = expected_stats(events[:300])["total"]
        for _ in range(100):  # the checkpointer runs within `interval` (0.2 s) of a commit
            if _in_database_file(db) == expected:
                break
            await asyncio.sleep(0.05)
        assert _in_database_file(db) == expected
    finally:
        await store.close()
    assert store._checkpointer is None
    assert not (tmp_path / "stats.db-wal").exists()  # the last connection checkpointed all
    assert _in_database_file(db) == expected


def _page_size(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()


async def test_a_new_database_has_large_pages_and_an_existing_one_keeps_its_own(
    tmp_path: Path, events: list[bytes]
) -> None:
    """A database the store creates has `PAGE_SIZE` pages; one made before with SQLite's
    default (4 KiB) keeps them, and the store counts into it all the same."""
    new, old = tmp_path / "new.db", tmp_path / "old.db"
    sqlite3.connect(old).execute("CREATE TABLE made_before (x)").connection.close()
    assert _page_size(old) == 4096
    for db in (new, old):
        store = SQLiteStore(db, dedup_window=5000)
        await store.open()
        try:
            pipeline = Pipeline(store, max_events=100, dedup_window=5000)
            for index, line in enumerate(events[:200]):
                await pipeline.add(line, str(index))
            await pipeline.flush()
            assert (await store.snapshot()).total == expected_stats(events[:200])["total"]
        finally:
            await store.close()
    assert _page_size(new) == PAGE_SIZE == 16384
    assert _page_size(old) == 4096
