"""The Cassandra store on a real node: what only the server can show (sizes, LWT, SERIAL)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from tests.stores.conftest import CASSANDRA_HOSTS, CASSANDRA_PORT
from wikipulse.config import Settings
from wikipulse.stats import Batch
from wikipulse.stores import StoreError
from wikipulse.stores.cassandra import CassandraStore

pytestmark = [pytest.mark.anyio, pytest.mark.cassandra, pytest.mark.timeout(240, method="thread")]

BATCH_MAX_EVENTS = Settings.model_fields["batch_max_events"].default
DEDUP_WINDOW = Settings.model_fields["dedup_window"].default


def _store(keyspace: str, ingester: str = "a", **kwargs: object) -> CassandraStore:
    return CassandraStore(
        CASSANDRA_HOSTS.split(","),
        port=CASSANDRA_PORT,
        keyspace=keyspace,
        ingester_id=ingester,
        consistency="ONE",
        create_schema=True,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
async def store(cassandra_keyspace: str) -> AsyncIterator[CassandraStore]:
    """An open store with the default dedup window in a fresh keyspace."""
    opened = _store(cassandra_keyspace, dedup_window=DEDUP_WINDOW)
    await opened.open()
    yield opened
    await opened.close()


def _largest_batch(start: int, users: int) -> Batch:
    """A batch as big as the pipeline makes: default max events, real-sized ids and names."""
    n = BATCH_MAX_EVENTS
    return Batch(
        total=n,
        bots=n // 4,
        by_server_name={f"s{i}.wikipedia.org": n // 400 for i in range(400)},
        users={f"User {start + i} {'x' * 20}" for i in range(users)},
        event_ids=[str(uuid.UUID(int=start + i)) for i in range(n)],
        position='[{"topic":"eqiad.mediawiki.recentchange","partition":0,"offset":123456789}]',
        touched=True,
    )


async def test_the_largest_batch_the_pipeline_makes_is_accepted(store: CassandraStore) -> None:
    """Two batches of the default maximum size, ids and new users included, both commit."""
    await store.commit(_largest_batch(0, users=2_000))
    await store.commit(_largest_batch(BATCH_MAX_EVENTS, users=2_000))
    stats = await store.snapshot()
    assert (stats.total, stats.distinct_users) == (2 * BATCH_MAX_EVENTS, 4_000)
    point = await store.resume_point()
    assert len(point.recent_ids) == 2 * BATCH_MAX_EVENTS
    assert point.recent_ids[-1] == str(uuid.UUID(int=2 * BATCH_MAX_EVENTS - 1))


async def test_a_second_writer_is_fenced_by_paxos(cassandra_keyspace: str) -> None:
    """On the server too, a second process with the same ingester id cannot overwrite."""
    first, second = _store(cassandra_keyspace), _store(cassandra_keyspace)
    await first.open()
    await second.open()
    try:
        batch = Batch(total=1, by_server_name={"a.org": 1}, event_ids=["e1"], touched=True)
        await first.commit(batch)
        with pytest.raises(StoreError, match="another writer"):
            await second.commit(Batch(total=1, by_server_name={"b.org": 1}, touched=True))
        assert (await first.snapshot()).by_server_name == {"a.org": 1}
    finally:
        await first.close()
        await second.close()


async def test_opening_without_tables_asks_for_migrate(cassandra_keyspace: str) -> None:
    """A keyspace without the tables gives the error that names `wikipulse migrate`."""
    store = _store(cassandra_keyspace)
    store._create_schema = False
    with pytest.raises(StoreError, match="wikipulse migrate"):
        await store.open()
    await store.close()


async def test_migrate_moves_claims_of_the_256_shard_layout(cassandra_keyspace: str) -> None:
    """Users claimed by a version with 256 shards stay counted after `migrate`: none twice."""
    import zlib

    from wikipulse.stores.cassandra import driver
    from wikipulse.stores.cassandra.reshard import move_old_claims

    store = _store(cassandra_keyspace)
    await store.open()
    try:
        session = store._cql.session
        assert session is not None
        old = [f"Old user {i}" for i in range(300)]
        for name in old:  # as the earlier layout placed them, claimed by another ingester
            insert = (
                "INSERT INTO users (shard, name, ingester_id, epoch, seq) "
                "VALUES (%s, %s, 'other', 'e0', 1)"
            )
            session.execute(insert, [zlib.crc32(name.encode()) % 256, name])
        await _store(cassandra_keyspace).migrate()
        shards = ", ".join(str(n) for n in range(256))
        left = f"SELECT count(*) AS n FROM users WHERE shard IN ({shards})"  # noqa: S608
        (row,) = await driver.result(session.execute_async(left))
        assert row["n"] == 0
        await store.commit(Batch(total=301, users={*old, "New user"}, touched=True))
        assert (await store.snapshot()).distinct_users == 1
        assert await move_old_claims(session, cassandra_keyspace) == 0  # nothing left to move
    finally:
        await store.close()


async def test_connecting_warns_of_nothing(
    cassandra_keyspace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The driver negotiates its protocol version down on connecting (to v5 here) and says so:
    that is logged at INFO, not as a warning a user would chase."""
    import logging

    with caplog.at_level(logging.INFO, logger="cassandra"):
        store = _store(cassandra_keyspace)
        await store.open()
        await store.close()
    negotiation = [r for r in caplog.records if r.getMessage().startswith("Downgrading")]
    assert negotiation, "the driver no longer negotiates down: drop the filter"
    assert all(r.levelno == logging.INFO for r in negotiation)
    assert not [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "cassandra.cluster"
    ]
