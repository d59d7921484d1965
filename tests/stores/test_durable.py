"""Store-specific durability: a real process kill for SQLite, an unreachable PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.counting import expected_stats
from wikipulse.config import load_settings
from wikipulse.ingest import Pipeline
from wikipulse.stores import StoreUnavailable, make_store, migrate
from wikipulse.stores.postgres import PostgresStore
from wikipulse.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

_CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    from wikipulse.ingest import Pipeline
    from wikipulse.stores.sqlite import SQLiteStore

    class Dies(SQLiteStore):
        commits = 0
        def _apply(self, conn, batch, users):
            super()._apply(conn, batch, users)
            Dies.commits += 1
            if Dies.commits == 3:
                os._exit(9)  # like kill -9: inside the transaction, before COMMIT

    async def main():
        store = Dies(sys.argv[1], dedup_window=5000)
        await store.open()
        pipeline = Pipeline(store, max_events=200, dedup_window=5000)
        for index, line in enumerate(open(sys.argv[2], "rb").read().splitlines()):
            await pipeline.add(line, str(index))
        await pipeline.flush()

    asyncio.run(main())
    """
)


@pytest.mark.slow
async def test_sqlite_killed_inside_a_commit_resumes_without_loss_or_double(
    tmp_path: Path, events: list[bytes]
) -> None:
    """A process that dies inside a SQLite commit leaves the last commit; resuming counts once."""
    source = tmp_path / "events.ndjson"
    source.write_bytes(b"\n".join(events))
    db = tmp_path / "stats.db"
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", _CHILD, str(db), str(source))
    assert await child.wait() == 9
    store = SQLiteStore(db, dedup_window=5000)
    await store.open()
    try:
        assert (await store.snapshot()).total == 400  # two whole commits of 200
        pipeline = Pipeline(store, max_events=200, dedup_window=5000)
        position = await pipeline.resume()
        assert position is not None
        for index in range(int(position) + 1, len(events)):
            await pipeline.add(events[index], str(index))
        await pipeline.flush()
        assert (await store.snapshot()).to_dict() == expected_stats(events)
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_where_nothing_listens_is_unavailable() -> None:
    """Opening a PostgreSQL store on a port where nothing listens raises StoreUnavailable."""
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/test", timeout=2)
    with pytest.raises(StoreUnavailable, match="PostgreSQL"):
        await store.open()


async def test_migrate_then_make_store_opens_without_creating_schema(tmp_path: Path) -> None:
    """`migrate` creates the SQLite schema that a store opened without migration then uses."""
    path = str(tmp_path / "m.db")
    settings = load_settings(environ={}, env_file=None, store="sqlite", sqlite_path=path)
    await migrate(settings)
    await migrate(settings)  # idempotent
    store = make_store(settings.model_copy(update={"migrate_on_start": False}))
    assert isinstance(store, SQLiteStore)
    await store.open()
    try:
        assert (await store.snapshot()).total == 0
    finally:
        await store.close()


async def test_sqlite_without_schema_and_migration_off_refuses_to_open(tmp_path: Path) -> None:
    """A SQLite store told not to migrate refuses a database without the schema."""
    store = SQLiteStore(tmp_path / "empty.db", create_schema=False)
    with pytest.raises(RuntimeError, match="wikipulse migrate"):
        await store.open()


@pytest.mark.anyio
async def test_a_database_of_the_first_schema_is_upgraded(tmp_path: Path) -> None:
    """A SQLite file made by schema 1 (retries keyed by event id) is upgraded and keeps counting."""
    import sqlite3

    from wikipulse.stats import Batch

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE state (id INTEGER PRIMARY KEY CHECK (id = 1), total INTEGER NOT NULL
            DEFAULT 0, bots INTEGER NOT NULL DEFAULT 0, distinct_users INTEGER NOT NULL
            DEFAULT 0, position TEXT, ids_end INTEGER NOT NULL DEFAULT 0, last_event_id TEXT);
        INSERT INTO state (id, total, bots, distinct_users, position) VALUES (1, 5, 1, 1, 'p5');
        CREATE TABLE servers (name TEXT PRIMARY KEY, events INTEGER NOT NULL) WITHOUT ROWID;
        INSERT INTO servers VALUES ('a.org', 5);
        CREATE TABLE users (name TEXT PRIMARY KEY) WITHOUT ROWID;
        INSERT INTO users VALUES ('U1');
        CREATE TABLE recent_batches (seq INTEGER PRIMARY KEY, end_offset INTEGER NOT NULL,
            ids BLOB NOT NULL);
        PRAGMA user_version = 1;
        """
    )
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        batch = Batch(total=1, by_server_name={"a.org": 1}, users={"U2"}, position="p6")
        batch.event_ids.append("e6")
        await store.commit(batch)
        snapshot = await store.snapshot()
        point = await store.resume_point()
    finally:
        await store.close()
    assert (snapshot.total, snapshot.distinct_users, dict(snapshot.by_server_name)) == (
        6,
        2,
        {"a.org": 6},
    )
    assert point.position == "p6"
