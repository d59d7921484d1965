"""The Cassandra store's time windows: versions of lost attempts never count, late writes lose.

The contract suite (test_windows_contract.py) proves the windows exact after crashes, lost
acknowledgements and resumes; these tests go after what is particular to Cassandra's design
(`stores/cassandra/windows.py`): bucket versions written outside the conditional commit.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest

from tests.stores.conftest import StoreKind
from tests.stores.fake_cql import FakeCluster
from tests.stores.test_contract import _feed, _pipeline, opened
from tests.stores.test_windows_contract import _assert_windows_exact
from tests.support.generated import generate
from tests.support.recorded import recorded_events, replay_batch
from wikipulse.stores import StoreError
from wikipulse.stores.cassandra import CassandraStore
from wikipulse.stores.cassandra.window_blob import split_delta
from wikipulse.stores.cassandra.window_head import page_head, user_head
from wikipulse.window_delta import WindowDelta
from wikipulse.windows import HOUR, MINUTE

pytestmark = pytest.mark.anyio

CASSANDRA_KINDS = ["cassandra-fake", pytest.param("cassandra", marks=pytest.mark.cassandra)]


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """3000 generated events over about 2.8 hours of event time, with hot pages."""
    out = tmp_path_factory.mktemp("cwindows")
    return generate(out, 3000, seed=11, page_skew=4, rate=0.3).read_bytes().splitlines()


def _garbage() -> list[Any]:
    """users_n, totals, counts, users, pages, their heads, wiki_users and user_names of a
    version never to be read."""
    counts = {"x.org": {"edit": [1_000_000, 7, 7, 7]}}
    users = {"x.org": {"Orphan": 1_000_000}}
    pages = {"x.org": {"Orphan page": 1_000_000}}
    encode = msgspec.msgpack.encode
    totals = {"": counts["x.org"]}
    heads = [user_head(users), page_head(pages), encode({"x.org": 1}), encode(["Orphan"])]
    return [1, encode(totals), encode(counts), encode(users), encode(pages), *heads]


async def _orphan(
    store: CassandraStore, g: int, bucket: int, slot: int, seq: int, epoch: str
) -> None:
    """Write a bucket version as an attempt that never committed would have left it."""
    params = [store._me, g, bucket - bucket % HOUR, bucket, slot, seq, epoch, *_garbage()]
    await store._execute("win_write", [*params, time.time_ns() // 1000, 3600 * 24])


async def _slots(store: CassandraStore, g: int, bucket: int) -> dict[int, int]:
    """slot -> seq of the versions a bucket holds."""
    rows = await store._execute("win_load", [store._me, g, bucket - bucket % HOUR])
    return {r["slot"]: r["seq"] for r in rows if r["bucket"] == bucket}


@pytest.mark.parametrize("kind", CASSANDRA_KINDS, indirect=True)
async def test_versions_of_lost_attempts_never_count(kind: StoreKind, lines: list[bytes]) -> None:
    """Orphan versions (a dead epoch's, or a live epoch's beyond its last commit) are ignored,
    by readers and by the writer, even once the commit sequence passes them."""
    half = len(lines) // 2
    first = kind.make()
    assert isinstance(first, CassandraStore)
    async with opened(first):
        await _feed(_pipeline(first), lines[:half])
        epoch, seq = first._claims.epoch, first._state.seq or 0
        newest = first._windows.newest
    assert newest is not None
    async with opened(kind.make()) as store:
        assert isinstance(store, CassandraStore)
        old_minute = newest - 60 * MINUTE  # committed; the rest of the feed never touches it
        old_minute -= old_minute % MINUTE
        held = await _slots(store, MINUTE, old_minute)
        assert held, "the minute chosen must hold a committed version"
        free = 1 - max(held, key=lambda s: held[s])
        # The first process's own epoch, one seq past its last commit: a lost attempt.
        await _orphan(store, MINUTE, old_minute, free, seq + 1, epoch)
        past_hour = newest - newest % HOUR - HOUR
        hour_slots = await _slots(store, HOUR, past_hour)
        assert hour_slots, "the past hour must hold a committed hour row"
        free = 1 - max(hour_slots, key=lambda s: hour_slots[s])
        await _orphan(store, HOUR, past_hour, free, seq + 2, "dead-epoch")
        # The current hour has no hour row yet; a minute ahead has no version at all.
        await _orphan(store, HOUR, newest - newest % HOUR, 0, seq + 1, epoch)
        ahead = newest + 5 * MINUTE
        await _orphan(store, MINUTE, ahead, 0, seq + 1, epoch)
        await _orphan(store, MINUTE, ahead, 1, 1, "dead-epoch")
        await _assert_windows_exact(store, lines[:half])
    async with opened(kind.make()) as store:
        assert isinstance(store, CassandraStore)
        pipeline = _pipeline(store)
        position = await pipeline.resume()
        assert position is not None
        await _feed(pipeline, lines, int(position) + 1)
        assert (store._state.seq or 0) > seq + 2  # the sequence has passed every orphan
        await _assert_windows_exact(store, lines)
    async with opened(kind.make()) as reader:
        assert isinstance(reader, CassandraStore)
        await _assert_windows_exact(reader, lines)


async def test_a_window_write_that_lands_late_loses(tmp_path: Any, lines: list[bytes]) -> None:
    """A bucket write that timed out and lands after newer versions of the bucket changes
    nothing: each write is stamped later than any the writer has made or read."""
    node = FakeCluster()
    writes = {"n": 0}

    def thirtieth(cql: str, params: Any) -> bool:
        # Minute versions only: sealed rows are derived, written after commits (window_seal.py).
        if not cql.startswith("INSERT INTO window_versions") or params[1] != MINUTE:
            return False
        writes["n"] += 1
        return writes["n"] == 30

    node.fail(thirtieth, "hold")

    def make() -> CassandraStore:
        return CassandraStore(
            keyspace="ks", dedup_window=400, create_schema=True, session=node.session()
        )

    async with opened(make()) as store:
        # Small batches: each minute is rewritten by several commits after the held write.
        await _feed(_pipeline(store, max_events=7), lines)
        assert len(node.held) == 1
        (_, held), *_ = node.held
        bucket = held.values[3]
        versions = [p for c, p, _ in node.log if c.startswith("INSERT INTO window_versions")]
        later = [p for p in versions[30:] if p[1] == held.values[1] and p[3] == bucket]
        assert len(later) >= 2, "the bucket must be rewritten in both slots after the held write"
        node.land_held()
    async with opened(make()) as reader:
        await _assert_windows_exact(reader, lines)


async def test_window_partitions_stay_bounded_and_leave_no_tombstones(lines: list[bytes]) -> None:
    """Every window partition holds one hour (two slots per bucket and epoch: one epoch
    here) of minutes, sealed 5-minute buckets or sealed hours; nothing is deleted."""
    node = FakeCluster()
    store = CassandraStore(
        keyspace="ks", dedup_window=400, create_schema=True, session=node.session()
    )
    async with opened(store):
        before = node.tombstones
        await _feed(_pipeline(store, max_events=7), lines)
        assert node.tombstones == before
    table = node.tables["ks.window_versions"]
    assert len(table.data) >= 3
    for (_, g, period), (_, rows) in table.data.items():
        assert all(period <= bucket < period + HOUR for bucket, _, _ in rows)
        assert {slot for _, _, slot in rows} <= {0, 1}
        assert len({epoch for _, epoch, _ in rows}) == 1
        assert len(rows) <= 2 * HOUR // g  # two slots per minute, 5 minutes or hour


@pytest.mark.parametrize("kind", CASSANDRA_KINDS, indirect=True)
async def test_a_stale_writer_of_the_same_id_cannot_overwrite_the_new_writers_buckets(
    kind: StoreKind, lines: list[bytes]
) -> None:
    """A writer that lost its place (paused past its lease, or a second process of the same
    ingester id) writes its bucket versions before its commit is refused: they must land beside
    the new writer's committed versions, never on them, or the windows would lose its batches."""
    first, second = lines[:1000], lines[:2000]
    async with opened(kind.make()) as stale:
        await _feed(_pipeline(stale), first)
        async with opened(kind.make()) as new:  # takes over from the committed state
            pipeline = _pipeline(new)
            position = await pipeline.resume()
            assert position == str(len(first) - 1)
            await _feed(pipeline, second, len(first))  # positions 1000-1999
        # The stale writer still believes its last commit is the newest: its window versions
        # are written (into the slots it thinks free), then its conditional commit is refused.
        with pytest.raises(StoreError, match="another writer"):
            await _feed(_pipeline(stale), lines, len(first))
    async with opened(kind.make()) as reader:
        await _assert_windows_exact(reader, second)


@pytest.mark.parametrize("kind", CASSANDRA_KINDS, indirect=True)
async def test_top_lists_stay_exact_when_heads_are_short(
    kind: StoreKind, lines: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With heads of 3 keys every bucket has a floor: top lists still equal the plain count,
    reading the tails they need (and only then)."""
    from wikipulse.stores.cassandra import window_head, window_top_read

    monkeypatch.setattr(window_head, "HEAD", 3)
    tails: list[int] = []
    read_tail = window_top_read.TopReader._tail

    async def counting(self: Any, *args: Any) -> Any:
        tails.append(1)
        return await read_tail(self, *args)

    monkeypatch.setattr(window_top_read.TopReader, "_tail", counting)
    async with opened(kind.make()) as store:
        await _feed(_pipeline(store), lines)
        await _assert_windows_exact(store, lines)  # type: ignore[arg-type]
    assert tails, "short heads must make some top list read a tail"


def test_a_batch_split_per_minute_from_its_events_equals_the_split_of_its_maps() -> None:
    """A replay's batch (packed ranges and a refolded one, merged) and a live one (recorded
    events only) split into the same minute contents as the same batch summed into maps."""
    raw = recorded_events(6)
    summed = replay_batch(raw)
    summed.compact()
    want = split_delta(summed)
    assert split_delta(replay_batch(raw)) == want
    live = WindowDelta()
    live.raw = list(raw)
    assert split_delta(live) == want
    assert len(want) == 7
    assert sum(
        row[0] for c in want.values() for kinds in c.counts.values() for row in kinds.values()
    ) == len(raw)
