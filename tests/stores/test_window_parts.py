"""The SQL stores' windows in parts: a commit appends, readers merge, closed minutes compact."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.stores.test_contract import _feed, opened
from tests.stores.test_windows_contract import _assert_windows_exact
from tests.support.counting import expected_stats
from tests.support.generated import generate
from tests.support.windows_expected import counted_events
from wikipulse.ingest import Pipeline
from wikipulse.stores.sqlite import SQLiteStore
from wikipulse.stores.window_tables import GRACE
from wikipulse.stores.window_writer import MAX_PARTS

pytestmark = pytest.mark.anyio

#: 5 events/s of event time: a minute holds ~300 events, i.e. ~30 commits of 10.
RATE = 5.0


@pytest.fixture(scope="module")
def dense_lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """2000 events over ~7 minutes with hot pages and no canaries."""
    out = tmp_path_factory.mktemp("parts")
    return generate(out, 2000, seed=5, canaries=0, page_skew=4, rate=RATE).read_bytes().splitlines()


def _sqlite_parts(path: Path, g: int) -> dict[int, int]:
    """Parts per bucket of granularity `g`, counted in the file (dimension `t`)."""
    conn = sqlite3.connect(path)
    try:
        sql = "SELECT bucket, count(*) FROM win_parts WHERE g = ? AND dim = 't' GROUP BY bucket"
        return dict(conn.execute(sql, (g,)).fetchall())
    finally:
        conn.close()


async def _postgres_parts(schema: str, g: int) -> dict[int, int]:
    """Parts per bucket of granularity `g` in the schema (dimension `t`)."""
    import asyncpg  # type: ignore[import-untyped]

    from tests.stores.conftest import POSTGRES_DSN

    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        await conn.execute(f'SET search_path TO "{schema}"')  # a fixture's name
        rows = await conn.fetch(
            "SELECT bucket, count(*) FROM wp_win_parts WHERE g = $1 AND dim = 't' GROUP BY bucket",
            g,
        )
    finally:
        await conn.close()
    return {r[0]: r[1] for r in rows}


def _newest_minute(lines: list[bytes]) -> int:
    newest = max(e.second for e in counted_events(lines))
    return newest - newest % 60


def _assert_compacted_behind(parts: dict[int, int], newest: int) -> None:
    """Minutes that ended GRACE before the newest minute hold one part; a newer one more."""
    edge = newest - GRACE
    closed = {m: n for m, n in parts.items() if m < edge - edge % 60}
    assert closed
    assert set(closed.values()) == {1}, closed
    assert max(n for m, n in parts.items() if m not in closed) > 1, parts


async def test_sqlite_open_minutes_in_parts_read_exact(
    tmp_path: Path, dense_lines: list[bytes]
) -> None:
    """Small commits leave the open minutes in many parts that readers sum exactly, and every
    minute GRACE behind the newest compacted into one part."""
    path = tmp_path / "parts.db"
    async with opened(SQLiteStore(path)) as store:
        await _feed(Pipeline(store, max_events=10, dedup_window=5000), dense_lines)
        _assert_compacted_behind(_sqlite_parts(path, 60), _newest_minute(dense_lines))
        await _assert_windows_exact(store, dense_lines)  # type: ignore[arg-type]


@pytest.mark.postgres
async def test_postgres_open_minutes_in_parts_read_exact(
    postgres_schema: str, dense_lines: list[bytes]
) -> None:
    """PostgreSQL runs the same parts: open minutes in parts, closed ones compacted, exact."""
    from tests.stores.conftest import POSTGRES_DSN
    from wikipulse.stores.postgres import PostgresStore

    async with opened(PostgresStore(POSTGRES_DSN, schema=postgres_schema)) as store:
        await _feed(Pipeline(store, max_events=10, dedup_window=5000), dense_lines)
        parts = await _postgres_parts(postgres_schema, 60)
        _assert_compacted_behind(parts, _newest_minute(dense_lines))
        await _assert_windows_exact(store, dense_lines)  # type: ignore[arg-type]


async def test_late_parts_stay_below_the_cap_and_exact(tmp_path: Path) -> None:
    """Events in reverse order make every closed bucket take part after part: none holds
    `MAX_PARTS` parts after a commit, and the answers stay exact."""
    path = generate(tmp_path, 3000, seed=6, canaries=0, page_skew=4, rate=1.0)
    lines = path.read_bytes().splitlines()[::-1]  # ~50 minutes, newest first
    db = tmp_path / "late.db"
    async with opened(SQLiteStore(db)) as store:
        await _feed(Pipeline(store, max_events=3, dedup_window=5000), lines)
        for g in (60, 300):
            parts = _sqlite_parts(db, g)
            assert parts
            assert 1 < max(parts.values()) < MAX_PARTS, (g, parts)
        await _assert_windows_exact(store, lines)  # type: ignore[arg-type]


_CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    from wikipulse.ingest import Pipeline
    from wikipulse.stores import window_writer
    from wikipulse.stores.sqlite import SQLiteStore

    def dies(*args):
        os._exit(9)  # like kill -9: parts written in this transaction, compaction next
        yield

    window_writer.compact = dies

    async def main():
        store = SQLiteStore(sys.argv[1], dedup_window=5000)
        await store.open()
        pipeline = Pipeline(store, max_events=10, dedup_window=5000)
        for index, line in enumerate(open(sys.argv[2], "rb").read().splitlines()):
            await pipeline.add(line, str(index))
        await pipeline.flush()

    asyncio.run(main())
    """
)


@pytest.mark.slow
async def test_sqlite_killed_between_parts_and_compaction_resumes_exactly(
    tmp_path: Path, dense_lines: list[bytes]
) -> None:
    """A process killed inside the commit that would compact its first minute leaves that
    minute in parts; the next process compacts it and every window counts each event once."""
    source = tmp_path / "events.ndjson"
    source.write_bytes(b"\n".join(dense_lines))
    db = tmp_path / "killed.db"
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", _CHILD, str(db), str(source))
    assert await child.wait() == 9
    first = min(_sqlite_parts(db, 60))
    assert _sqlite_parts(db, 60)[first] > 1  # the kill came before its compaction
    store: Any = SQLiteStore(db, dedup_window=5000)
    async with opened(store):
        pipeline = Pipeline(store, max_events=10, dedup_window=5000)
        position = await pipeline.resume()
        assert position is not None
        assert (await store.snapshot()).total == int(position) + 1  # whole commits only
        await _feed(pipeline, dense_lines, int(position) + 1)
        assert (await store.snapshot()).to_dict() == expected_stats(dense_lines)
        _assert_compacted_behind(_sqlite_parts(db, 60), _newest_minute(dense_lines))
        await _assert_windows_exact(store, dense_lines)


@pytest.mark.parametrize("head", [1, 3, 50])
async def test_sqlite_tops_through_small_index_heads_are_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, head: int
) -> None:
    """Sealed buckets' indexes with heads of a few keys (most keys in the tails, looked up)
    still give top lists equal to the independent count, late parts included."""
    from wikipulse import window_index

    monkeypatch.setattr(window_index, "HEAD", head)
    path = generate(tmp_path, 4000, seed=8, canaries=0, page_skew=4, rate=0.5)
    lines = path.read_bytes().splitlines()  # ~2.2 hours
    lines = lines[:3000] + lines[3000:][::-1]  # the last part late, in reverse
    db = tmp_path / "index.db"
    async with opened(SQLiteStore(db)) as store:
        await _feed(Pipeline(store, max_events=40, dedup_window=5000), lines)
        conn = sqlite3.connect(db)
        indexes = conn.execute("SELECT count(*) FROM win_parts WHERE dim IN ('U', 'P')")
        assert indexes.fetchone()[0] > 20
        conn.close()
        await _assert_windows_exact(store, lines)  # type: ignore[arg-type]
