"""The app on a real socket (uvicorn in a thread), fed by a source the test controls.

Used where in-process calls cannot go: Server-Sent Events (httpx's ASGI transport buffers a
whole response) and the browser tests. `windows` is a stand-in for the time-window endpoints
another branch adds (`/stats/timeseries`, `/stats/top`), answering with exactly their shapes,
so the dashboard's chart and top lists can be driven before those exist here.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import uvicorn
from argon2 import PasswordHasher
from fastapi import APIRouter, FastAPI, HTTPException
from pydantic import SecretStr

from wikipulse.app import build_app
from wikipulse.auth import Authenticator
from wikipulse.config import load_settings
from wikipulse.consumer import ConsumerState
from wikipulse.feeds import RawEvent
from wikipulse.live import LiveServer, live_feed
from wikipulse.stats import Batch, Stats
from wikipulse.stores import ResumePoint, StatsStore
from wikipulse.stores.memory import MemoryStore

SECRET = "served-test-secret-0123456789abcdef0123456789"
PASSWORD = "dashboard-password"
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class QueueSource:
    """An event source fed from the test's thread; waits like the live stream when empty."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[RawEvent] = queue.SimpleQueue()
        self._fed = 0

    def feed(self, lines: Iterable[bytes]) -> None:
        """Hand events to the consumer (any thread)."""
        for line in lines:
            self._fed += 1
            self._queue.put((line, str(self._fed)))

    async def events(self, last_id: str | None) -> AsyncIterator[RawEvent]:
        """Yield what was fed, polling every few milliseconds while there is nothing.

        Like a network source, it lets the event loop run between chunks (of 50 events).
        """
        n = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.005)
                continue
            yield item
            n += 1
            if n % 50 == 0:
                await asyncio.sleep(0)


class FakeWindows:
    """Time windows over the events fed, in the shapes of `/stats/timeseries` and `/stats/top`."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def note(self, lines: Iterable[bytes]) -> None:
        """Remember the events (valid, non-canary ones) that are being fed."""
        decoded = []
        for line in lines:
            try:
                event = msgspec.json.decode(line)
            except msgspec.DecodeError:
                continue
            if isinstance(event, dict) and event.get("meta", {}).get("domain") != "canary":
                decoded.append(event)
        with self._lock:
            self.events.extend(decoded)

    def _times(self) -> list[tuple[datetime, dict[str, Any]]]:
        with self._lock:
            events = list(self.events)
        return [(datetime.fromisoformat(e["meta"]["dt"]), e) for e in events]

    def timeseries(self) -> dict[str, Any]:
        """The hour ending at the newest event, in one-minute buckets."""
        timed = self._times()
        newest = max((t for t, _ in timed), default=datetime(2024, 1, 1, tzinfo=UTC))
        until = newest.replace(second=0, microsecond=0) + timedelta(minutes=1)
        since = until - timedelta(hours=1)
        minutes: list[list[dict[str, Any]]] = [[] for _ in range(60)]
        for t, e in timed:
            index = int((t - since).total_seconds() // 60)
            if 0 <= index < 60:
                minutes[index].append(e)
        buckets = []
        for i, inside in enumerate(minutes):
            bots = sum(1 for e in inside if e.get("bot"))
            buckets.append(
                {
                    "start": _z(since + timedelta(minutes=i)),
                    "total": len(inside),
                    "bots": bots,
                    "non_bots": len(inside) - bots,
                    "distinct_users": len({e.get("user") for e in inside if e.get("user")}),
                    "by_type": dict(Counter(str(e.get("type")) for e in inside)),
                    "bytes_added": 0,
                    "bytes_removed": 0,
                }
            )
        return {"step": 60, "since": _z(since), "until": _z(until), "buckets": buckets}

    async def newest_bucket(self) -> dict[str, Any] | None:
        """The newest one-minute bucket, as `/stats/live` sends it."""
        buckets: list[dict[str, Any]] = self.timeseries()["buckets"]
        return buckets[-1]

    def top(self, by: str, since: str | None, until: str | None, limit: int) -> dict[str, Any]:
        """The busiest wikis, pages or users between `since` and `until`."""
        low = datetime.fromisoformat(since) if since else datetime.min.replace(tzinfo=UTC)
        high = datetime.fromisoformat(until) if until else datetime.max.replace(tzinfo=UTC)
        counts: Counter[tuple[str, ...]] = Counter()
        for t, e in self._times():
            if low <= t < high:
                if by == "page":
                    counts[(e["server_name"], e.get("title", ""))] += 1
                elif e.get(by):
                    counts[(e[by],)] += 1
        items = []
        for key, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]:
            if by == "page":
                items.append({"server_name": key[0], "title": key[1], "count": count})
            else:
                items.append({by: key[0], "count": count})
        return {"by": by, "since": since, "until": until, "items": items}

    def router(self) -> APIRouter:
        """The two endpoints, without authentication (they stand in for the real ones)."""
        router = APIRouter()

        @router.get("/stats/timeseries")
        async def timeseries() -> dict[str, Any]:
            return self.timeseries()

        @router.get("/stats/top")
        async def top(
            by: str, since: str | None = None, until: str | None = None, limit: int = 10
        ) -> dict[str, Any]:
            if by not in ("server_name", "user", "page"):
                raise HTTPException(422, "bad by")
            return self.top(by, since, until, limit)

        return router


def _z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_app(
    source: QueueSource,
    *,
    batch_max_ms: int = 50,
    ttl_seconds: int = 900,
    store: StatsStore | None = None,
    **settings: Any,
) -> FastAPI:
    """The real app with the memory store, user `alice` and the queue as its stream."""
    auth = Authenticator(
        SecretStr(SECRET),
        {"alice": FAST.hash(PASSWORD)},
        issuer="wikipulse",
        audience="wikipulse-api",
        ttl_seconds=ttl_seconds,
        hasher=FAST,
    )
    config = load_settings(
        environ={"WIKIPULSE_STORE": "memory"},
        env_file=None,
        jwt_secret=SECRET,
        batch_max_ms=batch_max_ms,
        **settings,
    )
    # The queue stands for a stream the consumer is connected to.
    state = ConsumerState(connected=True)
    the_store = store if store is not None else MemoryStore()
    return build_app(config, store=the_store, source=source, state=state, auth=auth)


class CountersOnly:
    """A memory store seen through the `StatsStore` port alone: it keeps no time windows."""

    def __init__(self) -> None:
        self._inner = MemoryStore()

    async def open(self) -> None:
        """Open the store underneath."""
        await self._inner.open()

    async def commit(self, batch: Batch) -> None:
        """Commit the counters."""
        await self._inner.commit(batch)

    async def snapshot(self) -> Stats:
        """The counters."""
        return await self._inner.snapshot()

    async def resume_point(self) -> ResumePoint:
        """Where to resume."""
        return await self._inner.resume_point()

    async def close(self) -> None:
        """Close the store underneath."""
        await self._inner.close()


def with_fake_windows(app: FastAPI, windows: FakeWindows) -> FastAPI:
    """Add the stand-in time-window routes (real ones, if present, come first and win)."""
    app.include_router(windows.router())
    feed = live_feed(app)
    if feed.bucket is None:
        feed.bucket = windows.newest_bucket
    return app


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Serve the app on 127.0.0.1 in a thread; yield its base URL; stop it at the end."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on"
    )
    server = LiveServer(config)
    thread = threading.Thread(target=server.run, name="served-app", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("the app did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
        assert not thread.is_alive(), "the app did not stop within 20 s"
