"""Sealed hour rows of the Cassandra windows: derived off the commit path, never read wrong.

An hour row is written after the commit that closed the hour, in the background
(`stores/cassandra/window_seal.py`). These tests pin what makes that safe: a sealed row that a
later late event made stale is never read, an hour that a crash left unsealed is read from its
minutes and sealed on the next open, and readers answer exactly while sealing is behind.
Every answer is compared with an independent count of the file (a plain loop).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.stores.conftest import StoreKind
from tests.stores.fake_cql import FakeCluster
from tests.stores.test_contract import _feed, _pipeline, opened
from tests.stores.test_windows_contract import _assert_windows_exact
from tests.support.generated import generate
from tests.support.windows_expected import counted_events
from wikipulse.events import parse_dt
from wikipulse.stores.cassandra import CassandraStore
from wikipulse.stores.cassandra.window_seal import parse_stale, valid_sealed
from wikipulse.window_query import FIVE_MINUTES
from wikipulse.windows import HOUR

pytestmark = pytest.mark.anyio

CASSANDRA_KINDS = ["cassandra-fake", pytest.param("cassandra", marks=pytest.mark.cassandra)]


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """3000 generated events over about 2.8 hours of event time, with hot pages."""
    out = tmp_path_factory.mktemp("cseal")
    return generate(out, 3000, seed=13, page_skew=4, rate=0.3).read_bytes().splitlines()


def _late(lines: list[bytes], count: int, at: str | None = None) -> list[bytes]:
    """`count` new events dated in the first hour of `lines` (or at `at`), all by one user on
    one page (so they change the bucket's totals, users and top lists), as a late feed would
    bring them."""
    first = json.loads(next(line for line in lines if b'"canary"' not in line))
    out = []
    for i in range(count):
        event = dict(first)
        event["meta"] = dict(first["meta"], id=f"late-{at}-{i}", dt=at or first["meta"]["dt"])
        event["user"] = "Late Larry"
        event["title"] = "Late page"
        out.append(json.dumps(event).encode())
    return out


async def _hour_rows(store: CassandraStore, hour: int, g: int = HOUR) -> list[dict[str, Any]]:
    """The valid sealed rows of one bucket (an hour, or 5 minutes) of this store's ingester,
    as a reader judges them."""
    rows = await store._execute("win_load", [store._me, g, hour - hour % HOUR])
    meta = await store._execute("win_meta", [store._me, ["epoch", "stale"]])
    epochs = {r["name"]: r["last_seq"] for r in meta if r["kind"] == "epoch"}
    stale = {parse_stale(r["name"]): r["last_seq"] for r in meta if r["kind"] == "stale"}
    return [r for r in rows if r["bucket"] == hour and valid_sealed(r, g, epochs, stale)]


def _first_hour(lines: list[bytes]) -> int:
    """The hour of the first counted event (the late events' hour)."""
    first = json.loads(next(line for line in lines if b'"canary"' not in line))
    second = parse_dt(first["meta"]["dt"])
    assert second is not None
    return int(second) - int(second) % HOUR


@pytest.mark.parametrize("kind", CASSANDRA_KINDS, indirect=True)
async def test_a_late_event_makes_the_sealed_hour_row_stale(
    kind: StoreKind, lines: list[bytes]
) -> None:
    """The first hour is sealed; then late events for it are committed while sealing is held
    back: its sealed row no longer holds every event, and readers must not use it."""
    late = _late(lines, 40)
    hour = _first_hour(lines)
    store = kind.make()
    assert isinstance(store, CassandraStore)
    async with opened(store):
        await _feed(_pipeline(store), lines)
        await store._windows.sealer.drain()
        assert await _hour_rows(store, hour), "the first hour must have been sealed"
        store._windows.sealer.paused = True  # the hour is not sealed again
        await _feed(_pipeline(store), [*lines, *late], len(lines))
        assert not await _hour_rows(store, hour), "the old hour row must be stale now"
        await _assert_windows_exact(store, [*lines, *late])
        store._windows.sealer.paused = False
    async with opened(kind.make()) as reader:
        assert isinstance(reader, CassandraStore)
        await _assert_windows_exact(reader, [*lines, *late])


@pytest.mark.parametrize("kind", CASSANDRA_KINDS, indirect=True)
async def test_a_late_event_is_sealed_again(kind: StoreKind, lines: list[bytes]) -> None:
    """After a late event, the hour is sealed again from its minutes: a valid row once more,
    and exact."""
    late = _late(lines, 25)
    hour = _first_hour(lines)
    store = kind.make()
    assert isinstance(store, CassandraStore)
    async with opened(store):
        await _feed(_pipeline(store), [*lines, *late])
        await store._windows.sealer.drain()
        rows = await _hour_rows(store, hour)
        assert rows
        await _assert_windows_exact(store, [*lines, *late])


@pytest.mark.parametrize("kind", CASSANDRA_KINDS, indirect=True)
async def test_an_hour_left_unsealed_by_a_crash_is_read_from_minutes_then_sealed_on_open(
    kind: StoreKind, lines: list[bytes]
) -> None:
    """Sealing never runs (the process dies after each commit that closes an hour, before
    the seal): every answer is still exact, from the minutes; the next open seals the hour
    before the newest event's."""
    store = kind.make()
    assert isinstance(store, CassandraStore)
    store._windows.sealer.paused = True
    async with opened(store):
        await _feed(_pipeline(store), lines)
        newest = store._windows.newest
        assert newest is not None
        previous = newest - newest % HOUR - HOUR
        assert not await _hour_rows(store, previous)
        assert store._windows.sealer.sealed == 0
        await _assert_windows_exact(store, lines)
        store._windows.sealer.forget()
    again = kind.make()
    assert isinstance(again, CassandraStore)
    async with opened(again):
        await again._windows.sealer.drain()
        assert await _hour_rows(again, previous), "open must seal the previous hour"
        await _assert_windows_exact(again, lines)
    async with opened(kind.make()) as reader:
        assert isinstance(reader, CassandraStore)
        await reader._windows.sealer.drain()
        assert reader._windows.sealer.sealed == 0, "a sealed hour is not sealed again"


async def test_sealing_in_a_worker_process_gives_the_same_rows(
    tmp_path: Any, lines: list[bytes]
) -> None:
    """The worker process computes exactly the row the event loop would."""
    from tests.stores.fake_cql import FakeCluster

    rows = []
    for in_process in (False, True):
        node = FakeCluster()
        store = CassandraStore(
            keyspace="ks",
            dedup_window=400,
            create_schema=True,
            session=node.session(),
            seal_in_process=in_process,
        )
        async with opened(store):
            await _feed(_pipeline(store), lines)
            await store._windows.sealer.drain()
            assert store._windows.sealer.sealed >= 2
            await _assert_windows_exact(store, lines)
            found = await _hour_rows(store, _first_hour(lines))
            assert len(found) == 1
            rows.append({k: found[0][k] for k in ("counts", "users", "pages")})
    assert rows[0] == rows[1]


@pytest.mark.parametrize("kind", CASSANDRA_KINDS, indirect=True)
async def test_a_late_event_makes_a_sealed_five_minutes_row_stale(
    kind: StoreKind, lines: list[bytes]
) -> None:
    """A 5-minute bucket of the newest hour, sealed, then late events for it while sealing is
    held back: readers must sum its minutes, not its sealed row (timeseries at step 300 and
    top lists over the newest hour read 5-minute rows)."""
    store = kind.make()
    assert isinstance(store, CassandraStore)
    async with opened(store):
        await _feed(_pipeline(store), lines)
        await store._windows.sealer.drain()
        newest = store._windows.newest
        assert newest is not None
        bucket = newest - newest % FIVE_MINUTES - 3 * FIVE_MINUTES
        assert bucket >= newest - newest % HOUR, "the bucket must be in the newest hour"
        assert await _hour_rows(store, bucket, FIVE_MINUTES), "it must have been sealed"
        at = datetime.fromtimestamp(bucket + 130, UTC).isoformat().replace("+00:00", "Z")
        late = _late(lines, 30, at)
        store._windows.sealer.paused = True
        await _feed(_pipeline(store), [*lines, *late], len(lines))
        assert not await _hour_rows(store, bucket, FIVE_MINUTES)
        await _assert_windows_exact(store, [*lines, *late])
        store._windows.sealer.paused = False
        await store._windows.sealer.drain()
    async with opened(kind.make()) as reader:
        assert isinstance(reader, CassandraStore)
        await reader._windows.sealer.drain()
        assert await _hour_rows(reader, bucket, FIVE_MINUTES), "sealed again on open"
        await _assert_windows_exact(reader, [*lines, *late])


_SEALING_PARENT = """
import asyncio, os, sys, time
from wikipulse.stores.cassandra import window_seal

async def main():
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(window_seal._process_pool(), window_seal.seal_blobs, [])
    print(os.getpid(), flush=True)
    time.sleep(120)

if __name__ == "__main__":
    asyncio.run(main())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("kind", CASSANDRA_KINDS, indirect=True)
async def test_sealed_rows_list_their_distinct_user_names(
    kind: StoreKind, lines: list[bytes]
) -> None:
    """A sealed hour row lists its distinct user names (what a timeseries over all wikis
    unions instead of every wiki's users with their counts): exactly the hour's users."""
    store = kind.make()
    assert isinstance(store, CassandraStore)
    async with opened(store):
        await _feed(_pipeline(store), lines)
        await store._windows.sealer.drain()
        hour = _first_hour(lines)
        valid = {(r["seq"], r["epoch"]) for r in await _hour_rows(store, hour)}
        assert valid
        read = "win_read:users_n,user_names"
        rows = await store._execute(read, [store._me, HOUR, hour, hour, hour + 1])
        rows = [r for r in rows if (r["seq"], r["epoch"]) in valid]
    expected = {e.user for e in counted_events(lines) if e.user and hour <= e.second < hour + HOUR}
    for row in rows:
        names = msgspec.msgpack.decode(row["user_names"])
        assert sorted(names) == sorted(expected)
        assert row["users_n"] == len(expected)


async def test_rows_sealed_before_user_names_existed_are_summed_from_finer_rows(
    lines: list[bytes],
) -> None:
    """Sealed rows written before `user_names` (the column null): a reader does not take them
    for buckets without users, but sums their buckets from the finer level; every answer
    stays exact (the fake node, whose rows can be edited in place)."""
    node = FakeCluster()
    store = CassandraStore(keyspace="ks", session=node.session(), create_schema=True)
    async with opened(store):
        await _feed(_pipeline(store), lines)
        await store._windows.sealer.drain()
        emptied = 0
        for _, rows in node.table("ks", "window_versions").data.values():
            for row in rows.values():
                if row.get("user_names") is not None:
                    row["user_names"] = None
                    emptied += 1
        assert emptied
        await _assert_windows_exact(store, lines)


def test_the_seal_worker_ends_when_its_parent_is_killed(tmp_path: Any) -> None:
    """A `serve` killed with SIGKILL must not leave its seal worker process behind."""
    script = tmp_path / "parent.py"
    script.write_text(_SEALING_PARENT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert int(proc.stdout.readline()) == proc.pid
        children = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and _parent_of(p) == proc.pid
        ]
        assert children, "the pool must have started a worker"
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(c) for c in children):
        time.sleep(0.2)
    assert not any(_alive(c) for c in children)


def _parent_of(proc_dir: Path) -> int | None:
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.cassandra
async def test_migrate_adds_wiki_users_to_an_older_window_table(
    cassandra_keyspace: str, lines: list[bytes]
) -> None:
    """A keyspace made before `wiki_users` and `user_names` existed: `wikipulse migrate` adds
    the columns, and the store then writes them on sealed rows; every answer stays exact."""
    from cassandra.cluster import Cluster

    from tests.stores.conftest import CASSANDRA_HOSTS, CASSANDRA_PORT
    from wikipulse.stores.cassandra.driver import connection_class

    def make() -> CassandraStore:
        return CassandraStore(
            CASSANDRA_HOSTS.split(","),
            port=CASSANDRA_PORT,
            keyspace=cassandra_keyspace,
            dedup_window=400,
            consistency="ONE",
        )

    await make().migrate()
    cluster = Cluster(
        CASSANDRA_HOSTS.split(","), port=CASSANDRA_PORT, connection_class=connection_class()
    )
    try:
        session = cluster.connect()
        for column in ("wiki_users", "user_names"):
            session.execute(f"ALTER TABLE {cassandra_keyspace}.window_versions DROP {column}")
        columns = session.execute(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s "
            "AND table_name = 'window_versions'",
            [cassandra_keyspace],
        )
        assert not {"wiki_users", "user_names"} & {r.column_name for r in columns}
        await make().migrate()
        columns = session.execute(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s "
            "AND table_name = 'window_versions'",
            [cassandra_keyspace],
        )
        assert {"wiki_users", "user_names"} <= {r.column_name for r in columns}
    finally:
        cluster.shutdown()
    store = make()
    async with opened(store):
        await _feed(_pipeline(store), lines)
        await store._windows.sealer.drain()
        hour = _first_hour(lines)
        assert await _hour_rows(store, hour)
        read = "win_read:wiki_users,user_names"
        rows = await store._execute(read, [store._me, HOUR, hour, hour, hour + 1])
        assert any(row["wiki_users"] and row["user_names"] for row in rows)
        await _assert_windows_exact(store, lines)
