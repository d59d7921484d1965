"""The Cassandra/ScyllaDB store: idempotent writes instead of transactions.

Cassandra cannot commit counts and a stream position atomically across tables, and its counters
are not idempotent (a retried increment counts twice), so this store never increments anything
on the server. Each ingester owns one partition of `ingester_state`, keyed by `ingester_id`:

- static columns hold its *cumulative* totals (total, bots, distinct_users, by_server map),
  its position and `seq`, the number of batches it has committed;
- `kind = 'recent'` rows hold the event ids of each batch (the dedup window), trimmed by a
  range delete once the newer rows hold `dedup_window` ids;
- `kind = 'epoch'` rows record, for each run of the process (and after each failed commit),
  the last `seq` committed in that run.

A commit is one LOGGED BATCH into that one partition: it sets the new absolute totals, the
position, `seq + 1`, the batch's recent-id row and its epoch row. A single-partition batch is
applied atomically and in isolation, so a reader sees all of a commit or none of it. Because the
values are absolute, a commit that timed out and is retried writes the same values again: a
replayed write is harmless, and client timestamps make a late duplicate lose to newer writes.

Distinct users must be exact across ingesters, so `users` holds one row per user name with a
*claim*: the (ingester, epoch, seq) of the commit that counted it. Before its batch, the
ingester reads the claims of the batch's users and inserts missing ones with a lightweight
transaction (`IF NOT EXISTS`), so two ingesters never both claim a user. A user counts as new in
this batch if the claim is this very attempt's, or is an orphan of this ingester (its epoch row
says that seq never committed -- the process died, or the commit failed, between claiming and
committing); orphans are re-claimed (`IF` the old claim is unchanged) and counted. Claims by
committed batches, or by other ingesters, are already counted. Snapshot cost stays constant: it
sums the static rows of the (few) ingesters and never counts the users table.

Crash between writes: claims written but the batch not -> nothing was counted and the position
did not move; the replay after restart meets the same events, finds its orphaned claims and
counts them once. Crash after the batch -> counts, position and window are all there; the replay
starts after the position and the window drops any overlap. Nothing is counted twice or lost.

Several ingesters: the snapshot sums every ingester's partition, which is right when they
consume *disjoint* streams or partitions (each with its own `ingester_id`). Two ingesters of the
*same* stream for availability must not sum: they are an active and a standby sharing one
`ingester_id`, and only one may write at a time (single-replica deployment, or a lease). The
standby, on taking over, opens the store, loads the partition and resumes from its position and
window. Two active writers of one partition would overwrite each other's totals; fencing them
would need a conditional (`IF seq = ?`) batch, one Paxos round per commit.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from wikipulse.stats import Batch, Stats
from wikipulse.stores import ResumePoint, StoreUnavailable

if TYPE_CHECKING:
    from wikipulse.config import Settings

__all__ = ["STATEMENTS", "CassandraStore", "schema_cql"]

_CLAIMS_IN_FLIGHT = 128  # concurrent user reads/claims per batch, to bound load on the cluster
_UPDATE_STATE = (
    "UPDATE ingester_state SET seq = ?, total = ?, bots = ?, distinct_users = ?, position = ?, "
    "by_server = by_server + ? WHERE ingester_id = ?; "
    "INSERT INTO ingester_state (ingester_id, kind, name, last_seq) VALUES (?, 'epoch', ?, ?); "
)
_INSERT_RECENT = (
    "INSERT INTO ingester_state (ingester_id, kind, name, ids) VALUES (?, 'recent', ?, ?); "
)
_TRIM_RECENT = "DELETE FROM ingester_state WHERE ingester_id = ? AND kind = 'recent' AND name < ?; "
#: Every statement the store prepares, by name; a commit is one of the three batches.
STATEMENTS = {
    "load": "SELECT seq, total, bots, distinct_users, position, by_server FROM ingester_state "
    "WHERE ingester_id = ? LIMIT 1",
    "epochs": "SELECT name, last_seq FROM ingester_state WHERE ingester_id = ? AND kind = 'epoch'",
    "recent": "SELECT name, ids FROM ingester_state WHERE ingester_id = ? AND kind = 'recent'",
    "snapshot": "SELECT DISTINCT ingester_id, total, bots, distinct_users, by_server "
    "FROM ingester_state",
    "claim_read": "SELECT ingester_id, epoch, seq FROM users WHERE name = ?",
    "claim": "INSERT INTO users (name, ingester_id, epoch, seq) VALUES (?, ?, ?, ?) IF NOT EXISTS",
    "reclaim": "UPDATE users SET ingester_id = ?, epoch = ?, seq = ? WHERE name = ? "
    "IF ingester_id = ? AND epoch = ? AND seq = ?",
    "state": f"BEGIN BATCH {_UPDATE_STATE}APPLY BATCH",
    "state+recent": f"BEGIN BATCH {_UPDATE_STATE}{_INSERT_RECENT}APPLY BATCH",
    "state+recent+trim": f"BEGIN BATCH {_UPDATE_STATE}{_INSERT_RECENT}{_TRIM_RECENT}APPLY BATCH",
}


def schema_cql(keyspace: str, replication: str) -> list[str]:
    """The CQL statements that create the keyspace and tables, each idempotent."""
    k = keyspace
    return [
        f"CREATE KEYSPACE IF NOT EXISTS {k} WITH replication = {replication}",
        f"CREATE TABLE IF NOT EXISTS {k}.ingester_state ("
        "ingester_id text, kind text, name text, "
        "seq bigint STATIC, total bigint STATIC, bots bigint STATIC, "
        "distinct_users bigint STATIC, position text STATIC, by_server map<text, bigint> STATIC, "
        "last_seq bigint, ids list<text>, "
        "PRIMARY KEY ((ingester_id), kind, name))",
        f"CREATE TABLE IF NOT EXISTS {k}.users ("
        "name text PRIMARY KEY, ingester_id text, epoch text, seq bigint)",
    ]


class CqlSession(Protocol):
    """The part of `cassandra.cluster.Session` this store uses (faked in tests)."""

    def set_keyspace(self, keyspace: str) -> None:
        """Make `keyspace` the default of later statements (blocking)."""

    def prepare(self, query: str) -> Any:
        """Prepare a statement (blocking)."""

    def execute_async(self, query: Any, parameters: Sequence[Any] | None = None) -> Any:
        """Start a query and return its `ResponseFuture`."""


class CassandraStore:
    """Keep one ingester's cumulative statistics in Cassandra with idempotent writes."""

    def __init__(
        self,
        hosts: Sequence[str] = ("127.0.0.1",),
        *,
        port: int = 9042,
        keyspace: str = "wikipulse",
        replication: str = "{'class': 'SimpleStrategy', 'replication_factor': 1}",
        consistency: str = "LOCAL_QUORUM",
        username: str | None = None,
        password: str | None = None,
        ingester_id: str = "default",
        dedup_window: int = 100_000,
        create_schema: bool = True,
        session: CqlSession | None = None,
    ) -> None:
        self._hosts = list(hosts)
        self._port = port
        self._keyspace = keyspace
        self._replication = replication
        self._consistency = consistency
        self._username = username
        self._password = password
        self._me = ingester_id
        self._window = dedup_window
        self._create_schema = create_schema
        self._session = session
        self._own_cluster: Any = None
        self._stmts: dict[str, Any] = {}
        self._epoch = ""
        self._epochs: dict[str, int] = {}  # epoch -> last seq committed in it
        self._seq = 0
        self._total = self._bots = self._users = 0
        self._servers: dict[str, int] = {}
        self._position: str | None = None
        self._recent: deque[tuple[int, int]] = deque()  # (seq, number of ids) of recent rows

    @classmethod
    def from_settings(cls, settings: Settings) -> CassandraStore:
        """Build the store from the `cassandra_*`, `ingester_id` and `dedup_window` settings."""
        password = settings.cassandra_password
        return cls(
            [h.strip() for h in settings.cassandra_hosts.split(",") if h.strip()],
            port=settings.cassandra_port,
            keyspace=settings.cassandra_keyspace,
            replication=settings.cassandra_replication,
            consistency=settings.cassandra_consistency,
            username=settings.cassandra_username,
            password=password.get_secret_value() if password else None,
            ingester_id=settings.ingester_id,
            dedup_window=settings.dedup_window,
            create_schema=settings.migrate_on_start,
        )

    async def migrate(self) -> None:
        """Create the keyspace and tables if they do not exist yet."""
        session = await self._connect()
        try:
            await self._migrate(session)
        finally:
            await self.close()

    async def open(self) -> None:
        """Connect, create the schema if asked to, prepare statements, load this ingester."""
        session = await self._connect()
        if self._create_schema:
            await self._migrate(session)
        me = self._me
        # Statements name tables without a keyspace: the session is bound to it.
        await self._blocking(session.set_keyspace, self._keyspace)
        for name, cql in STATEMENTS.items():
            self._stmts[name] = await self._blocking(session.prepare, cql)
        rows = await self._execute("load", [me])
        if rows and rows[0]["seq"] is not None:
            row = rows[0]
            self._seq, self._total, self._bots = row["seq"], row["total"], row["bots"]
            self._users, self._position = row["distinct_users"], row["position"]
            self._servers = dict(row["by_server"] or {})
        self._epochs = {r["name"]: r["last_seq"] for r in await self._execute("epochs", [me])}
        self._recent = deque(
            (int(r["name"]), len(r["ids"] or ())) for r in await self._execute("recent", [me])
        )
        self._new_epoch()

    async def commit(self, batch: Batch) -> None:
        """Claim the batch's new users, then write the new absolute totals in one batch."""
        try:
            await self._commit(batch)
        except BaseException:
            # Claims made by this attempt now count as orphans, whatever its outcome.
            self._new_epoch()
            raise

    async def _commit(self, batch: Batch) -> None:
        seq = self._seq + 1
        new_users = await self._claim_users(batch.users, seq) if batch.users else 0
        servers = {
            name: self._servers.get(name, 0) + count
            for name, count in sorted(batch.by_server_name.items())
        }
        total, bots = self._total + batch.total, self._bots + batch.bots
        users = self._users + new_users
        position = batch.position if batch.position is not None else self._position
        me, ids = self._me, batch.event_ids
        params: list[Any] = [seq, total, bots, users, position, servers, me, me, self._epoch, seq]
        recent = self._recent.copy()
        shape = "state"
        if ids:
            params += [me, _row_name(seq), list(ids)]
            recent.append((seq, len(ids)))
            shape = "state+recent"
            kept = sum(n for _, n in recent)
            trimmed = False
            while len(recent) > 1 and kept - recent[0][1] >= self._window:
                kept -= recent.popleft()[1]
                trimmed = True
            if trimmed:
                params += [me, _row_name(recent[0][0])]
                shape = "state+recent+trim"
        await self._execute(shape, params)
        self._seq, self._total, self._bots, self._users = seq, total, bots, users
        self._servers.update(servers)
        self._position = position
        self._recent = recent
        self._epochs[self._epoch] = seq

    async def _claim_users(self, names: Iterable[str], seq: int) -> int:
        """Claim the users no commit has counted yet; return how many this batch counts."""
        limit = asyncio.Semaphore(_CLAIMS_IN_FLIGHT)

        async def one(name: str) -> int:
            async with limit:
                rows = await self._execute("claim_read", [name])
                if not rows:
                    rows = await self._execute("claim", [name, self._me, self._epoch, seq])
                    if rows[0]["[applied]"]:
                        return 1
                verdict = self._classify(rows[0], seq)
                if verdict != "orphan":
                    return int(verdict == "mine")
                old = rows[0]
                claim, was = (
                    [self._me, self._epoch, seq],
                    [old["ingester_id"], old["epoch"], old["seq"]],
                )
                rows = await self._execute("reclaim", [*claim, name, *was])
                return 1 if rows[0]["[applied]"] else int(self._classify(rows[0], seq) == "mine")

        return sum(await asyncio.gather(*(one(name) for name in sorted(names))))

    def _classify(self, claim: dict[str, Any], seq: int) -> str:
        """Whose is an existing claim: this attempt's, a committed one, or our orphan."""
        if claim["ingester_id"] != self._me:
            return "counted"  # the other ingester counts it, now or when it replays
        if claim["epoch"] == self._epoch and claim["seq"] == seq:
            return "mine"
        done = self._epochs.get(claim["epoch"])
        return "counted" if done is not None and claim["seq"] <= done else "orphan"

    async def snapshot(self) -> Stats:
        """Sum the cumulative totals of every ingester; each row is one whole commit."""
        total = bots = users = 0
        servers: dict[str, int] = {}
        for row in await self._execute("snapshot", []):
            total += row["total"] or 0
            bots += row["bots"] or 0
            users += row["distinct_users"] or 0
            for name, count in (row["by_server"] or {}).items():
                servers[name] = servers.get(name, 0) + count
        return Stats(total, users, bots, servers)

    async def resume_point(self) -> ResumePoint:
        """Read this ingester's position and the newest `dedup_window` event ids."""
        rows = await self._execute("load", [self._me])
        position = rows[0]["position"] if rows else None
        ids = [i for row in await self._execute("recent", [self._me]) for i in row["ids"] or ()]
        return ResumePoint(position, ids[-self._window :])

    async def close(self) -> None:
        """Shut the cluster connection down (if this store made it)."""
        cluster, self._own_cluster = self._own_cluster, None
        if cluster is not None:
            self._session = None
            await asyncio.to_thread(cluster.shutdown)

    def _new_epoch(self) -> None:
        self._epoch = uuid.uuid4().hex

    async def _connect(self) -> CqlSession:
        if self._session is not None:
            return self._session
        from cassandra import ConsistencyLevel
        from cassandra.auth import PlainTextAuthProvider
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.query import dict_factory

        level = ConsistencyLevel.name_to_value[self._consistency]
        serial = ConsistencyLevel.LOCAL_SERIAL if "LOCAL" in self._consistency else None
        profile = ExecutionProfile(
            consistency_level=level,
            serial_consistency_level=serial or ConsistencyLevel.SERIAL,
            row_factory=dict_factory,
        )
        auth = None
        if self._username is not None:
            auth = PlainTextAuthProvider(self._username, self._password or "")
        cluster = Cluster(
            self._hosts,
            port=self._port,
            auth_provider=auth,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        )
        try:
            session = await asyncio.to_thread(cluster.connect)
        except Exception as exc:
            await asyncio.to_thread(cluster.shutdown)
            raise StoreUnavailable(f"Cassandra: {exc}") from exc
        self._own_cluster, self._session = cluster, session
        return session  # type: ignore[no-any-return]

    async def _migrate(self, session: CqlSession) -> None:
        for cql in schema_cql(self._keyspace, self._replication):
            await _result(session.execute_async(cql))

    async def _blocking(self, call: Callable[[str], Any], arg: str) -> Any:
        """Run a blocking driver call (prepare, set_keyspace) on a worker thread."""
        try:
            return await asyncio.to_thread(call, arg)
        except _unavailable_errors() as exc:
            raise StoreUnavailable(f"Cassandra: {exc}") from exc

    async def _execute(self, name: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        if self._session is None:
            raise RuntimeError("the Cassandra store is not open")
        try:
            return await _result(self._session.execute_async(self._stmts[name], params))
        except _unavailable_errors() as exc:
            raise StoreUnavailable(f"Cassandra: {exc}") from exc


def _row_name(seq: int) -> str:
    return f"{seq:020d}"  # zero-padded so that text order is numeric order


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    """What a down or overloaded cluster raises; imported lazily like the driver itself."""
    from cassandra import OperationTimedOut, RequestExecutionException
    from cassandra.cluster import NoHostAvailable
    from cassandra.connection import ConnectionException

    return (NoHostAvailable, OperationTimedOut, RequestExecutionException, ConnectionException)


async def _result(future: Any) -> list[dict[str, Any]]:
    """Await a driver `ResponseFuture` without blocking the loop, gathering every page."""
    loop = asyncio.get_running_loop()
    # The driver calls the callbacks from its own thread, once per page, for as long as they
    # stay registered: register once and point them at the future of the page awaited now.
    page: list[asyncio.Future[list[dict[str, Any]]]] = [loop.create_future()]

    def ok(rows: Any) -> None:
        loop.call_soon_threadsafe(_settle, page[0], list(rows or ()), None)

    def failed(exc: BaseException) -> None:
        loop.call_soon_threadsafe(_settle, page[0], None, exc)

    future.add_callbacks(ok, failed)
    rows: list[dict[str, Any]] = []
    while True:
        rows += await page[0]
        if not future.has_more_pages:
            return rows
        page[0] = loop.create_future()
        future.start_fetching_next_page()


def _settle(
    done: asyncio.Future[list[dict[str, Any]]],
    rows: list[dict[str, Any]] | None,
    exc: BaseException | None,
) -> None:
    if done.done():
        return  # cancelled by the awaiting task
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(rows or [])
