"""The Cassandra store on a behavioural fake node: the guarantees its protocol must keep."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from tests.stores.fake_cql import FakeCluster
from wikipulse.config import load_settings
from wikipulse.stats import Batch
from wikipulse.stores import StoreError, StoreUnavailable
from wikipulse.stores.cassandra import CassandraStore, driver
from wikipulse.stores.cassandra.schema import SLOTS, STATEMENTS, shard_of

# The thread method: an event loop spinning on fake futures swallows the signal method's error.
pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30, method="thread")]

KS = "ks"


def _store(node: FakeCluster, ingester: str = "a", **kwargs: Any) -> CassandraStore:
    kwargs.setdefault("create_schema", True)
    return CassandraStore(keyspace=KS, ingester_id=ingester, session=node.session(), **kwargs)


async def _opened(node: FakeCluster, ingester: str = "a", **kwargs: Any) -> CassandraStore:
    store = _store(node, ingester, **kwargs)
    await store.open()
    return store


def _batch(users: Sequence[str], ids: Sequence[str], **servers: int) -> Batch:
    by_server = {f"{k}.org": v for k, v in servers.items()} or {"x.org": len(ids)}
    return Batch(
        total=len(ids),
        bots=0,
        by_server_name=by_server,
        users=set(users),
        event_ids=list(ids),
        position=ids[-1] if ids else None,
        touched=True,
    )


def _claim(node: FakeCluster, name: str) -> tuple[str, str, int]:
    cql = "SELECT ingester_id, epoch, seq FROM users WHERE shard = ? AND name = ?"
    (row,) = node.run(KS, cql, [shard_of(name), name])
    return row["ingester_id"], row["epoch"], row["seq"]


def _is_commit(cql: str, params: Sequence[Any]) -> bool:
    return cql.startswith("BEGIN BATCH UPDATE ingesters")


async def _distinct(node: FakeCluster) -> int:
    return (await (await _opened(node, "reader")).snapshot()).distinct_users


# --- the four breakages an earlier review put in by hand ---------------------------------------


async def test_a_user_claimed_by_another_ingester_keeps_its_claim_and_counts_once() -> None:
    """A second ingester meeting a claimed user neither overwrites the claim nor counts it."""
    node = FakeCluster()
    b = await _opened(node, "b")
    await b.commit(_batch(["U"], ["e1"]))
    a = await _opened(node, "a")
    await a.commit(_batch(["U"], ["e2"]))
    assert _claim(node, "U")[0] == "b"
    assert await _distinct(node) == 1


async def test_an_orphan_another_process_took_over_and_committed_is_not_reclaimed() -> None:
    """Re-claiming an orphan is conditional: a claim committed meanwhile is left alone."""
    node = FakeCluster()
    dead = await _opened(node, "a")
    node.fail(_is_commit, "before")
    with pytest.raises(StoreUnavailable):
        await dead.commit(_batch(["U"], ["e1"]))  # U is claimed, the batch never lands
    late = await _opened(node, "a")

    def other_process_takes_u_over_and_commits() -> None:
        cql = (
            "UPDATE users SET ingester_id = 'a', epoch = 'e3', seq = 1 WHERE shard = ? AND name = ?"
        )
        node.run(KS, cql, [shard_of("U"), "U"])
        params = [1, "t3", 1, 0, 1, "e1", {"x.org": 1}, "a", 0, "a", "e3", 1]
        assert node.run(KS, STATEMENTS["state"], params) == [{"[applied]": True}]

    node.fail(
        lambda cql, p: "UPDATE users" in cql and p[1] == late._claims.epoch,
        "call",
        hook=other_process_takes_u_over_and_commits,
    )
    with pytest.raises(StoreError, match="another writer"):
        await late.commit(_batch(["U"], ["e1"]))
    assert _claim(node, "U") == ("a", "e3", 1)
    again = await _opened(node, "a")
    await again.commit(_batch(["U"], ["e2"]))
    assert await _distinct(node) == 1


async def test_a_claim_lost_to_another_ingester_in_a_race_is_not_counted() -> None:
    """A user another ingester claims just before this one does counts for that one only."""
    node = FakeCluster()
    a = await _opened(node, "a")
    await _opened(node, "b")

    def b_claims_and_commits_first() -> None:
        assert node.run(KS, STATEMENTS["claim"], [shard_of("U"), "U", "b", "eb", 1]) == [
            {"[applied]": True}
        ]
        params = [1, "tb", 1, 0, 1, "e0", {"x.org": 1}, "b", 0, "b", "eb", 1]
        assert node.run(KS, STATEMENTS["state"], params) == [{"[applied]": True}]

    node.fail(
        lambda cql, p: "INSERT INTO users" in cql and "U" in p[1::5],
        "call",
        hook=b_claims_and_commits_first,
    )
    await a.commit(_batch(["U", "V"], ["e1", "e2"]))
    assert (await a.snapshot()).distinct_users == 2  # U once (by b), V once (by a)
    assert _claim(node, "U")[0] == "b"


async def test_servers_absent_from_a_batch_keep_their_counts() -> None:
    """A batch touching some servers leaves the stored counts of the others as they were."""
    node = FakeCluster()
    store = await _opened(node)
    await store.commit(_batch([], ["e1", "e2"], x=2))
    await store.commit(_batch([], ["e3"], y=1))
    reopened = await _opened(node, "a")
    assert (await reopened.snapshot()).by_server_name == {"x.org": 2, "y.org": 1}


# --- fencing, lost acknowledgements, late writes --------------------------------------------


async def test_two_concurrent_ingesters_count_shared_users_once() -> None:
    """Two ingesters committing the same 50 users at the same time count each user once."""
    node = FakeCluster()
    a, b = await _opened(node, "a"), await _opened(node, "b")
    users = [f"u{i}" for i in range(50)]
    await asyncio.gather(a.commit(_batch(users, ["a1"])), b.commit(_batch(users, ["b1"])))
    assert await _distinct(node) == 50


async def test_a_second_writer_with_the_same_id_is_refused_not_merged() -> None:
    """Two processes with one ingester id: the second to commit gets a non-retryable error."""
    node = FakeCluster()
    first, second = await _opened(node, "a"), await _opened(node, "a")
    await first.commit(_batch(["U"], ["e1", "e2"]))
    with pytest.raises(StoreError, match="another writer") as caught:
        await second.commit(_batch(["V"], ["e3"]))
    assert not isinstance(caught.value, StoreUnavailable)
    stats = await first.snapshot()
    assert (stats.total, stats.distinct_users) == (2, 1)


async def test_a_commit_whose_ack_was_lost_counts_once_when_retried() -> None:
    """The batch landed but the client timed out: the retry recognises it and adds nothing."""
    node = FakeCluster()
    store = await _opened(node)
    batch = _batch(["U", "V"], ["e1", "e2", "e3"])
    node.fail(_is_commit, "after")
    with pytest.raises(StoreUnavailable):
        await store.commit(batch)
    await store.commit(batch)
    await store.commit(_batch(["U", "W"], ["e4"]))
    stats = await (await _opened(node, "a")).snapshot()
    assert (stats.total, stats.distinct_users) == (4, 3)
    again = await _opened(node, "a")  # after a restart, U, V, W are still counted claims
    await again.commit(_batch(["U", "V", "W"], ["e5"]))
    assert await _distinct(node) == 3


async def test_a_batch_landing_late_after_a_restart_changes_nothing() -> None:
    """A timed-out batch delivered after the next process committed is refused by its IF."""
    node = FakeCluster()
    dead = await _opened(node)
    await dead.commit(_batch(["u1"], ["e1"]))
    node.fail(_is_commit, "hold")
    with pytest.raises(StoreUnavailable):
        await dead.commit(_batch(["u2", "u3"], ["e2", "e3"]))
    restarted = await _opened(node)
    await restarted.commit(_batch(["u2", "u3"], ["e2", "e3"]))  # replayed after the restart
    await restarted.commit(_batch(["u4"], ["e4"]))
    ((late,),) = node.land_held()
    assert late["[applied]"] is False
    third = await _opened(node)  # crash again; the claims must still say who counted whom
    await third.commit(_batch(["u1", "u2", "u3", "u4"], ["e5"]))
    stats = await third.snapshot()
    assert (stats.total, stats.distinct_users) == (5, 4)
    assert (await third.resume_point()).recent_ids == ["e1", "e2", "e3", "e4", "e5"]


async def test_orphans_of_a_crash_are_counted_once_after_restart() -> None:
    """Users claimed by a batch that never landed are counted by the replay, once."""
    node = FakeCluster()
    dead = await _opened(node)
    node.fail(_is_commit, "before")
    with pytest.raises(StoreUnavailable):
        await dead.commit(_batch(["u1", "u2"], ["e1"]))
    restarted = await _opened(node)
    await restarted.commit(_batch(["u1", "u2"], ["e1"]))
    await restarted.commit(_batch(["u1", "u2"], ["e2"]))
    assert await _distinct(node) == 2


# --- reads, window, tombstones, cost -------------------------------------------------------


async def test_open_reads_the_partition_once_at_serial_consistency() -> None:
    """Opening an existing ingester reads its partition in one SERIAL query."""
    node = FakeCluster()
    await (await _opened(node)).commit(_batch(["U"], ["e1"]))
    node.log.clear()
    await _opened(node)
    # Left out: the schema step's look for claims of the old 256-shard layout (`reshard.py`).
    reads = [
        (cql, level)
        for cql, _, level in node.log
        if cql.startswith("SELECT") and "FROM users WHERE shard = ?" not in cql
    ]
    assert reads == [(STATEMENTS["load"], driver.consistency_levels("LOCAL_QUORUM")[1])]


async def test_a_long_replay_leaves_no_tombstone_and_a_bounded_partition() -> None:
    """Hundreds of commits write no tombstone, keep the window exact and the partition small."""
    node = FakeCluster()
    store = await _opened(node, dedup_window=30)
    ids = [f"e{i}" for i in range(4000)]
    start = 0
    for n in range(400):
        size = 1 + (n * 7) % 13  # batches of 1..13 ids, some smaller than a slot, some larger
        await store.commit(_batch([f"u{n % 40}"], ids[start : start + size]))
        start += size
    assert node.tombstones == 0
    rows = node.run(KS, "SELECT kind, name FROM ingesters WHERE ingester_id = ?", ["a"])
    assert len([r for r in rows if r["kind"] == "recent"]) <= SLOTS
    assert len([r for r in rows if r["kind"] == "epoch"]) == 1
    point = await (await _opened(node, dedup_window=30)).resume_point()
    assert point.recent_ids == ids[start - 30 : start]
    assert point.position == ids[start - 1]


async def test_batches_bigger_than_a_slot_keep_the_partition_to_the_window() -> None:
    """Big batches each fill a slot; slots older than the window are emptied, not kept."""
    node = FakeCluster()
    store = await _opened(node, dedup_window=250)
    ids = [f"e{i}" for i in range(100 * 60)]
    for n in range(60):
        await store.commit(_batch([], ids[n * 100 : (n + 1) * 100]))
    cql = "SELECT kind, ids FROM ingesters WHERE ingester_id = ?"
    held = sum(len(r["ids"] or ()) for r in node.run(KS, cql, ["a"]) if r["kind"] == "recent")
    assert held == 300  # the three newest batches: the window (250) needs part of the third
    assert node.tombstones == 0
    point = await (await _opened(node, dedup_window=250)).resume_point()
    assert point.recent_ids == ids[-250:]


async def test_users_this_process_saw_counted_cost_no_round_trip() -> None:
    """Users counted by an earlier commit of this process are not claimed again, nor read."""
    node = FakeCluster()
    store = await _opened(node)
    await store.commit(_batch(["U", "V"], ["e1"]))
    node.log.clear()
    await store.commit(_batch(["U", "V", "W"], ["e2"]))
    claims = [p[1::5] for cql, p, _ in node.log if "INSERT INTO users" in cql]
    assert claims == [["W"]]
    assert [cql.split()[:4] for cql, _, _ in node.log] == [
        ["BEGIN", "BATCH", "INSERT", "INTO"],  # the claim of W
        ["BEGIN", "BATCH", "UPDATE", "ingesters"],  # the commit
    ]


# --- driver boundary ------------------------------------------------------------------------


async def test_missing_tables_ask_for_wikipulse_migrate() -> None:
    """Opening without a schema fails for good with a message naming `wikipulse migrate`."""
    node = FakeCluster()
    node.keyspaces.add(KS)
    with pytest.raises(StoreError, match="wikipulse migrate") as caught:
        await _opened(node, create_schema=False)
    assert not isinstance(caught.value, StoreUnavailable)


async def test_schema_changes_wait_longer_than_the_drivers_default() -> None:
    """CREATE and ALTER run with the 60 s DDL timeout: the driver's 10 s failed CREATE KEYSPACE
    on a three-node cluster just started, though the node applied it moments later."""
    node = FakeCluster()
    await (await _opened(node)).close()
    kinds = {cql.split()[0] for cql, _ in node.ddl_timeouts}
    assert kinds == {"CREATE", "ALTER"}
    assert {timeout for _, timeout in node.ddl_timeouts} == {driver.DDL_TIMEOUT}
    assert driver.DDL_TIMEOUT >= 60


async def test_schema_disagreement_is_an_outage_to_wait_out() -> None:
    """Nodes that do not agree on the schema yet make opening a retryable failure."""
    node = FakeCluster()
    node.control_connection.agreed = False
    with pytest.raises(StoreUnavailable, match="agree"):
        await _opened(node)


async def test_timeouts_surface_as_store_unavailable() -> None:
    """A driver timeout while loading becomes StoreUnavailable, which the pipeline retries."""
    node = FakeCluster()
    node.fail(lambda cql, p: cql.startswith("SELECT"), "before")
    with pytest.raises(StoreUnavailable, match="fake timeout"):
        await _opened(node)


def test_the_reactor_chosen_imports_on_this_python() -> None:
    """The connection class is libev's where its extension loads, else asyncio's."""
    from cassandra.connection import Connection

    chosen = driver.connection_class()
    assert issubclass(chosen, Connection)
    assert chosen.__name__ in ("LibevConnection", "AsyncioConnection")
    try:
        import cassandra.io.libevwrapper  # noqa: F401
    except ImportError:
        assert chosen.__name__ == "AsyncioConnection"
    else:
        assert chosen.__name__ == "LibevConnection"


async def test_connect_passes_the_chosen_reactor_to_the_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cluster is built with an explicit connection class, not the driver's default."""
    import cassandra.cluster

    built: dict[str, Any] = {}

    class Cluster:
        def __init__(self, hosts: list[str], **kwargs: Any) -> None:
            built.update(kwargs)

        def connect(self) -> None:
            raise cassandra.cluster.NoHostAvailable("none reachable", {})

        def shutdown(self) -> None:
            pass

    monkeypatch.setattr(cassandra.cluster, "Cluster", Cluster)
    with pytest.raises(StoreUnavailable, match="none reachable"):
        await CassandraStore(["127.0.0.9"]).open()
    assert built["connection_class"] is driver.connection_class()


def test_serving_leaves_the_cassandra_schema_alone_unless_asked() -> None:
    """Opening creates the schema only when WIKIPULSE_MIGRATE_ON_START is set explicitly."""
    env = {"WIKIPULSE_STORE": "cassandra"}
    default = CassandraStore.from_settings(load_settings(environ=env, env_file=None))
    asked = load_settings(environ=env | {"WIKIPULSE_MIGRATE_ON_START": "true"}, env_file=None)
    assert (default._create_schema, CassandraStore.from_settings(asked)._create_schema) == (
        False,
        True,
    )


async def test_claims_of_any_size_use_the_statements_prepared_on_open() -> None:
    """Claim batches of every size are BATCH messages of one prepared statement: a node caches
    what a store prepares, and a statement per size (hundreds) overflowed its cache."""
    node = FakeCluster()
    store = await _opened(node)
    session = store._cql.session
    assert session is not None
    prepared = []
    for seq, count in enumerate((1, 7, 130, 1000, 333), start=1):
        users = [f"user {seq}-{i}" for i in range(count)]
        await store.commit(_batch(users, [f"e{seq}-{i}" for i in range(count)]))
        prepared.append(len(session._prepared))  # type: ignore[attr-defined]
    # the first commit prepared its shape of commit batch (no windows here); claims nothing
    assert prepared == [prepared[0]] * 5
    assert (await store.snapshot()).distinct_users == 1 + 7 + 130 + 1000 + 333
    claimed = [name for cql, p, _ in node.log if "INSERT INTO users" in cql for name in p[1::5]]
    assert len(claimed) == len(set(claimed)) == 1471  # each user in one batch, once


async def test_a_request_the_driver_could_not_send_is_sent_again() -> None:
    """Every connection busy (its write buffer full): the request was never sent, so the store
    sends it again shortly instead of failing the commit; a timeout still fails it."""
    node = FakeCluster()
    store = await _opened(node)
    node.fail(lambda cql, p: "INSERT INTO users" in cql, "busy", times=3)
    node.fail(_is_commit, "busy", times=2)
    await store.commit(_batch(["U", "V"], ["e1", "e2"]))
    assert (await store.snapshot()).distinct_users == 2
    assert sum(1 for cql, _, _ in node.log if _is_commit(cql, [])) == 3
    node.fail(_is_commit, "before")
    with pytest.raises(StoreUnavailable):
        await store.commit(_batch(["W"], ["e3"]))
