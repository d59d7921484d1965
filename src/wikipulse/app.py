"""The HTTP application: `build_app` puts the services and the API together, with a lifespan."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from wikipulse import __version__
from wikipulse.api import router
from wikipulse.api_windows import router as windows_router
from wikipulse.auth import Authenticator
from wikipulse.bootstrap import (
    EventSource,
    Services,
    live_source,
    make_pipeline,
    run_consumer,
    source_feed,
    store_for,
)
from wikipulse.broadcast import CommitObservers, LiveFeed, store_newest_bucket, store_stats
from wikipulse.consumer import ConsumerState
from wikipulse.credentials import prepare_credentials
from wikipulse.dashboard import router as dashboard_router
from wikipulse.docs import install_docs
from wikipulse.fastpath import StatsFastPath
from wikipulse.ingest import Pipeline
from wikipulse.live import LiveCollector
from wikipulse.live import router as live_router
from wikipulse.metrics import HttpMetricsMiddleware, Metrics
from wikipulse.ratelimit import LoginGuard
from wikipulse.snapshots import SnapshotCache, SnapshotRefresher
from wikipulse.stats import Stats
from wikipulse.stores import StatsStore

if TYPE_CHECKING:
    from wikipulse.config import Settings

__all__ = ["WikipulseApp", "build_app"]

log = logging.getLogger(__name__)

#: Stores that processes other than this one may write: their snapshot is re-read on a timer.
SHARED_STORES = frozenset({"postgres", "cassandra"})

#: How long shutdown waits for the last batch to be committed before giving up on it.
SHUTDOWN_GRACE_SECONDS = 10.0

_DESCRIPTION = (
    "Live statistics of Wikimedia's RecentChange stream. Get a token from `POST /login`, "
    'then press "Authorize" and paste it to call `GET /stats`.'
)


# FastAPI releases with native OpenTelemetry ask on every request whether a provider is
# configured (environment look-ups and a provider query: measured at 40% of a cached /stats
# request). The service exports its own Prometheus metrics, so that is switched off where the
# installed FastAPI has it.
_NO_NATIVE_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def build_app(
    settings: Settings,
    *,
    store: StatsStore | None = None,
    source: EventSource | None = None,
    state: ConsumerState | None = None,
    auth: Authenticator | None = None,
    shutdown_grace: float = SHUTDOWN_GRACE_SECONDS,
    clock: Callable[[], float] = time.time,
    role: str = "serve",
) -> FastAPI:
    """Build the ASGI app; its lifespan opens the store and runs the consumer in the background.

    Credentials: unless `auth` is given, `prepare_credentials(settings)` runs here, when the
    app is built (so `serve` prints a generated admin password before the server starts).
    The store defaults to the one the settings name and the source to the live stream; both
    are made when the lifespan starts, not here. `clock` is the wall clock the stream lag is
    measured against. `role="api"` runs no consumer: the app serves what other processes
    (`wikipulse ingest`) commit to the shared store, re-reading it every batch interval.
    """
    consumer_state = state if state is not None else ConsumerState()
    # Every app has its own registry: no process-wide metric objects to collide in the tests.
    metrics = Metrics(consumer_state, lambda: services.consumer_running(), clock=clock)
    services = Services(
        settings=settings,
        consumer=consumer_state,
        auth=auth if auth is not None else prepare_credentials(settings),
        metrics=metrics,
        clock=clock,
        login_guard=LoginGuard.from_settings(settings),
        live=LiveFeed(min_interval=settings.batch_max_ms / 1000),
        role=role,
    )
    live = services.live
    metrics.registry.register(LiveCollector(live))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        the_store = store_for(settings, store)
        await the_store.open()
        snapshots = services.snapshots
        refresher: asyncio.Task[None] | None = None
        if role == "api":
            async with _api_only(services, the_store):
                yield
            return
        try:
            pipeline = make_pipeline(
                settings,
                the_store,
                consumer_state,
                CommitObservers(metrics, live),
                published=lambda: snapshots.load(the_store.snapshot),
            )
            position = await pipeline.resume()
            if settings.store in SHARED_STORES:
                # Other processes may write it too: re-read it every batch interval as well.
                reader = SnapshotRefresher(
                    snapshots, the_store.snapshot, settings.batch_max_ms / 1000
                )
                refresher = asyncio.create_task(reader.run(), name="wikipulse-snapshots")
            else:
                await _publish_first(snapshots, the_store)
            the_source = source if source is not None else live_source(settings, consumer_state)
            consumer = asyncio.create_task(
                run_consumer(pipeline, source_feed(the_source, position), consumer_state),
                name="wikipulse-consumer",
            )
            services.store = the_store
            services.consumer_task = consumer
            live.stats = store_stats(the_store)
            if live.bucket is None:  # a test may have plugged in its own
                live.bucket = store_newest_bucket(the_store)
            try:
                yield
            finally:
                await live.aclose()
                await _stop(consumer, pipeline, shutdown_grace)
        finally:
            services.store = None
            if refresher is not None:
                refresher.cancel()
                await asyncio.wait({refresher})
            snapshots.invalidate()
            await the_store.close()

    app = WikipulseApp(
        title="wikipulse",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by install_docs from local assets, not from a CDN
        redoc_url=None,
        **_NO_NATIVE_TELEMETRY,
    )
    install_docs(app)
    app.state.services = services
    app.include_router(router)
    app.include_router(live_router)
    app.include_router(dashboard_router)
    app.include_router(windows_router)
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    app.fast_path = StatsFastPath(services)
    return app


class WikipulseApp(FastAPI):
    """The FastAPI app, asking the `/stats` fast path first (see `fastpath.py`)."""

    fast_path: StatsFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Let the fast path answer if it can, else run the app as FastAPI does."""
        fast_path = self.fast_path
        if fast_path is not None and await fast_path.answer(scope, send):
            return
        await super().__call__(scope, receive, send)


@asynccontextmanager
async def _api_only(services: Services, store: StatsStore) -> AsyncIterator[None]:
    """The lifespan of an `api` process: re-read the store every batch interval, no consumer.

    Each read that finds new statistics also wakes the `/stats/live` feed, as a commit does
    in `serve`.
    """
    live = services.live
    seen: list[Stats] = []

    async def read() -> Stats:
        stats = await store.snapshot()
        if not seen or seen[0] != stats:
            seen[:] = [stats]
            live.commit_succeeded(0.0)
        return stats

    reader = SnapshotRefresher(services.snapshots, read, services.settings.batch_max_ms / 1000)
    refresher = asyncio.create_task(reader.run(), name="wikipulse-snapshots")
    services.store = store
    live.stats = store_stats(store)
    if live.bucket is None:
        live.bucket = store_newest_bucket(store)
    try:
        yield
    finally:
        await live.aclose()
        services.store = None
        refresher.cancel()
        await asyncio.wait({refresher})
        services.snapshots.invalidate()
        await store.close()


async def _publish_first(snapshots: SnapshotCache, store: StatsStore) -> None:
    """Read the store's snapshot once at start-up; a failure leaves it to the first request."""
    try:
        await snapshots.load(store.snapshot)
    except Exception as exc:
        log.warning("reading the statistics failed: %s: %s", type(exc).__name__, exc)


async def _stop(consumer: asyncio.Task[None], pipeline: Pipeline, grace: float) -> None:
    """Cancel the consumer and commit the last batch, giving up after `grace` seconds each."""
    consumer.cancel()
    # `Pipeline.run` commits what it holds as it unwinds; the wait bounds a store that is down.
    done, _ = await asyncio.wait({consumer}, timeout=grace)
    committed = bool(done)
    if not done:
        consumer.cancel()  # interrupts the commit retries
        await asyncio.wait({consumer})
    try:
        await asyncio.wait_for(pipeline.flush(), grace)
    except TimeoutError:
        committed = False
    if not committed:
        log.error(
            "the store did not accept the last batch within %gs; its events were not "
            "committed and will be read again from the last stored position",
            grace,
        )
