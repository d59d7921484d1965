"""Stores under test: each kind as a factory of instances that share one backend."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.stores.fake_cql import FakeCluster
from tests.support.generated import generate
from wikipulse.stores import StatsStore
from wikipulse.stores.cassandra.driver import connection_class
from wikipulse.stores.memory import MemoryStore
from wikipulse.stores.postgres import PostgresStore
from wikipulse.stores.sqlite import SQLiteStore

POSTGRES_DSN = os.environ.get(
    "WIKIPULSE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
CASSANDRA_HOSTS = os.environ.get("WIKIPULSE_TEST_CASSANDRA_HOSTS", "")
CASSANDRA_PORT = int(os.environ.get("WIKIPULSE_TEST_CASSANDRA_PORT", "9042"))
WINDOW = 400  # smaller than the event files, so that trimming the window is exercised


@dataclass
class StoreKind:
    """How to build a store of one kind; every instance made shares the same backend."""

    name: str
    durable: bool
    make: Callable[..., StatsStore]


@pytest.fixture(scope="session")
def events(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """3000 generated events (with canaries) as NDJSON lines, then 30 of them again."""
    out = tmp_path_factory.mktemp("events")
    lines = generate(out, 3000, seed=7, canaries=5).read_bytes().splitlines()
    return lines + lines[-130:-100]  # repeats within the dedup window: counted once


def _unreachable(reason: str) -> None:
    """Skip a test whose server is out of reach, or fail it on CI, where the server must be up."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: store tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


def _postgres_reachable() -> str | None:
    import asyncpg  # type: ignore[import-untyped]

    async def probe() -> None:
        conn = await asyncpg.connect(POSTGRES_DSN, timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"PostgreSQL at WIKIPULSE_TEST_POSTGRES_DSN is unreachable: {exc}"
    return None


@pytest.fixture(scope="session")
def postgres_skip_reason() -> str | None:
    """Why the PostgreSQL tests cannot run, or None if they can."""
    return _postgres_reachable()


@pytest.fixture
def postgres_schema(postgres_skip_reason: str | None) -> Iterator[str]:
    """A fresh schema for one test, dropped afterwards."""
    if postgres_skip_reason:
        _unreachable(postgres_skip_reason)
    schema = f"wp_test_{uuid.uuid4().hex[:12]}"
    yield schema
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(POSTGRES_DSN)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()

    asyncio.run(drop())


def _cassandra_reachable() -> str | None:
    if not CASSANDRA_HOSTS:
        return "set WIKIPULSE_TEST_CASSANDRA_HOSTS to a reachable cluster to run this"
    from cassandra.cluster import Cluster

    cluster = Cluster(
        CASSANDRA_HOSTS.split(","),
        port=CASSANDRA_PORT,
        connect_timeout=3,
        connection_class=connection_class(),
    )
    try:
        cluster.connect().shutdown()
    except Exception as exc:
        return f"Cassandra at WIKIPULSE_TEST_CASSANDRA_HOSTS is unreachable: {exc}"
    finally:
        cluster.shutdown()
    return None


@pytest.fixture(scope="session")
def cassandra_skip_reason() -> str | None:
    """Why the Cassandra tests cannot run, or None if they can."""
    return _cassandra_reachable()


@pytest.fixture
def cassandra_keyspace(cassandra_skip_reason: str | None) -> Iterator[str]:
    """A fresh keyspace for one test on the cluster named by the environment, dropped after."""
    yield from _fresh_keyspace(cassandra_skip_reason)


#: Seconds a test allows a schema change (the driver's default request timeout is 10 s).
DDL_TIMEOUT = 60.0


def _fresh_keyspace(cassandra_skip_reason: str | None) -> Iterator[str]:
    """Yield a new keyspace name (fail or skip if the cluster is out of reach); drop it after."""
    if cassandra_skip_reason:
        _unreachable(cassandra_skip_reason)
    keyspace = f"wp_test_{uuid.uuid4().hex[:12]}"
    yield keyspace
    from cassandra.cluster import Cluster

    cluster = Cluster(
        CASSANDRA_HOSTS.split(","), port=CASSANDRA_PORT, connection_class=connection_class()
    )
    try:
        # Schema changes on a cluster whose node just came back can take longer than the
        # driver's 10 s request timeout on this 2-core machine (seen once in CI as "Connection
        # defunct by heartbeat", the driver's name for a client-side timeout).
        cluster.connect().execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=DDL_TIMEOUT)
    finally:
        cluster.shutdown()


CLUSTER_REPLICATION = "{'class': 'SimpleStrategy', 'replication_factor': 3}"


@pytest.fixture
def cluster_keyspace(cassandra_skip_reason: str | None) -> Iterator[str]:
    """A fresh keyspace name on the three-node cluster (RF 3 when made), dropped after."""
    if os.environ.get("WIKIPULSE_TEST_CASSANDRA_CLUSTER") != "1":
        # The single-node run leaves these to the cluster run (.ci/run runs both).
        pytest.skip("set WIKIPULSE_TEST_CASSANDRA_CLUSTER=1 with the three-node cluster's hosts")
    if len(CASSANDRA_HOSTS.split(",")) < 3:
        _unreachable("WIKIPULSE_TEST_CASSANDRA_HOSTS must name the three nodes of the cluster")
    yield from _fresh_keyspace(cassandra_skip_reason)


KINDS = [
    "memory",
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    "cassandra-fake",
    pytest.param("cassandra", marks=pytest.mark.cassandra),
]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest, tmp_path: Path) -> StoreKind:
    """Each store kind in turn."""
    name: str = request.param
    if name == "memory":
        shared = MemoryStore()
        return StoreKind(name, False, lambda cls=None: shared)
    if name == "sqlite":
        path = tmp_path / "stats.db"

        def sqlite(cls: type[Any] = SQLiteStore) -> StatsStore:
            return cls(path, dedup_window=WINDOW)  # type: ignore[no-any-return]

        return StoreKind(name, True, sqlite)
    if name == "postgres":
        schema = request.getfixturevalue("postgres_schema")

        def postgres(cls: type[Any] = PostgresStore) -> StatsStore:
            return cls(POSTGRES_DSN, schema=schema, dedup_window=WINDOW)  # type: ignore[no-any-return]

        return StoreKind(name, True, postgres)
    from wikipulse.stores.cassandra import CassandraStore

    if name == "cassandra-fake":
        node = FakeCluster()

        def fake(cls: type[Any] = CassandraStore) -> StatsStore:
            return cls(  # type: ignore[no-any-return]
                keyspace="ks", dedup_window=WINDOW, create_schema=True, session=node.session()
            )

        return StoreKind(name, True, fake)
    keyspace = request.getfixturevalue("cassandra_keyspace")

    def cassandra(cls: type[Any] = CassandraStore) -> StatsStore:
        return cls(  # type: ignore[no-any-return]
            CASSANDRA_HOSTS.split(","),
            port=CASSANDRA_PORT,
            keyspace=keyspace,
            dedup_window=WINDOW,
            consistency="ONE",
            create_schema=True,
        )

    return StoreKind(name, True, cassandra)
