"""The SQL writer's running sums (`window_sums`): sealing from memory stays exactly once.

The sums are changed in place by a commit and trusted only while the table's last commit is
the one that made them; these tests break that trust in every way a process can (a commit
rolled back, another writer committing in between, a restart in the middle of an hour, late
events for sealed buckets) and compare every window with an independent count.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.stores.test_contract import _feed, opened
from tests.stores.test_windows_contract import _assert_windows_exact
from tests.support.generated import generate
from tests.support.windows_expected import counted_events
from wikipulse import window_minutes
from wikipulse.ingest import Pipeline
from wikipulse.replay import parallel
from wikipulse.stats import Batch
from wikipulse.stores import StoreUnavailable, window_held, window_writer
from wikipulse.stores.sqlite import SQLiteStore
from wikipulse.window_delta import WindowDelta

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


class _WorkerSQLite(SQLiteStore):
    """Every batch's windows arrive summed per minute as a replay worker sends them (blobs):
    the writer holds them as blobs and seals on its sealing thread (`window_held`)."""

    def _apply(self, conn: Any, batch: Batch, users: set[str]) -> Any:
        recorded = None if batch.windows.minutes else batch.windows.recorded()  # a retry: summed
        if recorded:
            worker = WindowDelta()
            worker.raw = list(recorded)
            batch.windows = parallel._summed(worker, [])
        return super()._apply(conn, batch, users)


#: The stores the writer's scenarios run on: live batches, and a replay's worker minutes.
_STORES = [SQLiteStore, _WorkerSQLite]


@pytest.fixture(params=["c", "python"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The writer with the C extension (where built), and as installed without a compiler:
    every bucket summed, ranked and indexed in Python."""
    if request.param == "python":
        for name in ("_merge", "_index"):
            monkeypatch.setattr(window_held, name, None)
        for name in ("_c_minutes", "_c_decoded"):
            monkeypatch.setattr(window_minutes, name, None)
    return str(request.param)


def _assert_sealed_exact(path: Path, lines: list[bytes]) -> None:
    """Every 5-minute bucket and hour that closed GRACE before the newest event is sealed (a
    part 0 with its top-list indexes, its pages kept in theirs only) and, with any late
    parts, holds exactly its events."""
    events = counted_events(lines)
    newest = max(e.second for e in events)
    conn = sqlite3.connect(path)
    try:
        for g in (300, 3600):
            rows = conn.execute(
                "SELECT bucket, part, dim, data FROM win_parts WHERE g = ?", (g,)
            ).fetchall()
            dims: dict[int, set[str]] = {}
            totals: dict[int, dict[str, int]] = {}
            for bucket, part, dim, data in rows:
                dims.setdefault(bucket, set()).add(f"{dim}{part}")
                if dim == "t":
                    have = totals.setdefault(bucket, {})
                    for kind, row in msgspec.msgpack.decode(data)[0].items():
                        have[kind] = have.get(kind, 0) + row[0]
            expected: dict[int, dict[str, int]] = {}
            for e in events:
                kinds = expected.setdefault(e.second - e.second % g, {})
                kinds[e.kind] = kinds.get(e.kind, 0) + 1
            closed = {b for b in expected if b + g + window_writer.GRACE <= newest}
            assert closed, g
            for bucket in closed:
                sealed = dims.get(bucket, set())
                assert {"t0", "c0", "u0", "U0", "Ut0", "P0", "Pt0"} <= sealed, (g, bucket)
                assert "p0" not in sealed, (g, bucket)  # its pages: in the index only
            assert {b: totals[b] for b in closed} == {b: expected[b] for b in closed}, g
    finally:
        conn.close()


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


class _FlakyWorkerSQLite(_FlakySQLite, _WorkerSQLite):
    """Flaky commits of a replay worker's minutes."""


@pytest.mark.parametrize("flaky", [_FlakySQLite, _FlakyWorkerSQLite])
async def test_rolled_back_commits_leave_the_windows_exact(
    tmp_path: Path, hours_lines: list[bytes], flaky: type[_FlakySQLite]
) -> None:
    """A commit that wrote its windows (and changed the sums) then rolled back, retried, counts
    each event once: the sums of a failed commit are never used again (nor the buckets it
    left sealing on the sealing thread)."""
    store = flaky(tmp_path / "flaky.db", dedup_window=5000)
    async with opened(store):
        await _feed(_pipeline(store), hours_lines)
        assert store.failed > 30
        await _assert_windows_exact(store, hours_lines)  # type: ignore[arg-type]
    _assert_sealed_exact(tmp_path / "flaky.db", hours_lines)


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


@pytest.mark.parametrize("kind", _STORES)
async def test_two_writers_taking_turns_stay_exact(
    tmp_path: Path, hours_lines: list[bytes], kind: type[SQLiteStore]
) -> None:
    """Two stores on one file commit in turns (as a writer that lost its lease and one that
    took over would): each sees that the other committed and rebuilds its sums (and drops the
    buckets it had sealing: they are read back)."""
    path = tmp_path / "two.db"
    first, second = kind(path, dedup_window=5000), kind(path, dedup_window=5000)
    async with opened(first), opened(second):
        pipelines = (_pipeline(first), _pipeline(second))
        chunk = 170  # several commits each, so sums are both kept and found stale
        for turn, start in enumerate(range(0, len(hours_lines), chunk)):
            pipeline = pipelines[turn % 2]
            for index in range(start, min(start + chunk, len(hours_lines))):
                await pipeline.add(hours_lines[index], str(index))
            await pipeline.flush()
        await _assert_windows_exact(first, hours_lines)  # type: ignore[arg-type]
    _assert_sealed_exact(path, hours_lines)


@pytest.mark.parametrize("kind", _STORES)
@pytest.mark.parametrize("stops", [(700, 1500, 2300, 3600), (1111, 3455)])
async def test_restarts_in_the_middle_of_hours_stay_exact(
    tmp_path: Path,
    hours_lines: list[bytes],
    stops: tuple[int, ...],
    kind: type[SQLiteStore],
    engine: str,
) -> None:
    """Closing and opening the store mid-hour (and amid the late events) rebuilds the sums
    from the table; every window stays equal to the independent count."""
    path = tmp_path / "restarts.db"
    start = 0
    for stop in (*stops, len(hours_lines)):
        async with opened(kind(path, dedup_window=5000)) as store:
            pipeline = _pipeline(store)
            for index in range(start, stop):
                await pipeline.add(hours_lines[index], str(index))
            await pipeline.flush()
        start = stop
    async with opened(SQLiteStore(path, dedup_window=5000)) as store:
        await _assert_windows_exact(store, hours_lines)  # type: ignore[arg-type]
    _assert_sealed_exact(path, hours_lines)


@pytest.mark.parametrize("kind", _STORES)
@pytest.mark.parametrize("batch", [40, 5000])
async def test_in_order_events_are_sealed_from_memory(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hours_lines: list[bytes],
    kind: type[SQLiteStore],
    batch: int,
    engine: str,
) -> None:
    """Fed in order from an empty table, no bucket is ever rolled up by reading its finer
    buckets back (the cost the sums remove), and the windows are exact; minutes summed in C
    (a worker's or a live batch's) are sealed on the sealing thread, and those still sealing
    are written at close (in one batch of 5000: every one)."""

    def read_back(g: int, bucket: int) -> Any:
        raise AssertionError(f"bucket {bucket} of {g} was read back to be sealed")

    monkeypatch.setattr(window_writer, "_seal", read_back)
    sealing = {"later": 0}
    seal_later = window_held.seal_later

    def counted_seal_later(g: int, bucket: int, held: Any) -> Any:
        pending = seal_later(g, bucket, held)
        sealing["later"] += pending is not None
        return pending

    monkeypatch.setattr(window_writer, "seal_later", counted_seal_later)
    in_order = hours_lines[:3400]
    async with opened(kind(tmp_path / "memory.db", dedup_window=5000)) as store:
        await _feed(_pipeline(store, max_events=batch), in_order)
        await _assert_windows_exact(store, in_order)  # type: ignore[arg-type]
    _assert_sealed_exact(tmp_path / "memory.db", in_order)
    if engine == "c" and window_held.native():  # live batches are summed per minute in C too
        assert sealing["later"] > 20 if batch == 40 else sealing["later"] > 0
    else:
        assert sealing["later"] == 0


async def test_late_events_for_buckets_still_sealing_stay_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hours_lines: list[bytes]
) -> None:
    """A late event for a bucket still sealing on the sealing thread (made slow here): the
    bucket is written first, then the event is added to it as a part; none is lost."""
    seal_now = window_held.seal_now

    def slow_seal_now(bucket: int, held: Any) -> Any:
        time.sleep(0.02)
        return seal_now(bucket, held)

    monkeypatch.setattr(window_held, "seal_now", slow_seal_now)
    path = tmp_path / "late.db"
    async with opened(_WorkerSQLite(path, dedup_window=5000)) as store:
        await _feed(_pipeline(store, max_events=100), hours_lines)
        await _assert_windows_exact(store, hours_lines)  # type: ignore[arg-type]
    _assert_sealed_exact(path, hours_lines)
