"""Upgrading a database from the row-per-key window layout: the old tables go, counters stay."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from tests.stores.test_contract import _feed, _pipeline
from tests.stores.test_windows_contract import _assert_windows_exact
from tests.support.generated import generate
from wikipulse.stores import StoreError
from wikipulse.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


def _make_version_3(path: Path) -> None:
    """A database as version 3 left it: an old window table with rows, 42 events counted."""
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE win_counts (g INTEGER, bucket INTEGER, server TEXT, type TEXT, "
        "events INTEGER, bots INTEGER, added INTEGER, removed INTEGER)"
    )
    conn.execute("INSERT INTO win_counts VALUES (60, 0, 'a', 'edit', 1, 0, 0, 0)")
    conn.execute("DROP TABLE win_parts")
    conn.execute("UPDATE state SET total = 42")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()


async def test_sqlite_version_3_is_migrated_on_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Opening migrates: old window tables dropped (and logged), counters kept, windows work."""
    path = tmp_path / "old.db"
    await SQLiteStore(path).migrate()
    _make_version_3(path)
    with pytest.raises(StoreError, match="wikipulse migrate"):
        await SQLiteStore(path, create_schema=False).open()
    lines = generate(tmp_path, 400, seed=3, page_skew=4, rate=0.2).read_bytes().splitlines()
    store = SQLiteStore(path)
    with caplog.at_level(logging.WARNING):
        await store.open()
    try:
        assert "dropped the old window tables (win_counts)" in caplog.text
        assert (await store.snapshot()).total == 42
        await _feed(_pipeline(store), lines)
        await _assert_windows_exact(store, lines)
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert "win_counts" not in tables
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 6
    conn.close()


@pytest.mark.postgres
async def test_postgres_migrate_drops_the_old_window_tables(postgres_schema: str) -> None:
    """`migrate` on a schema holding the old wp_win_* tables drops them and creates the new."""
    import asyncpg  # type: ignore[import-untyped]

    from tests.stores.conftest import POSTGRES_DSN
    from wikipulse.stores.postgres import PostgresStore

    await PostgresStore(POSTGRES_DSN, schema=postgres_schema).migrate()
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        await conn.execute(f'CREATE TABLE "{postgres_schema}".wp_win_pages (g integer)')
        await PostgresStore(POSTGRES_DSN, schema=postgres_schema).migrate()
        names = {
            r[0]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1", postgres_schema
            )
        }
    finally:
        await conn.close()
    assert "wp_win_pages" not in names
    assert "wp_win_parts" in names


def _make_version_5(path: Path) -> None:
    """Turn the windows into version 5's layout: one blob per bucket in `win_blobs`."""
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM win_parts WHERE part > 0").fetchone()[0] == 0
    conn.execute(
        "CREATE TABLE win_blobs (g INTEGER NOT NULL, dim TEXT NOT NULL, bucket INTEGER NOT NULL, "
        "data BLOB NOT NULL, PRIMARY KEY (g, dim, bucket))"
    )
    conn.execute("INSERT INTO win_blobs SELECT g, dim, bucket, data FROM win_parts")
    conn.execute("DROP TABLE win_parts")
    conn.execute("PRAGMA user_version = 5")
    conn.commit()
    conn.close()


async def test_sqlite_version_5_windows_are_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Version 5's blobs become part 0 of each bucket: the windows stay exact, more can land."""
    path = tmp_path / "v5.db"
    lines = generate(tmp_path, 800, seed=4, page_skew=4, rate=0.2).read_bytes().splitlines()
    first, second = lines[:500], lines[500:]
    store = SQLiteStore(path)
    await store.open()
    try:
        await _feed(_pipeline(store, max_events=1000), first)  # one commit: one part a bucket
    finally:
        await store.close()
    _make_version_5(path)
    store = SQLiteStore(path)
    with caplog.at_level(logging.WARNING):
        await store.open()
    try:
        assert "win_blobs into win_parts" in caplog.text
        await _assert_windows_exact(store, first)
        pipeline = _pipeline(store)
        for index, line in enumerate(second):
            await pipeline.add(line, str(len(first) + index))
        await pipeline.flush()
        await _assert_windows_exact(store, first + second)
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 6
    conn.close()
