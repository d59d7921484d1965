"""The Cassandra store on three nodes (RF 3, QUORUM): crashes around a commit, a replica lost,
commits that time out and land late, two writers of one id with skewed clocks.

Run by `.ci/run` against `bash .ci/services up cassandra3` with
WIKIPULSE_TEST_CASSANDRA_HOSTS=127.0.0.1,127.0.0.2,127.0.0.3 and WIKIPULSE_TEST_CASSANDRA_CLUSTER=1.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.stores.conftest import CASSANDRA_HOSTS, CASSANDRA_PORT, CLUSTER_REPLICATION, WINDOW
from tests.stores.test_contract import _Crash, _feed, _pipeline, opened
from tests.stores.test_windows_contract import _assert_windows_exact
from tests.support.counting import expected_stats
from wikipulse.stats import Batch
from wikipulse.stores import StoreError, StoreUnavailable
from wikipulse.stores.cassandra import CassandraStore

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.cassandra_cluster,
    pytest.mark.timeout(600, method="thread"),
]

SERVICES = Path(__file__).resolve().parents[2] / ".ci" / "services"
BASH = shutil.which("bash") or "/bin/bash"
SKEW_SECONDS = 3600.0
T = TypeVar("T")


def _store(
    keyspace: str, cls: type[CassandraStore] = CassandraStore, consistency: str = "QUORUM"
) -> CassandraStore:
    return cls(
        CASSANDRA_HOSTS.split(","),
        port=CASSANDRA_PORT,
        keyspace=keyspace,
        replication=CLUSTER_REPLICATION,
        consistency=consistency,
        dedup_window=WINDOW,
        create_schema=True,
    )


def _crashing(when: str, number: int, crashed: dict[str, str]) -> type[CassandraStore]:
    """A store whose `number`-th commit dies `before` or `after` its batch reaches the cluster.

    `crashed["position"]` is set to the stream position that commit carried.
    """
    calls = {"n": 0}

    class Crashing(CassandraStore):
        async def _execute(self, name: str, params: Any) -> Any:
            due = False
            if name.startswith("state"):
                calls["n"] += 1
                due = calls["n"] == number
                if due:
                    crashed["position"] = params[5]
            if due and when == "before":
                raise _Crash  # the users are claimed on every replica, the batch never sent
            rows = await super()._execute(name, params)
            if due:
                raise _Crash  # the batch is applied at QUORUM, the process dies before the reply
            return rows

    return Crashing


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_crash_around_the_batch_then_a_replay_counts_each_event_once(
    cluster_keyspace: str, events: list[bytes], when: str
) -> None:
    """Dying between the claims and the batch, or after the batch, then replaying, is exact."""
    crashed: dict[str, str] = {}
    async with opened(_store(cluster_keyspace, _crashing(when, 4, crashed))) as store:
        with pytest.raises(_Crash):
            await _feed(_pipeline(store), events)
    async with opened(_store(cluster_keyspace)) as store:
        pipeline = _pipeline(store)
        position = await pipeline.resume()
        assert position is not None
        # The batch the crash interrupted counts if, and only if, it reached the cluster.
        if when == "after":
            assert position == crashed["position"]
        else:
            assert 0 < int(position) < int(crashed["position"])
        await _feed(pipeline, events, int(position) + 1 - 150)  # replay an overlap too
        assert (await store.snapshot()).to_dict() == expected_stats(events)


def _services(*args: str) -> None:
    """Run `.ci/services` of this checkout (the tests may run in a copy of the repository)."""
    subprocess.run([BASH, str(SERVICES), *args], check=True, timeout=600)


async def _answered(read: Callable[[], Awaitable[T]], seconds: float = 120) -> T:
    """The result of `read`, tried again while the cluster answers StoreUnavailable."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await read()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


async def test_one_replica_down_commits_go_on_at_quorum_and_stay_exact(
    cluster_keyspace: str, events: list[bytes]
) -> None:
    """With node 2 killed, commits still succeed at QUORUM; once it is back, reads at ALL agree."""
    half = len(events) // 2
    async with opened(_store(cluster_keyspace)) as store:
        pipeline = _pipeline(store)
        for index in range(half):
            await pipeline.add(events[index], str(index))
        await pipeline.flush()
        _services("kill", "cassandra3-node2")
        try:
            await _feed(pipeline, events, half)  # a failed commit is retried by the pipeline
            # The snapshot scans every partition: until the others see node 2 down, a replica
            # range on it can time out (StoreUnavailable); once answered, it is exact.
            during = await _answered(store.snapshot)
            assert during.to_dict() == expected_stats(events)
        finally:
            _services("up", "cassandra3-node2")

    # Every replica answers at ALL: the one that missed the writes is repaired by the read
    # (until the others see node 2 up again, ALL is StoreUnavailable: tried again).
    async def read_at_all() -> tuple[dict[str, Any], str | None]:
        async with opened(_store(cluster_keyspace, consistency="ALL")) as every:
            return (await every.snapshot()).to_dict(), (await every.resume_point()).position

    stats, position = await _answered(read_at_all)
    assert (stats, position) == (expected_stats(events), str(len(events) - 1))


def _skewed() -> type[CassandraStore]:
    """A store whose client clock runs an hour ahead (the driver stamps writes with it)."""

    class Skewed(CassandraStore):
        async def _connect(self) -> Any:
            session = await super()._connect()
            self._own_cluster.timestamp_generator = lambda: int(
                (time.time() + SKEW_SECONDS) * 1_000_000
            )
            return session

    return Skewed


def _batch(server: str, event: str, position: str) -> Batch:
    return Batch(
        total=1, by_server_name={server: 1}, event_ids=[event], position=position, touched=True
    )


async def test_two_writers_of_one_id_with_a_skewed_clock_the_second_is_refused(
    cluster_keyspace: str,
) -> None:
    """A writer an hour ahead neither shadows a later commit nor gets past the `seq` fence."""
    ahead = _store(cluster_keyspace, _skewed())
    await ahead.open()
    try:
        await ahead.commit(_batch("ahead.org", "e1", "1"))
        async with opened(_store(cluster_keyspace)) as now:
            # Opened after the skewed commit: its SERIAL read starts from seq 1.
            await now.commit(_batch("now.org", "e2", "2"))
            with pytest.raises(StoreError, match="another writer"):
                await ahead.commit(_batch("ahead.org", "e3", "3"))
            stats = await now.snapshot()
            assert (stats.total, stats.by_server_name) == (2, {"ahead.org": 1, "now.org": 1})
            point = await now.resume_point()
            assert (point.position, point.recent_ids) == ("2", ["e1", "e2"])
    finally:
        await ahead.close()


async def _replayed(keyspace: str, events: list[bytes], crash_at: int | None = None) -> None:
    """A new process: resume from the committed position, replay an overlap and the rest;
    with `crash_at`, that commit dies before its batch is sent (claims written, batch not)."""
    crashed: dict[str, str] = {}
    cls = CassandraStore if crash_at is None else _crashing("before", crash_at, crashed)
    async with opened(_store(keyspace, cls)) as store:
        pipeline = _pipeline(store)
        position = await pipeline.resume()
        start = 0 if position is None else max(0, int(position) + 1 - 150)
        await _feed(pipeline, events, start)


async def test_commits_that_time_out_and_land_late_count_once_through_two_crashes(
    cluster_keyspace: str, events: list[bytes]
) -> None:
    """Two replicas frozen (SIGSTOP) mid-stream: commits time out at QUORUM while the
    coordinator keeps what reached it (hints for the frozen replicas, Paxos proposals accepted
    by one node) and delivers it late, after the process died and while the next one runs.
    The next process crashes too, between its claims and its batch. Replaying each time, the
    counters and the time windows end exactly equal to the independent count."""
    third = len(events) // 3
    async with opened(_store(cluster_keyspace)) as store:
        pipeline = _pipeline(store)
        await _feed(pipeline, events[:third])
        _services("pause", "cassandra3-node2", "cassandra3-node3")
        try:
            feeding = asyncio.ensure_future(_feed(pipeline, events, third))
            done, _ = await asyncio.wait({feeding}, timeout=15)
            assert not done, "commits cannot succeed at QUORUM with two replicas frozen"
            feeding.cancel()  # the process dies with its commits unacknowledged
            await asyncio.gather(feeding, return_exceptions=True)
        finally:
            _services("resume", "cassandra3-node2", "cassandra3-node3")
    with pytest.raises(_Crash):
        await _answered(lambda: _replayed(cluster_keyspace, events, crash_at=3))
    await _answered(lambda: _replayed(cluster_keyspace, events))
    async with opened(_store(cluster_keyspace)) as reader:
        assert (await reader.snapshot()).to_dict() == expected_stats(events)
        assert (await reader.resume_point()).position == str(len(events) - 1)
        assert isinstance(reader, CassandraStore)
        await _assert_windows_exact(reader, events)
