"""The Cassandra store at the driver boundary: the exact CQL and values it sends."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from cassandra.cluster import NoHostAvailable

from wikipulse.stats import Batch
from wikipulse.stores import StoreUnavailable
from wikipulse.stores.cassandra import STATEMENTS, CassandraStore, schema_cql

pytestmark = pytest.mark.anyio

Rows = list[dict[str, Any]]


class FakePrepared:
    """What `Session.prepare` returns: here just the CQL."""

    def __init__(self, cql: str) -> None:
        self.cql = cql


class FakeFuture:
    """A `ResponseFuture` that already holds its single page (or its error)."""

    has_more_pages = False

    def __init__(self, rows: Rows | None, error: BaseException | None) -> None:
        self._rows, self._error = rows, error

    def add_callbacks(self, callback: Callable[[Rows], None], errback: Callable[..., None]) -> None:
        if self._error is not None:
            errback(self._error)
        else:
            callback(self._rows or [])


class FakeSession:
    """Records every statement and its values; `answer` gives canned rows by statement name."""

    def __init__(self, answer: Callable[[str, Sequence[Any]], Rows] | None = None) -> None:
        self.keyspace: str | None = None
        self.prepared: list[str] = []
        self.sent: list[tuple[str, list[Any]]] = []
        self._answer = answer or (lambda name, params: [])
        self.names = {cql: name for name, cql in STATEMENTS.items()}

    def set_keyspace(self, keyspace: str) -> None:
        self.keyspace = keyspace

    def prepare(self, query: str) -> FakePrepared:
        self.prepared.append(query)
        return FakePrepared(query)

    def execute_async(self, query: Any, parameters: Sequence[Any] | None = None) -> FakeFuture:
        cql = query.cql if isinstance(query, FakePrepared) else query
        self.sent.append((cql, list(parameters or [])))
        try:
            return FakeFuture(self._answer(self.names.get(cql, cql), parameters or []), None)
        except BaseException as exc:  # the fake cluster fails this request
            return FakeFuture(None, exc)

    def sent_named(self, name: str) -> list[list[Any]]:
        return [params for cql, params in self.sent if cql == STATEMENTS[name]]


def _batch(users: list[str], ids: list[str], position: str) -> Batch:
    batch = Batch(total=len(ids), bots=1, users=set(users), event_ids=ids, position=position)
    batch.by_server_name = {"en.wikipedia.org": len(ids) - 1, "www.wikidata.org": 1}
    batch.touched = True
    return batch


async def _open(session: FakeSession, **kwargs: Any) -> CassandraStore:
    store = CassandraStore(keyspace="ks", ingester_id="a", session=session, **kwargs)
    await store.open()
    return store


async def test_open_creates_schema_binds_keyspace_and_prepares_every_statement() -> None:
    """Opening runs the schema CQL, binds the keyspace and prepares each statement once."""
    session = FakeSession()
    await _open(session, replication="{'class': 'NetworkTopologyStrategy', 'dc1': 3}")
    ddl = [cql for cql, _ in session.sent[:3]]
    assert ddl == schema_cql("ks", "{'class': 'NetworkTopologyStrategy', 'dc1': 3}")
    assert ddl[0] == (
        "CREATE KEYSPACE IF NOT EXISTS ks WITH replication = "
        "{'class': 'NetworkTopologyStrategy', 'dc1': 3}"
    )
    assert session.keyspace == "ks"
    assert session.prepared == list(STATEMENTS.values())
    assert session.sent_named("load") == [["a"]]


async def test_open_without_migration_sends_no_schema_statements() -> None:
    """With schema creation off, opening only loads this ingester's state."""
    session = FakeSession()
    await _open(session, create_schema=False)
    assert [cql for cql, _ in session.sent] == [
        STATEMENTS["load"],
        STATEMENTS["epochs"],
        STATEMENTS["recent"],
    ]


async def test_commit_claims_new_users_and_writes_absolute_totals_in_one_batch() -> None:
    """A commit reads claims, claims absent users with IF NOT EXISTS, then writes one batch."""

    def answer(name: str, params: Sequence[Any]) -> Rows:
        if name == "load":
            row = {"seq": 4, "total": 10, "bots": 2, "distinct_users": 3, "position": "p4"}
            return [row | {"by_server": {"en.wikipedia.org": 9, "de.wikipedia.org": 1}}]
        if name == "claim_read" and params[0] == "old":
            return [{"ingester_id": "b", "epoch": "e", "seq": 1}]
        if name == "claim":
            return [{"[applied]": True}]
        return []

    session = FakeSession(answer)
    store = await _open(session, create_schema=False)
    epoch = store._epoch
    await store.commit(_batch(["new", "old"], ["id1", "id2", "id3"], "p5"))
    assert session.sent_named("claim_read") == [["new"], ["old"]]
    assert session.sent_named("claim") == [["new", "a", epoch, 5]]
    assert session.sent_named("state+recent") == [
        [
            5, 13, 3, 4, "p5", {"en.wikipedia.org": 11, "www.wikidata.org": 1}, "a",
            "a", epoch, 5,
            "a", "00000000000000000005", ["id1", "id2", "id3"],
        ]
    ]  # fmt: skip


async def test_window_rows_beyond_the_dedup_window_are_range_deleted() -> None:
    """Once newer rows hold the whole window, older recent rows go in the same batch."""

    def answer(name: str, params: Sequence[Any]) -> Rows:
        if name == "load":
            return [{"seq": 1, "total": 2, "bots": 0, "distinct_users": 0, "position": "p1",
                     "by_server": {}}]  # fmt: skip
        if name == "recent":
            return [{"name": "00000000000000000001", "ids": ["x", "y"]}]
        return []

    session = FakeSession(answer)
    store = await _open(session, create_schema=False, dedup_window=3)
    await store.commit(_batch([], ["id1", "id2", "id3"], "p2"))
    (params,) = session.sent_named("state+recent+trim")
    assert params[-5:] == [
        "a", "00000000000000000002", ["id1", "id2", "id3"],  # the new window row
        "a", "00000000000000000002",  # delete every row before it
    ]  # fmt: skip


async def test_own_orphaned_claim_is_reclaimed_and_counted() -> None:
    """A user claimed by this ingester in a commit that never landed is counted on replay."""

    def answer(name: str, params: Sequence[Any]) -> Rows:
        if name == "epochs":
            return [{"name": "dead-run", "last_seq": 6}]
        if name == "load":
            return [{"seq": 6, "total": 1, "bots": 0, "distinct_users": 1, "position": "p",
                     "by_server": {}}]  # fmt: skip
        if name == "claim_read":
            seq = {"orphan": 7, "committed": 6}[params[0]]
            return [{"ingester_id": "a", "epoch": "dead-run", "seq": seq}]
        if name == "reclaim":
            return [{"[applied]": True}]
        return []

    session = FakeSession(answer)
    store = await _open(session, create_schema=False)
    await store.commit(_batch(["orphan", "committed"], ["i"], "q"))
    assert session.sent_named("reclaim") == [["a", store._epoch, 7, "orphan", "a", "dead-run", 7]]
    (params,) = session.sent_named("state+recent")
    assert params[:4] == [7, 2, 1, 2]  # seq, total, bots, distinct users (one new)


async def test_failed_batch_is_retried_with_the_same_absolute_values() -> None:
    """A batch write that times out is retried with identical totals, so it cannot count twice."""
    failures = {"left": 1}

    def answer(name: str, params: Sequence[Any]) -> Rows:
        if name == "claim":
            return [{"[applied]": True}]
        if name == "claim_read" and failures["left"] == 0:
            # The first attempt's claim landed, under the epoch abandoned when it failed.
            return [{"ingester_id": "a", "epoch": first_epoch, "seq": 1}]
        if name == "reclaim":
            return [{"[applied]": True}]
        if name.startswith("state") and failures["left"]:
            failures["left"] -= 1
            raise NoHostAvailable("all hosts down", {})
        return []

    session = FakeSession(answer)
    store = await _open(session, create_schema=False)
    first_epoch = store._epoch
    batch = _batch(["u"], ["i1", "i2"], "p")
    with pytest.raises(StoreUnavailable):
        await store.commit(batch)
    await store.commit(batch)
    first, second = session.sent_named("state+recent")
    servers = {"en.wikipedia.org": 1, "www.wikidata.org": 1}
    assert first[:7] == second[:7] == [1, 2, 1, 1, "p", servers, "a"]
    assert first[8] != second[8]  # a new epoch after the failure


async def test_snapshot_sums_every_ingester() -> None:
    """The snapshot adds up the cumulative rows of all ingesters."""

    def answer(name: str, params: Sequence[Any]) -> Rows:
        if name == "snapshot":
            return [
                {"ingester_id": "a", "total": 5, "bots": 1, "distinct_users": 2,
                 "by_server": {"x": 3, "y": 2}},
                {"ingester_id": "b", "total": 4, "bots": 0, "distinct_users": 1,
                 "by_server": {"x": 4}},
            ]  # fmt: skip
        return []

    store = await _open(FakeSession(answer), create_schema=False)
    stats = await store.snapshot()
    assert stats.to_dict() == {
        "total": 9,
        "distinct_users": 3,
        "bots": 1,
        "non_bots": 8,
        "by_server_name": {"x": 7, "y": 2},
    }


async def test_resume_point_joins_the_window_rows_oldest_first() -> None:
    """The resume point is the stored position and the newest window of ids, in order."""

    def answer(name: str, params: Sequence[Any]) -> Rows:
        if name == "load":
            return [{"seq": 2, "total": 3, "bots": 0, "distinct_users": 0, "position": "p2",
                     "by_server": {}}]  # fmt: skip
        if name == "recent":
            return [{"name": "1", "ids": ["a", "b"]}, {"name": "2", "ids": ["c"]}]
        return []

    store = await _open(FakeSession(answer), create_schema=False, dedup_window=2)
    point = await store.resume_point()
    assert (point.position, point.recent_ids) == ("p2", ["b", "c"])


async def test_unreachable_cluster_surfaces_as_store_unavailable() -> None:
    """Driver errors meaning the cluster is down become StoreUnavailable."""

    def answer(name: str, params: Sequence[Any]) -> Rows:
        raise NoHostAvailable("no host", {})

    with pytest.raises(StoreUnavailable, match="no host"):
        await _open(FakeSession(answer), create_schema=False)
