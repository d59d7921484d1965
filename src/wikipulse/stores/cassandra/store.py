"""`CassandraStore`: one ingester's cumulative statistics, committed by conditional batches."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from wikipulse.lease import Fence, check_fence
from wikipulse.stats import Batch, Stats
from wikipulse.stores import ResumePoint, StoreError
from wikipulse.stores.cassandra import driver
from wikipulse.stores.cassandra.claims import Claims
from wikipulse.stores.cassandra.commit import commit_batch
from wikipulse.stores.cassandra.lease import CassandraLease, add_lease_columns, refusal
from wikipulse.stores.cassandra.partition import Partition, parse
from wikipulse.stores.cassandra.recent import RecentSlots
from wikipulse.stores.cassandra.reshard import move_old_claims
from wikipulse.stores.cassandra.schema import STATEMENTS, schema_cql, statement
from wikipulse.stores.cassandra.statements import Cql, Statements
from wikipulse.stores.cassandra.window_read import WindowQueries, WindowReader
from wikipulse.stores.cassandra.windows import Staged, WindowWriter

if TYPE_CHECKING:
    from wikipulse.config import Settings

_T = TypeVar("_T")

__all__ = ["CassandraStore"]

#: Per-commit phase timings at DEBUG (benchmarks/cassandra_ingest.py turns it on): where a
#: commit's time goes is what issue #8's latency target is about.
timing_log = logging.getLogger(f"{__name__}.timing")
#: Prepared on open: the window statements and the common commit batches (lone or fenced).
_WARM = (
    "win_write",
    "win_load",
    *(f"state+recent{c}+win@{check}" for c in ("", "+clear*1") for check in ("solo", "fenced")),
)
#: How long closing waits for past hours to be sealed (`window_seal.py`).
_SEAL_WAIT = 10.0


async def _timed(work: Awaitable[_T]) -> tuple[_T, float]:
    started = time.perf_counter()
    out = await work
    return out, time.perf_counter() - started


class CassandraStore(WindowQueries):
    """Keep one ingester's cumulative statistics in Cassandra, fenced by its commit `seq`."""

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
        create_schema: bool = False,
        session: driver.CqlSession | None = None,
        window_retention_hours: float = 48.0,
        seal_in_process: bool | None = None,
    ) -> None:
        self._hosts = list(hosts)
        self._port = port
        self._keyspace = keyspace
        self._replication = replication
        self._consistency = consistency
        self._username = username
        self._password = password
        self._me = ingester_id
        self._recent = RecentSlots(dedup_window)
        self._create_schema = create_schema
        self._own_cluster: Any = None
        self._cql = Cql(Statements(statement))
        self._cql.session = session
        self._claims = Claims(ingester_id)
        self._failed_token: str | None = None
        self._state = Partition()
        retention = int(window_retention_hours * 3600)
        # Past hours are sealed in a worker process (`window_seal.py`); a store given a session
        # (tests on the fake node) seals in its own event loop unless told otherwise.
        in_process = session is None if seal_in_process is None else seal_in_process
        self._retention = retention
        self._windows = WindowWriter(ingester_id, retention, self._execute, in_process)
        self._window_reader = WindowReader(retention, self._execute)
        self._fence: Fence | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> CassandraStore:
        """Build the store from the `cassandra_*`, `ingester_id` and `dedup_window` settings."""
        password = settings.cassandra_password
        # Schema changes on a cluster are an operator's step (`wikipulse migrate`): opening
        # creates tables only if WIKIPULSE_MIGRATE_ON_START is set explicitly.
        migrate = "migrate_on_start" in settings.model_fields_set and settings.migrate_on_start
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
            create_schema=migrate,
            window_retention_hours=settings.window_retention_hours,
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
        await driver.wait_for_schema(session)
        # Statements name tables without a keyspace: the session is bound to it.
        await driver.blocking(session.set_keyspace, self._keyspace)
        _, serial = driver.consistency_levels(self._consistency)
        # A SERIAL read settles by Paxos any commit whose outcome was never acknowledged.
        await self._cql.statements.prepare_all(
            session, STATEMENTS, ("load", "epochs", "claims"), serial
        )
        # The statements every commit of a stream uses, prepared now rather than by the first
        # commit (which otherwise took ~1 s: issue #8's latency is over every commit).
        await asyncio.gather(*(self._cql.statements.get(session, name) for name in _WARM))
        part = await self._load()
        if part.seq is None:
            await self._execute("init", [self._me])
            part = await self._load()
        self._adopt(part)
        last_epoch = next((e for e, s in part.epochs.items() if s == part.seq), None)
        self._windows.opened(part.window_newest, last_epoch, part.seq)
        self._claims.new_epoch()

    async def _load(self) -> Partition:
        return parse(await self._execute("load", [self._me]))

    async def _epochs(self) -> dict[str, int]:
        rows = await self._execute("epochs", [self._me])
        return {row["name"]: row["last_seq"] for row in rows}

    def _adopt(self, part: Partition) -> None:
        """Make the partition read back this store's state."""
        self._state = part
        self._claims.epochs.update(part.epochs)
        self._recent.adopt(part.slots)

    def lease(self) -> CassandraLease:
        """The writer's lease, in this ingester's partition (see `lease.py`)."""
        return CassandraLease(self._lease_execute, self._me)

    def set_fence(self, fence: Fence | None) -> None:
        """Make every later commit batch check this fence (None: that nobody holds the lease)."""
        self._fence = fence

    async def _lease_execute(
        self, name: str, cql: str, params: Sequence[Any], serial: bool
    ) -> driver.Rows:
        # a read at SERIAL sees the outcome of every lease transaction
        level = driver.consistency_levels(self._consistency)[1] if serial else None
        await self._cql.prepare_once(name, cql, level)
        return await self._execute(name, params)

    async def commit(self, batch: Batch) -> None:
        """Claim the batch's new users, then write the new totals in one conditional batch."""
        check_fence(self._fence)
        if batch.token == self._state.token:
            return  # committed already: the caller retries a commit it thought had failed
        if self._failed_token is not None and self._failed_token != batch.token:
            # The failed batch was given up: what it claimed is orphaned.
            self._claims.new_epoch()
        self._failed_token = batch.token
        await self._commit(batch)
        self._failed_token = None

    async def _commit(self, batch: Batch) -> None:
        state = self._state
        seq = (state.seq or 0) + 1
        started = time.perf_counter()
        # Claims and window versions are independent: written side by side, before the commit.
        (new_users, claim_s), (staged, window_s) = await asyncio.gather(
            _timed(self._claims.claim(batch.users, seq, self._cql, self._epochs)),
            _timed(
                self._windows.stage(batch.windows, seq, self._claims.epoch, self._claims.epochs)
            ),
        )
        prepared = time.perf_counter()
        epoch = self._claims.epoch
        out = commit_batch(
            self._me,
            state,
            batch,
            new_users,
            epoch,
            self._recent,
            staged,
            self._retention,
            self._fence,
        )
        rows = await self._execute(out.shape, out.params)
        if timing_log.isEnabledFor(logging.DEBUG):
            done = time.perf_counter()
            timing_log.debug(
                "commit seq=%d events=%d users=%d new=%d claims_ms=%.1f windows_ms=%.1f "
                "batch_ms=%.1f total_ms=%.1f",
                seq,
                batch.total,
                len(batch.users),
                new_users,
                claim_s * 1000,
                window_s * 1000,
                (done - prepared) * 1000,
                (done - started) * 1000,
            )
        if not rows[0]["[applied]"]:
            await self._settle(batch, seq, staged, rows[0])
            return
        self._state = out.after
        self._recent.commit(out.slots)
        self._claims.committed(seq, batch.users)
        self._windows.committed(staged, seq, epoch)

    async def _settle(
        self, batch: Batch, seq: int, staged: Staged | None, found: dict[str, Any]
    ) -> None:
        """Another commit moved `seq` first: ours, acknowledged too late, or another writer's."""
        part = await self._load()
        if part.seq == seq and part.token == batch.token:
            self._adopt(part)  # this batch landed before: it counted everything already
            self._claims.committed(seq, batch.users)
            self._windows.committed(staged, seq, self._claims.epoch)
            return
        refused = refusal(self._fence, found, self._me)
        if refused is not None:
            raise refused
        raise StoreError(
            f"Cassandra: another writer with ingester id {self._me!r} committed batch "
            f"{part.seq} meanwhile; run one ingester per id (this one stops)"
        )

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
        part = await self._load()
        return ResumePoint(part.position, self._recent.newest(part.slots))

    async def close(self) -> None:
        """Finish sealing past hours (briefly), then shut the connection down (if this store
        made it). Hours left unsealed are read from their minutes, and sealed on next open."""
        sealer = self._windows.sealer
        try:
            await asyncio.wait_for(sealer.drain(), _SEAL_WAIT)
        except Exception:  # closing anyway; readers use the minutes
            timing_log.debug("closing before every past hour was sealed", exc_info=True)
        sealer.forget()
        cluster, self._own_cluster = self._own_cluster, None
        if cluster is not None:
            self._cql.session = None
            await asyncio.to_thread(cluster.shutdown)

    async def _connect(self) -> driver.CqlSession:
        if self._cql.session is not None:
            return self._cql.session
        cluster, session = await driver.connect(
            self._hosts,
            port=self._port,
            consistency=self._consistency,
            username=self._username,
            password=self._password,
        )
        self._own_cluster, self._cql.session = cluster, session
        return session

    async def _migrate(self, session: driver.CqlSession) -> None:
        for cql in schema_cql(self._keyspace, self._replication):
            await driver.ddl(session, cql)
        await add_lease_columns(session, self._keyspace)
        await driver.wait_for_schema(session)
        await move_old_claims(session, self._keyspace)

    async def _execute(self, name: str, params: Sequence[Any]) -> driver.Rows:
        """Every statement the store runs itself (tests wrap this to inject faults)."""
        return await self._cql.execute(name, params)
