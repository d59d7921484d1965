"""The SQL writer's running sums (`window_sums`): sealing from memory stays exactly once.

The sums are changed in place by a commit and trusted only while the table's last commit is
the one that made them; these tests break that trust in every way a process can (a commit
rolled back, another writer committing in between, a restart in the middle of an hour, late
events for sealed buckets) and compare every window with an independent count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.stores.test_contract import _feed, opened
from tests.stores.test_windows_contract import _assert_windows_exact
from tests.support.generated import generate
from wikipulse.ingest import Pipeline
from wikipulse.stats import Batch
from wikipulse.stores import StoreUnavailable, window_writer
from wikipulse.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def hours_lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """4000 events over ~2.2 hours with hot pages, the last 600 late (newest first)."""
    out = tmp_path_factory.mktemp("sums")
    lines = generate(out, 4000, seed=11, canaries=0, page_skew=4, rate=0.5).read_bytes()
    ordered = lines.splitlines()
    return ordered[:3400] + ordered[3400:][::-1]


def _pipeline(store: Any, max_events: int = 40) -> Pipeline:
    return Pipeline(store, max_events=max_events, dedup_window=5000, retry_initial=0.001)


class _FlakySQLite(SQLiteStore):
    """Every other commit fails once after writing all its rows, and is rolled back."""

    attempts = 0
    failed = 0

    def _apply(self, conn: Any, batch: Batch, users: set[str]) -> Any:
        result = super()._apply(conn, batch, users)
        self.attempts += 1
        if self.attempts % 3 == 1:
            self.failed += 1
            raise StoreUnavailable("disk I/O error")  # the pipeline retries the batch
        return result


async def test_rolled_back_commits_leave_the_windows_exact(
    tmp_path: Path, hours_lines: list[bytes]
) -> None:
    """A commit that wrote its windows (and changed the sums) then rolled back, retried, counts
    each event once: the sums of a failed commit are never used again."""
    store = _FlakySQLite(tmp_path / "flaky.db", dedup_window=5000)
    async with opened(store):
        await _feed(_pipeline(store), hours_lines)
        assert store.failed > 30
        await _assert_windows_exact(store, hours_lines)  # type: ignore[arg-type]


@pytest.mark.postgres
async def test_postgres_rolled_back_commits_leave_the_windows_exact(
    postgres_schema: str, hours_lines: list[bytes]
) -> None:
    """The same on PostgreSQL (the same writer, awaited)."""
    from tests.stores.conftest import POSTGRES_DSN
    from wikipulse.stores.postgres import PostgresStore

    calls = {"n": 0}

    class Flaky(PostgresStore):
        async def _apply(self, conn: Any, batch: Batch, users: set[str]) -> Any:
            result = await super()._apply(conn, batch, users)
            calls["n"] += 1
            if calls["n"] % 3 == 1:
                raise StoreUnavailable("connection reset")
            return result

    store = Flaky(POSTGRES_DSN, schema=postgres_schema, dedup_window=5000)
    async with opened(store):
        await _feed(_pipeline(store, max_events=100), hours_lines)
        assert calls["n"] > 20
        await _assert_windows_exact(store, hours_lines)  # type: ignore[arg-type]


async def test_two_writers_taking_turns_stay_exact(
    tmp_path: Path, hours_lines: list[bytes]
) -> None:
    """Two stores on one file commit in turns (as a writer that lost its lease and one that
    took over would): each sees that the other committed and rebuilds its sums."""
    path = tmp_path / "two.db"
    first, second = SQLiteStore(path, dedup_window=5000), SQLiteStore(path, dedup_window=5000)
    async with opened(first), opened(second):
        pipelines = (_pipeline(first), _pipeline(second))
        chunk = 170  # several commits each, so sums are both kept and found stale
        for turn, start in enumerate(range(0, len(hours_lines), chunk)):
            pipeline = pipelines[turn % 2]
            for index in range(start, min(start + chunk, len(hours_lines))):
                await pipeline.add(hours_lines[index], str(index))
            await pipeline.flush()
        await _assert_windows_exact(first, hours_lines)  # type: ignore[arg-type]


@pytest.mark.parametrize("stops", [(700, 1500, 2300, 3600), (1111, 3455)])
async def test_restarts_in_the_middle_of_hours_stay_exact(
    tmp_path: Path, hours_lines: list[bytes], stops: tuple[int, ...]
) -> None:
    """Closing and opening the store mid-hour (and amid the late events) rebuilds the sums
    from the table; every window stays equal to the independent count."""
    path = tmp_path / "restarts.db"
    start = 0
    for stop in (*stops, len(hours_lines)):
        async with opened(SQLiteStore(path, dedup_window=5000)) as store:
            pipeline = _pipeline(store)
            for index in range(start, stop):
                await pipeline.add(hours_lines[index], str(index))
            await pipeline.flush()
        start = stop
    async with opened(SQLiteStore(path, dedup_window=5000)) as store:
        await _assert_windows_exact(store, hours_lines)  # type: ignore[arg-type]


async def test_in_order_events_are_sealed_from_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hours_lines: list[bytes]
) -> None:
    """Fed in order from an empty table, no bucket is ever rolled up by reading its finer
    buckets back (the cost the sums remove), and the windows are exact."""

    def read_back(g: int, bucket: int) -> Any:
        raise AssertionError(f"bucket {bucket} of {g} was read back to be sealed")

    monkeypatch.setattr(window_writer, "_seal", read_back)
    in_order = hours_lines[:3400]
    async with opened(SQLiteStore(tmp_path / "memory.db", dedup_window=5000)) as store:
        await _feed(_pipeline(store), in_order)
        await _assert_windows_exact(store, in_order)  # type: ignore[arg-type]
