"""A fleet end to end: two `wikipulse ingest` processes and one `wikipulse api`, real stores.

The holder is killed with SIGKILL mid-stream, or paused with SIGSTOP past its lease and then
continued. In every case the standby takes over, the API's final `/stats` and the totals of
`/stats/timeseries` equal the independent count of the stream, and a poller that watched
the API and the store's committed position all along never saw either go backwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.stores.conftest import CASSANDRA_HOSTS, CASSANDRA_PORT, POSTGRES_DSN
from tests.support.counting import counted, expected_stats
from tests.support.eventstreams import EventStreamsServer, Faults
from tests.test_serve_e2e import PASSWORD, _env, _free_port, _lines, _wait_for

pytestmark = pytest.mark.slow

LEASE_SECONDS = 2
EVENTS = 3000
RATE = 250.0  # events per second: the stream lasts ~12 s, the failover happens inside it
WINDOW = {"since": "2026-11-01T11:00:00Z", "until": "2026-11-01T14:00:00Z", "step": "3600"}


class Proc:
    """One `wikipulse <role>` process and an HTTP client for it."""

    def __init__(self, role: str, env: dict[str, str], cwd: Path, *args: str) -> None:
        self.role = role
        self.env = {**env, "WIKIPULSE_PORT": str(_free_port())}
        self.log = cwd / f"{role}-{time.monotonic_ns()}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "wikipulse", role, *args],
                env=self.env,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._base = f"http://127.0.0.1:{self.env['WIKIPULSE_PORT']}"
        self.http = httpx.Client(base_url=self._base, timeout=5)
        self._token: str | None = None

    def wait_up(self) -> None:
        """Until /status answers."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.role} exited early:\n{self.log.read_text()}")
            try:
                if self.http.get("/status").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{self.role} did not come up:\n{self.log.read_text()}")

    def status(self) -> dict[str, Any]:
        """The whole /status body."""
        body: dict[str, Any] = self.http.get("/status").json()
        return body

    def lease(self) -> dict[str, Any]:
        """The lease part of /status."""
        lease: dict[str, Any] = self.status()["lease"]
        return lease

    def get(self, path: str, **params: str) -> dict[str, Any]:
        """An authenticated GET, logging in once."""
        if self._token is None:
            login = self.http.post("/login", json={"username": "alice", "password": PASSWORD})
            assert login.status_code == 200, login.text
            self._token = login.json()["access_token"]
        response = self.http.get(
            path, params=params, headers={"Authorization": f"Bearer {self._token}"}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def signal(self, signum: int) -> None:
        """Send a signal, then talk to the process over new connections.

        A process paused past its server's keep-alive timeout closes its idle connections the
        moment it runs again: a request sent on one of them then meets a reset (CI saw
        `Connection reset by peer` from the first /status after SIGCONT).
        """
        self.proc.send_signal(signum)
        self.http.close()
        self.http = httpx.Client(base_url=self._base, timeout=5)

    def stop(self) -> None:
        """SIGTERM (after SIGCONT, should it be stopped) and wait; SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.http.close()


class Poller:
    """Polls the API's /stats and the store's committed position; records any step back."""

    def __init__(
        self, api: Proc, position: Callable[[], int], close: Callable[[], None] = lambda: None
    ) -> None:
        self._api = api
        self._position = position
        self._close = close
        self.backwards: list[str] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_stats: dict[str, Any] | None = None
        last_position = -1
        while not self._stop.is_set():
            try:
                stats = self._api.get("/stats")
                position = self._position()
            except (httpx.TransportError, AssertionError, sqlite3.Error, OSError):
                time.sleep(0.05)
                continue
            self.polls += 1
            if last_stats is not None:
                for key in ("total", "distinct_users", "bots", "non_bots"):
                    if stats[key] < last_stats[key]:
                        self.backwards.append(f"{key}: {last_stats[key]} -> {stats[key]}")
                for name, count in last_stats["by_server_name"].items():
                    if stats["by_server_name"].get(name, 0) < count:
                        self.backwards.append(f"{name}: {count} -> {stats['by_server_name']}")
            if position < last_position:
                self.backwards.append(f"position: {last_position} -> {position}")
            last_stats, last_position = stats, max(last_position, position)
            time.sleep(0.03)

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        self._thread.join(timeout=10)
        self._close()


def _sqlite_position(path: Path, srv: EventStreamsServer) -> Callable[[], int]:
    def read() -> int:
        if not path.exists():
            return -1
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT position FROM state").fetchone()
        return -1 if row is None or row[0] is None else srv.resume_index(row[0])

    return read


def _postgres_position(
    dsn: str, srv: EventStreamsServer
) -> tuple[Callable[[], int], Callable[[], None]]:
    import asyncpg  # type: ignore[import-untyped]

    loop = asyncio.new_event_loop()
    conn: list[Any] = []

    def read() -> int:
        async def query() -> str | None:
            if not conn:
                conn.append(await asyncpg.connect(dsn))
            position: str | None = await conn[0].fetchval("SELECT position FROM wp_state")
            return position

        try:
            position = loop.run_until_complete(query())
        except Exception as exc:  # not migrated yet: no position
            raise OSError(str(exc)) from exc
        return -1 if position is None else srv.resume_index(position)

    def close() -> None:
        if conn:
            loop.run_until_complete(conn[0].close())
        loop.close()

    return read, close


def _cassandra_position(
    keyspace: str, srv: EventStreamsServer
) -> tuple[Callable[[], int], Callable[[], None]]:
    from cassandra.cluster import Cluster

    from wikipulse.stores.cassandra.driver import connection_class

    cluster = Cluster(
        CASSANDRA_HOSTS.split(","), port=CASSANDRA_PORT, connection_class=connection_class()
    )
    session = cluster.connect()

    def read() -> int:
        try:
            rows = list(
                session.execute(
                    f"SELECT position FROM {keyspace}.ingesters WHERE ingester_id = 'default' "  # noqa: S608  # a test keyspace
                    "LIMIT 1"
                )
            )
        except Exception as exc:  # not migrated yet: no position
            raise OSError(str(exc)) from exc
        position = rows[0].position if rows else None
        return -1 if position is None else srv.resume_index(position)

    return read, cluster.shutdown


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes started by a test, stopped at its end whatever happens."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()
        # Shown with a failure only (captured output): what each process said, to the end.
        print(f"--- {proc.role} ({proc.log.name}) ---\n{proc.log.read_text()[-6000:]}")


@pytest.fixture
def postgres_db(postgres_skip_reason: str | None) -> Iterator[str]:
    """A fresh database for one test (the processes use the `public` schema), dropped after."""
    from tests.stores.conftest import _unreachable

    if postgres_skip_reason:
        _unreachable(postgres_skip_reason)
    import asyncpg

    name = f"wp_fleet_{uuid.uuid4().hex[:10]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    yield POSTGRES_DSN.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


from tests.stores.conftest import (  # noqa: E402  # fixtures, used by name
    cassandra_keyspace,
    cassandra_skip_reason,
    postgres_skip_reason,
)

__all__ = ["cassandra_keyspace", "cassandra_skip_reason", "postgres_skip_reason"]


def _fleet_env(srv: EventStreamsServer, tmp_path: Path, store: str, dsn: str) -> dict[str, str]:
    env = _env(srv, tmp_path, store)
    env.update(
        WIKIPULSE_LEASE_SECONDS=str(LEASE_SECONDS),
        WIKIPULSE_POSTGRES_DSN=dsn,
        WIKIPULSE_DEDUP_WINDOW="5000",
    )
    if store == "cassandra":  # `dsn` is the keyspace
        env.update(
            WIKIPULSE_CASSANDRA_HOSTS=CASSANDRA_HOSTS,
            WIKIPULSE_CASSANDRA_PORT=str(CASSANDRA_PORT),
            WIKIPULSE_CASSANDRA_KEYSPACE=dsn,
            WIKIPULSE_CASSANDRA_CONSISTENCY="ONE",
        )
    return env


def _start(procs: list[Proc], role: str, env: dict[str, str], cwd: Path, *args: str) -> Proc:
    proc = Proc(role, env, cwd, *args)
    procs.append(proc)
    proc.wait_up()
    return proc


def _holder(ingesters: list[Proc]) -> tuple[Proc, Proc]:
    """(holder, standby), once one of them holds the lease and has committed."""
    found: list[Proc] = []

    def one_holds() -> bool:
        found[:] = [p for p in ingesters if p.lease()["held"] and p.lease()["commits"] > 0]
        return len(found) == 1

    _wait_for(one_holds, "an ingester to hold the lease and commit", 30)
    holder = found[0]
    return holder, next(p for p in ingesters if p is not holder)


def _final(api: Proc, expected: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """/stats once it equals the expectation (or the last one seen, after `timeout`)."""
    last: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = api.get("/stats")
        if last == expected:
            break
        time.sleep(0.1)
    return last


def _took_over(standby: Proc) -> Callable[[], bool]:
    return lambda: standby.lease()["first_commit_at"] is not None


def _windowed_total(api: Proc) -> int:
    body = api.get("/stats/timeseries", **WINDOW)
    return sum(int(bucket["total"]) for bucket in body["buckets"])


def _run_failover(
    tmp_path: Path, procs: list[Proc], store: str, dsn: str, how: str
) -> dict[str, Any]:
    lines = _lines(tmp_path, EVENTS)
    expected = expected_stats(lines)
    with_dt = sum(1 for event in counted(lines) if event.get("meta", {}).get("dt"))
    faults = Faults(close_every=400, events_per_second=RATE, when_done="hold")
    with EventStreamsServer(lines, id_format="timestamp", faults=faults, seed=3) as srv:
        env = _fleet_env(srv, tmp_path, store, dsn)
        subprocess.run(
            [sys.executable, "-m", "wikipulse", "migrate"], env=env, cwd=tmp_path, check=True
        )
        ingesters = [_start(procs, "ingest", env, tmp_path) for _ in range(2)]
        api = _start(procs, "api", env, tmp_path)
        if store == "sqlite":
            poller = Poller(api, _sqlite_position(Path(env["WIKIPULSE_SQLITE_PATH"]), srv))
        elif store == "cassandra":
            poller = Poller(api, *_cassandra_position(dsn, srv))
        else:
            poller = Poller(api, *_postgres_position(dsn, srv))
        try:
            holder, standby = _holder(ingesters)
            old_token = holder.lease()["token"]
            _wait_for(lambda: len(srv.delivered) >= EVENTS // 3, "a third of the stream", 60)
            figures: dict[str, Any] = {"store": store, "how": how}
            if how == "kill":
                holder.signal(signal.SIGKILL)
                failed_at = time.time()
            else:
                holder.signal(signal.SIGSTOP)
                failed_at = time.time()
            continued_at = None
            try:
                _wait_for(_took_over(standby), "the standby's first commit", LEASE_SECONDS + 8)
            except AssertionError:
                # SQLite only: a holder paused inside a commit keeps the database's write lock,
                # and nobody can take over until it runs again (README, Running a fleet).
                if how != "stop" or store != "sqlite":
                    raise
                holder.signal(signal.SIGCONT)
                continued_at = time.time()
                figures["paused_inside_a_commit"] = True
                _wait_for(_took_over(standby), "the standby's first commit", 30)
            lease = standby.lease()
            assert lease["held"] is True
            assert lease["token"] > old_token
            figures["takeover_seconds"] = round(lease["first_commit_at"] - failed_at, 3)
            if how == "stop":
                if continued_at is None:
                    time.sleep(0.5)  # the new holder commits; the paused one believes it holds
                    holder.signal(signal.SIGCONT)
                    continued_at = time.time()
                _wait_for(lambda: not holder.lease()["held"], "the old holder to stand by", 15)
                old = holder.lease()
                # It wrote nothing after it was paused, and knows who holds the lease now.
                assert old["last_commit_started_at"] < failed_at
                _wait_for(
                    lambda: holder.lease()["holder"] == lease["holder_id"], "the new holder", 15
                )
                figures["paused_seconds"] = round(continued_at - failed_at, 3)
            final = _final(api, expected)
            assert final == expected
            assert _windowed_total(api) == with_dt
            if how == "stop":
                old = holder.lease()
                if old["held"]:
                    # The new holder missed a renewal since (a loaded machine): the old one may
                    # win a later term of its own -- a newer token, never the one it was paused in.
                    assert old["token"] > lease["token"]
                else:
                    assert old["last_commit_started_at"] < failed_at
                assert holder.status()["role"] == "ingest"
        finally:
            poller.stop()
        assert poller.backwards == [], poller.backwards
        assert poller.polls > 20
        assert api.status()["role"] == "api"
        figures.update(events=final["total"], polls=poller.polls, delivered=len(srv.delivered))
        print("failover:", json.dumps(figures))
        return figures


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["kill", "stop"])
def test_failover_on_sqlite(tmp_path: Path, procs: list[Proc], how: str) -> None:
    """Two ingesters on one SQLite file: the standby takes over, nothing lost or doubled."""
    figures = _run_failover(tmp_path, procs, "sqlite", "postgresql://unused/x", how)
    assert figures["takeover_seconds"] < LEASE_SECONDS + 5


@pytest.mark.postgres
@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["kill", "stop"])
def test_failover_on_postgres(
    tmp_path: Path, procs: list[Proc], postgres_db: str, how: str
) -> None:
    """Two ingesters on PostgreSQL: the standby takes over, nothing lost or doubled."""
    figures = _run_failover(tmp_path, procs, "postgres", postgres_db, how)
    assert figures["takeover_seconds"] < LEASE_SECONDS + 5


@pytest.mark.cassandra
@pytest.mark.timeout(180)
@pytest.mark.parametrize("how", ["kill", "stop"])
def test_failover_on_cassandra(
    tmp_path: Path, procs: list[Proc], cassandra_keyspace: str, how: str
) -> None:
    """Two ingesters of one ingester id on a Cassandra node: lease by LWT, fenced commits."""
    figures = _run_failover(tmp_path, procs, "cassandra", cassandra_keyspace, how)
    assert figures["takeover_seconds"] < LEASE_SECONDS + 8


@pytest.mark.timeout(120)
def test_sigterm_hands_the_lease_over_at_once(tmp_path: Path, procs: list[Proc]) -> None:
    """A holder stopped by SIGTERM commits, releases the lease: the standby need not wait it
    out. Served by `api --workers 2`, which stops cleanly too."""
    lines = _lines(tmp_path, 2000)
    expected = expected_stats(lines)
    faults = Faults(events_per_second=RATE, when_done="hold")
    with EventStreamsServer(lines, id_format="timestamp", faults=faults, seed=4) as srv:
        env = _fleet_env(srv, tmp_path, "sqlite", "postgresql://unused/x")
        env["WIKIPULSE_LEASE_SECONDS"] = "30"  # far longer than a hand-over may take
        ingesters = [_start(procs, "ingest", env, tmp_path) for _ in range(2)]
        api = _start(procs, "api", env, tmp_path, "--workers", "2")
        holder, standby = _holder(ingesters)
        _wait_for(lambda: len(srv.delivered) >= 600, "some of the stream", 60)
        holder.signal(signal.SIGTERM)
        stopped_at = time.time()
        assert holder.proc.wait(timeout=20) == 0
        _wait_for(lambda: standby.lease()["first_commit_at"] is not None, "the hand-over", 20)
        handover = standby.lease()["first_commit_at"] - stopped_at
        print("hand-over after SIGTERM:", round(handover, 3), "s")
        assert handover < 10  # the 30 s lease was released, not waited out
        assert _final(api, expected) == expected
        api.signal(signal.SIGTERM)
        assert api.proc.wait(timeout=20) == 0


def test_api_workers_need_fixed_credentials(tmp_path: Path) -> None:
    """`api --workers 2` without a JWT secret and users exits 2: workers would disagree."""
    env = {"PATH": os.environ.get("PATH", ""), "WIKIPULSE_STORE": "memory"}
    done = subprocess.run(
        [sys.executable, "-m", "wikipulse", "api", "--workers", "2"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "WIKIPULSE_JWT_SECRET" in done.stderr
