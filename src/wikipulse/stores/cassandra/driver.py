"""The cassandra-driver boundary: cluster set-up, its reactor, awaiting futures, errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from cassandra import ConsistencyLevel, InvalidRequest, OperationTimedOut, RequestExecutionException
from cassandra.cluster import NoHostAvailable
from cassandra.connection import ConnectionBusy, ConnectionException
from cassandra.query import BatchStatement, BatchType

from wikipulse.stores import StoreError, StoreUnavailable

__all__ = [
    "CqlSession",
    "Rows",
    "blocking",
    "connect",
    "connection_class",
    "consistency_levels",
    "execute",
    "result",
    "row_batch",
    "translate",
    "wait_for_schema",
]

log = logging.getLogger(__name__)

Rows = list[dict[str, Any]]

#: What a down or overloaded cluster raises: the caller waits and tries again.
_UNAVAILABLE = (NoHostAvailable, OperationTimedOut, RequestExecutionException, ConnectionException)


class CqlSession(Protocol):
    """The part of `cassandra.cluster.Session` the store uses (faked in tests)."""

    def set_keyspace(self, keyspace: str) -> None:
        """Make `keyspace` the default of later statements (blocking)."""

    def prepare(self, query: str) -> Any:
        """Prepare a statement (blocking)."""

    def execute_async(
        self, query: Any, parameters: Sequence[Any] | None = None, timeout: float = ...
    ) -> Any:
        """Start a query and return its `ResponseFuture` (`timeout`: the client's, seconds)."""


def connection_class() -> type[Any]:
    """The reactor to connect with: libev if its C extension loads here, else asyncio."""
    try:
        from cassandra.io.libevreactor import LibevConnection
    except ImportError as exc:  # a source build without libev, or a platform with no wheel
        log.info("libev reactor unavailable (%s); using the asyncio reactor", exc)
        from cassandra.io.asyncioreactor import AsyncioConnection

        return AsyncioConnection  # type: ignore[no-any-return]
    return LibevConnection  # type: ignore[no-any-return]


def consistency_levels(consistency: str) -> tuple[int, int]:
    """The driver's (consistency, serial consistency) levels for a configured level name."""
    level = ConsistencyLevel.name_to_value[consistency]
    local = consistency.startswith("LOCAL")
    serial = ConsistencyLevel.LOCAL_SERIAL if local else ConsistencyLevel.SERIAL
    return level, serial


class _NegotiationIsInfo(logging.Filter):
    """The driver warns when it lowers its protocol version on connecting ("Downgrading core
    protocol version from 66 to 65 ..."): that is the version negotiation working, twice per
    connect to Cassandra 4 or 5, not a problem. It is logged at INFO instead of WARNING. (Pinning
    a version would avoid it, but refuse ScyllaDB, which speaks v4 only.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and str(record.msg).startswith("Downgrading"):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_NEGOTIATION = _NegotiationIsInfo()


async def connect(
    hosts: Sequence[str],
    *,
    port: int,
    consistency: str,
    username: str | None,
    password: str | None,
) -> tuple[Any, CqlSession]:
    """Connect to the cluster; return (cluster, session) or raise StoreUnavailable."""
    from cassandra.auth import PlainTextAuthProvider
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
    from cassandra.query import dict_factory

    logging.getLogger("cassandra.cluster").addFilter(_NEGOTIATION)  # once: filters are a set
    level, serial = consistency_levels(consistency)
    profile = ExecutionProfile(
        # Token-aware: each statement goes to a replica of its partition (and the driver warns
        # that a policy left implicit will become an error).
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
        consistency_level=level,
        serial_consistency_level=serial,
        row_factory=dict_factory,
    )
    auth = None
    if username is not None:
        auth = PlainTextAuthProvider(username, password or "")
    cluster = Cluster(
        list(hosts),
        port=port,
        auth_provider=auth,
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connection_class=connection_class(),
    )
    try:
        session = await asyncio.to_thread(cluster.connect)
    except Exception as exc:
        await asyncio.to_thread(cluster.shutdown)
        raise StoreUnavailable(f"Cassandra: {exc}") from exc
    return cluster, session


def row_batch(prepared: Any, rows: Iterable[Sequence[Any]]) -> Any:
    """One batch (a protocol BATCH message) of a prepared single-row statement over many rows.

    The claims of a shard went as CQL text, one `BEGIN BATCH` statement per number of rows:
    hundreds of sizes, each prepared, parsed and cached by the node (a 250-row one is large),
    overflowed its prepared-statement cache (10 MiB by default): in a replay it discarded ~1,200
    a minute, and parsing CQL was half of its CPU samples (JFR). As a BATCH message the node
    looks the one statement up by id for every row. Unlogged: the rows are of one partition, so
    the batch applies atomically anyway, and with conditions as one Paxos round.
    """
    batch = BatchStatement(batch_type=BatchType.UNLOGGED)
    for row in rows:
        batch.add(prepared.bind(row))
    return batch


#: The client-side timeout of schema changes. The driver's default (10 s) is too short for a
#: node that has just started or a cluster that must agree on the change: CREATE KEYSPACE timed
#: out after 10 s on the three-node cluster right after its start (the driver then reports the
#: connection as "defunct by heartbeat"), though the node applied it moments later.
DDL_TIMEOUT = 60.0


async def ddl(session: CqlSession, cql: str) -> Rows:
    """Run one schema change (CREATE, ALTER, DROP) with the longer `DDL_TIMEOUT`."""
    return await result(session.execute_async(cql, timeout=DDL_TIMEOUT))


async def wait_for_schema(session: CqlSession) -> None:
    """Wait until every node agrees on the schema, else raise StoreUnavailable."""
    cluster = getattr(session, "cluster", None)
    control = getattr(cluster, "control_connection", None)
    if control is None:
        return
    agreed = await asyncio.to_thread(control.wait_for_schema_agreement)
    if not agreed:
        raise StoreUnavailable("Cassandra: the nodes do not agree on the schema yet")


def translate(exc: BaseException) -> BaseException:
    """The store error a driver error stands for, or the error itself if it is none."""
    if isinstance(exc, InvalidRequest):
        text = str(exc)
        if "unconfigured table" in text or "does not exist" in text:
            return StoreError(
                f"Cassandra: {text}; create the schema with `wikipulse migrate` "
                "(or set WIKIPULSE_MIGRATE_ON_START=true)"
            )
    elif isinstance(exc, _UNAVAILABLE):
        return StoreUnavailable(f"Cassandra: {exc}")
    return exc


async def blocking(call: Callable[[str], Any], arg: str) -> Any:
    """Run a blocking driver call (prepare, set_keyspace) on a worker thread."""
    try:
        return await asyncio.to_thread(call, arg)
    except Exception as exc:
        mapped = translate(exc)
        if mapped is exc:
            raise
        raise mapped from exc


async def result(future: Any) -> Rows:
    """Await a driver `ResponseFuture` without blocking the loop, gathering every page."""
    loop = asyncio.get_running_loop()
    # The driver calls the callbacks from its own thread, once per page, for as long as they
    # stay registered: register once and point them at the future of the page awaited now.
    page: list[asyncio.Future[Rows]] = [loop.create_future()]

    def ok(rows: Any) -> None:
        loop.call_soon_threadsafe(_settle, page[0], list(rows or ()), None)

    def failed(exc: BaseException) -> None:
        loop.call_soon_threadsafe(_settle, page[0], None, exc)

    future.add_callbacks(ok, failed)
    rows: Rows = []
    while True:
        try:
            rows += await page[0]
        except Exception as exc:
            mapped = translate(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        if not future.has_more_pages:
            return rows
        page[0] = loop.create_future()
        future.start_fetching_next_page()


#: How often, and how long apart, a request the driver could not even send is sent again.
BUSY_ATTEMPTS = 40
BUSY_WAIT = 0.025


def _never_sent(exc: BaseException) -> bool:
    """Whether the driver refused a request before sending it anywhere: every host's
    connection was `ConnectionBusy` (its socket's write buffer full, as while a seal's 5 MB
    row is being written), so sending it again cannot apply it twice."""
    if not isinstance(exc, NoHostAvailable):
        return False
    errors: dict[Any, BaseException] = getattr(exc, "errors", None) or {}
    return bool(errors) and all(isinstance(e, ConnectionBusy) for e in errors.values())


async def execute(session: CqlSession, query: Any, params: Sequence[Any] | None = None) -> Rows:
    """Run a statement and await its rows (`result`); a request that no connection could take
    (`_never_sent`) is sent again a little later rather than failing the whole commit, which
    the pipeline would then retry from the start after its back-off."""
    for _ in range(BUSY_ATTEMPTS - 1):
        try:
            return await result(session.execute_async(query, params))
        except StoreUnavailable as exc:
            if exc.__cause__ is None or not _never_sent(exc.__cause__):
                raise
        await asyncio.sleep(BUSY_WAIT)
    return await result(session.execute_async(query, params))


def _settle(done: asyncio.Future[Rows], rows: Rows | None, exc: BaseException | None) -> None:
    if done.done():
        return  # cancelled by the awaiting task
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(rows or [])
