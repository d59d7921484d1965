"""The HTTP application: `build_app` puts the services and the API together, with a lifespan."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from wikipulse import __version__
from wikipulse.api import router
from wikipulse.api_windows import router as windows_router
from wikipulse.auth import Authenticator, prepare_credentials
from wikipulse.bootstrap import (
    EventSource,
    Services,
    live_source,
    make_pipeline,
    run_consumer,
    store_for,
)
from wikipulse.broadcast import CommitObservers, LiveFeed, store_newest_bucket, store_stats
from wikipulse.consumer import ConsumerState
from wikipulse.dashboard import router as dashboard_router
from wikipulse.docs import install_docs
from wikipulse.ingest import Pipeline
from wikipulse.live import LiveCollector
from wikipulse.live import router as live_router
from wikipulse.metrics import HttpMetricsMiddleware, Metrics
from wikipulse.ratelimit import LoginGuard
from wikipulse.stores import StatsStore

if TYPE_CHECKING:
    from wikipulse.config import Settings

__all__ = ["build_app"]

log = logging.getLogger(__name__)

#: How long shutdown waits for the last batch to be committed before giving up on it.
SHUTDOWN_GRACE_SECONDS = 10.0

_DESCRIPTION = (
    "Live statistics of Wikimedia's RecentChange stream. Get a token from `POST /login`, "
    'then press "Authorize" and paste it to call `GET /stats`.'
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
) -> FastAPI:
    """Build the ASGI app; its lifespan opens the store and runs the consumer in the background.

    Credentials: unless `auth` is given, `prepare_credentials(settings)` runs here, when the
    app is built (so `serve` prints a generated admin password before the server starts).
    The store defaults to the one the settings name and the source to the live stream; both
    are made when the lifespan starts, not here. `clock` is the wall clock the stream lag is
    measured against.
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
    )
    live = services.live
    metrics.registry.register(LiveCollector(live))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        the_store = store_for(settings, store)
        await the_store.open()
        try:
            observers = CommitObservers(metrics, live)
            pipeline = make_pipeline(settings, the_store, consumer_state, observers)
            position = await pipeline.resume()
            the_source = source if source is not None else live_source(settings, consumer_state)
            consumer = asyncio.create_task(
                run_consumer(pipeline, the_source.events(position), consumer_state),
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
            await the_store.close()

    app = FastAPI(
        title="wikipulse",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by install_docs from local assets, not from a CDN
        redoc_url=None,
    )
    install_docs(app)
    app.state.services = services
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    app.include_router(router)
    app.include_router(live_router)
    app.include_router(dashboard_router)
    app.include_router(windows_router)
    return app


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
