"""The StatsStore contract, run against every store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.stores.conftest import WINDOW, StoreKind
from tests.support.counting import expected_stats
from wikipulse.ingest import Pipeline
from wikipulse.stats import Batch, Stats
from wikipulse.stores import StatsStore, StoreUnavailable

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def opened(store: StatsStore) -> AsyncIterator[StatsStore]:
    """The store, open for the length of the block."""
    await store.open()
    try:
        yield store
    finally:
        await store.close()


class _Crash(BaseException):
    """The process dies here: nothing after it runs, not even the pipeline's retry."""


async def _feed(pipeline: Pipeline, lines: list[bytes], start: int = 0) -> None:
    """Give the pipeline lines[start:], each with its index as the stream position."""
    for index in range(start, len(lines)):
        await pipeline.add(lines[index], str(index))
        if index % 50 == 0:
            await asyncio.sleep(0)  # let other tasks (readers) run even when commits never wait
    await pipeline.flush()


def _counted_ids(lines: list[bytes]) -> list[str]:
    """The meta.id of each counted event, oldest first, computed without the package."""
    import json

    seen: list[str] = []
    for line in lines:
        event = json.loads(line)
        meta = event["meta"]
        if meta.get("domain") != "canary" and meta["id"] not in seen:
            seen.append(meta["id"])
    return seen


def _pipeline(store: StatsStore, max_events: int = 250) -> Pipeline:
    return Pipeline(store, max_events=max_events, dedup_window=WINDOW, retry_initial=0.001)


def _crash_on_commit(kind: StoreKind, number: int) -> StatsStore:
    """A store whose `number`-th commit dies after writing everything but before it commits."""
    base = type(kind.make())
    calls = {"n": 0}

    def due() -> bool:
        calls["n"] += 1
        return calls["n"] == number

    if kind.name == "sqlite":

        class CrashingSQLite(base):  # type: ignore[valid-type,misc]
            def _apply(self, conn: Any, batch: Batch, users: set[str]) -> None:
                super()._apply(conn, batch, users)
                if due():
                    raise _Crash

        return kind.make(CrashingSQLite)
    if kind.name == "postgres":

        class CrashingPostgres(base):  # type: ignore[valid-type,misc]
            async def _apply(self, conn: Any, batch: Batch, users: set[str]) -> None:
                await super()._apply(conn, batch, users)
                if due():
                    raise _Crash

        return kind.make(CrashingPostgres)

    class CrashingCassandra(base):  # type: ignore[valid-type,misc]
        async def _execute(self, name: str, params: Any) -> Any:
            if name.startswith("state") and due():
                raise _Crash  # the users are claimed, the batch is never written
            return await super()._execute(name, params)

    return kind.make(CrashingCassandra)


def _ack_lost_on_commit(kind: StoreKind, number: int) -> StatsStore:
    """A store whose `number`-th commit succeeds but reports a failure to the caller."""
    base = type(kind.make())
    calls = {"n": 0}

    if kind.name == "cassandra":

        class LostAckCassandra(base):  # type: ignore[valid-type,misc]
            async def _execute(self, name: str, params: Any) -> Any:
                rows = await super()._execute(name, params)
                if name.startswith("state"):
                    calls["n"] += 1
                    if calls["n"] == number:
                        raise StoreUnavailable("write timed out")
                return rows

        return kind.make(LostAckCassandra)

    class LostAck(base):  # type: ignore[valid-type,misc]
        async def commit(self, batch: Batch) -> None:
            await super().commit(batch)
            calls["n"] += 1
            if calls["n"] == number:
                raise StoreUnavailable("connection lost during COMMIT")

    return kind.make(LostAck)


async def test_batches_give_the_independently_counted_statistics(
    kind: StoreKind, events: list[bytes]
) -> None:
    """Committing the batches of a file gives the statistics an independent count gives."""
    async with opened(kind.make()) as store:
        await _feed(_pipeline(store), events)
        assert (await store.snapshot()).to_dict() == expected_stats(events)


async def test_position_and_recent_ids_survive_reopening(
    kind: StoreKind, events: list[bytes]
) -> None:
    """A durable store reopened gives back the last position and the newest event ids."""
    if not kind.durable:
        pytest.skip(f"the {kind.name} store forgets everything when closed")
    async with opened(kind.make()) as store:
        await _feed(_pipeline(store), events)
    again = kind.make()
    await again.open()
    try:
        point = await again.resume_point()
        assert point.position == str(len(events) - 1)
        assert point.recent_ids == _counted_ids(events)[-WINDOW:]
        assert (await again.snapshot()).to_dict() == expected_stats(events)
    finally:
        await again.close()


async def test_batches_without_a_position_leave_the_resume_point_alone(
    kind: StoreKind, events: list[bytes]
) -> None:
    """A replay's batches (NDJSON: no stream position) are counted, but a resume can only start
    from a stream position, so the window kept for it stays the ids up to that position."""
    if not kind.durable:
        pytest.skip(f"the {kind.name} store forgets everything when closed")
    half = len(events) // 2
    async with opened(kind.make()) as store:
        pipeline = _pipeline(store)
        await _feed(pipeline, events[:half])
        for line in events[half:]:
            await pipeline.add(line, None)
        await pipeline.flush()
    again = kind.make()
    await again.open()
    try:
        point = await again.resume_point()
        assert point.position == str(half - 1)
        assert point.recent_ids == _counted_ids(events[:half])[-WINDOW:]
        assert (await again.snapshot()).to_dict() == expected_stats(events)
    finally:
        await again.close()


@pytest.mark.parametrize("overlap", [0, 150])
async def test_crash_mid_commit_then_resume_loses_and_doubles_nothing(
    kind: StoreKind, events: list[bytes], overlap: int
) -> None:
    """A process dying inside a commit, resumed and replayed, counts each event exactly once."""
    if not kind.durable:
        pytest.skip(f"the {kind.name} store does not survive a crash")
    async with opened(_crash_on_commit(kind, number=4)) as store:
        with pytest.raises(_Crash):
            await _feed(_pipeline(store), events)
    async with opened(kind.make()) as store:
        pipeline = _pipeline(store)
        position = await pipeline.resume()
        assert position is not None
        assert 0 < int(position) < len(events) - 1
        await _feed(pipeline, events, max(0, int(position) + 1 - overlap))
        assert (await store.snapshot()).to_dict() == expected_stats(events)


async def test_commit_whose_acknowledgement_was_lost_is_not_counted_twice(
    kind: StoreKind, events: list[bytes]
) -> None:
    """A commit that succeeded but reported failure, retried by the pipeline, counts once."""
    if not kind.durable:
        pytest.skip(f"the {kind.name} store cannot fail to acknowledge a commit")
    async with opened(_ack_lost_on_commit(kind, number=3)) as store:
        await _feed(_pipeline(store), events)
        assert (await store.snapshot()).to_dict() == expected_stats(events)


async def test_readers_never_see_half_a_batch(kind: StoreKind, events: list[bytes]) -> None:
    """Snapshots taken while batches commit always satisfy the invariants of a whole batch."""
    store = kind.make()
    reader = kind.make()
    await store.open()
    if reader is not store:
        await reader.open()
    seen: list[Stats] = []
    done = asyncio.Event()

    async def read() -> None:
        while not done.is_set():
            seen.append(await reader.snapshot())
            await asyncio.sleep(0)

    try:
        task = asyncio.create_task(read())
        await _feed(_pipeline(store, max_events=37), events)
        done.set()
        await task
        assert len(seen) > 5
        totals = [s.total for s in seen]
        assert totals == sorted(totals)
        for s in seen:
            assert s.total == sum(s.by_server_name.values())
            assert 0 <= s.bots <= s.total
            assert s.distinct_users <= s.total
    finally:
        if reader is not store:
            await reader.close()
        await store.close()


async def test_pipeline_waits_out_a_store_outage_and_loses_nothing(
    kind: StoreKind, events: list[bytes]
) -> None:
    """Commits failing with StoreUnavailable are retried by the pipeline until none is lost."""
    store = kind.make()
    failures = {"left": 7}
    real_commit = store.commit

    async def flaky_commit(batch: Batch) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise StoreUnavailable("backend down")
        await real_commit(batch)

    store.commit = flaky_commit  # type: ignore[method-assign]
    await store.open()
    try:
        pipeline = _pipeline(store)
        await _feed(pipeline, events)
        assert failures["left"] == 0
        assert pipeline.state.store_ok
        assert (await store.snapshot()).to_dict() == expected_stats(events)
    finally:
        await store.close()


async def test_a_new_batch_equal_to_the_last_one_is_counted_again(kind: StoreKind) -> None:
    """Two distinct batches with the same contents (a file replayed twice) both count."""
    async with opened(kind.make()) as store:
        for _ in range(2):
            batch = Batch(
                total=2,
                bots=1,
                by_server_name={"a.org": 2},
                users={"U1"},
                event_ids=["e1", "e2"],
                touched=True,
            )
            await store.commit(batch)
        snapshot = await store.snapshot()
    assert snapshot.to_dict() == {
        "total": 4,
        "distinct_users": 1,
        "bots": 2,
        "non_bots": 2,
        "by_server_name": {"a.org": 4},
    }
