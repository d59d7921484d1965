"""Store-specific durability: a real process kill for SQLite, an unreachable PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest

from tests.stores.test_windows_contract import _assert_windows_exact
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
        await _assert_windows_exact(store, events)  # the windows rode in the same commits
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
