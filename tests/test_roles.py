"""The `ingest` and `api` roles in process: their routes, /status, /ready and the lease metrics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from tests.support.counting import expected_stats
from tests.support.generated import generate
from tests.support.served import QueueSource
from tests.test_api import running
from wikipulse.app import build_app
from wikipulse.auth import Authenticator
from wikipulse.config import Settings, load_settings
from wikipulse.roles import ingest_app
from wikipulse.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

SECRET = "roles-test-secret-0123456789abcdef0123456789"


def _settings(db: Path) -> Settings:
    env = {
        "WIKIPULSE_STORE": "sqlite",
        "WIKIPULSE_SQLITE_PATH": str(db),
        "WIKIPULSE_BATCH_MAX_MS": "20",
        "WIKIPULSE_JWT_SECRET": SECRET,
    }
    return load_settings(env, env_file=None)


async def _until(check: Any, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_ingest_role_consumes_and_reports_the_lease(tmp_path: Path) -> None:
    """An ingester alone on a SQLite file: it wins the lease, counts exactly, says so."""
    lines = generate(tmp_path, 500, seed=5).read_bytes().splitlines()
    expected = expected_stats(lines)
    db = tmp_path / "fleet.db"
    source = QueueSource()
    app = ingest_app(_settings(db), source=lambda state: source)
    async with running(app) as client:
        source.feed(lines)

        async def consumed() -> bool:
            status = (await client.get("/status")).json()
            consumed = status["consumer"]["events_consumed"] == expected["total"]
            return bool(consumed and status["lease"]["commits"] > 0)

        await _until(consumed, "the events to be consumed")
        status = (await client.get("/status")).json()
        assert status["role"] == "ingest"
        lease = status["lease"]
        assert lease["held"] is True
        assert lease["holder"] == lease["holder_id"]
        assert lease["token"] == 1
        assert lease["first_commit_at"] is not None
        assert (await client.get("/ready")).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert "wikipulse_lease_held 1.0" in metrics
        assert "wikipulse_lease_token 1.0" in metrics
        assert "wikipulse_lease_terms_total 1.0" in metrics
        assert (await client.get("/stats")).status_code == 404  # no statistics API here
        assert (await client.post("/login", json={})).status_code == 404
    # The store holds exactly the stream, and the lease was released on the way out.
    store = SQLiteStore(db)
    await store.open()
    try:
        assert (await store.snapshot()).to_dict() == expected
        assert (await store.lease().info()).holder is None
    finally:
        await store.close()


async def test_api_role_is_ready_without_a_consumer(tmp_path: Path) -> None:
    """`api`: no consumer, yet ready; it serves what an ingester commits to the file."""
    lines = generate(tmp_path, 300, seed=6).read_bytes().splitlines()
    expected = expected_stats(lines)
    settings = _settings(tmp_path / "api.db")
    source = QueueSource()
    writer = ingest_app(settings, source=lambda state: source)
    hashed = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    assert settings.jwt_secret is not None
    auth = Authenticator(
        settings.jwt_secret,
        {"alice": hashed},
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_seconds=60,
    )
    api = build_app(settings, role="api", auth=auth)
    async with running(writer), running(api) as client:
        status = (await client.get("/status")).json()
        assert status["role"] == "api"
        assert status["consumer_running"] is False
        assert status["lease"] is None
        assert (await client.get("/ready")).status_code == 200
        login = await client.post("/login", json={"username": "alice", "password": "pw"})
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        source.feed(lines)

        async def served() -> bool:
            return bool((await client.get("/stats", headers=headers)).json() == expected)

        await _until(served, "the API to serve the committed statistics")


class _FlakyLease:
    """A store's real lease whose renewals can be made to fail (a network cut, say)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.cut = False

    async def acquire(self, holder: str, seconds: float) -> int | None:
        got: int | None = await self._inner.acquire(holder, seconds)
        return got

    async def renew(self, holder: str, token: int, seconds: float) -> bool:
        if self.cut:
            raise OSError("network unreachable")
        renewed: bool = await self._inner.renew(holder, token, seconds)
        return renewed

    async def release(self, holder: str, token: int) -> None:
        await self._inner.release(holder, token)

    async def info(self) -> Any:
        return await self._inner.info()


async def test_a_holder_that_cannot_renew_fails_closed_then_resumes_exactly(
    tmp_path: Path,
) -> None:
    """Renewals fail: the holder stops committing before its lease may expire, stands by,
    wins the lease again (nobody else wants it) and resumes from what it committed."""
    from wikipulse.consumer import ConsumerState
    from wikipulse.fleet import Elector

    lines = generate(tmp_path, 600, seed=8).read_bytes().splitlines()
    db = tmp_path / "flaky.db"
    settings = load_settings(
        {
            "WIKIPULSE_STORE": "sqlite",
            "WIKIPULSE_SQLITE_PATH": str(db),
            "WIKIPULSE_BATCH_MAX_MS": "20",
            "WIKIPULSE_LEASE_SECONDS": "1",
        },
        env_file=None,
    )
    flaky: list[_FlakyLease] = []

    class FlakySQLite(SQLiteStore):
        def lease(self) -> Any:
            flaky.append(_FlakyLease(super().lease()))
            return flaky[-1]

    sources: list[QueueSource] = []

    def source(state: ConsumerState) -> QueueSource:
        # Each term reads the stream from the start: the dedup window and the position
        # committed before decide what counts (a real resume would skip ahead).
        fresh = QueueSource()
        fresh.feed(lines[: 300 if not sources else len(lines)])
        sources.append(fresh)
        return fresh

    elector = Elector(settings, ConsumerState(), lambda: FlakySQLite(db, dedup_window=5000), source)
    store = FlakySQLite(db, dedup_window=5000)
    await store.open()
    task = asyncio.create_task(elector.run(store))
    try:

        async def committed() -> bool:
            return elector.commits > 0 and elector.held

        await _until(committed, "the first commits")
        await asyncio.sleep(0.3)
        flaky[0].cut = True
        lost_at = time.monotonic()

        async def lost() -> bool:
            return not elector.held

        await _until(lost, "the holder to stand by", 5)
        # It gave up before its lease (1 s from the last renewal) could have run out.
        assert time.monotonic() - lost_at < 1.5
        assert elector.refused_commits == 0  # it stopped itself; the store refused nothing
        flaky[0].cut = False

        async def second_term() -> bool:
            return elector.terms >= 2 and elector.held

        await _until(second_term, "a second term", 10)
        expected = expected_stats(lines)

        async def exact() -> bool:
            return (await store.snapshot()).to_dict() == expected

        await _until(exact, "the exact statistics", 20)
        assert elector.token == 2
    finally:
        task.cancel()
        await asyncio.wait({task})
        await store.close()
