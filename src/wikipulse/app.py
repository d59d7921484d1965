"""Wiring: `build_app` puts the store, the consumer and the API together, with their lifespan."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol

from fastapi import FastAPI

from wikipulse import __version__
from wikipulse.api import consumer_running, router
from wikipulse.auth import Authenticator, prepare_credentials
from wikipulse.docs import install_docs
from wikipulse.ingest import ConsumerState, Pipeline, RawEvent
from wikipulse.metrics import HttpMetricsMiddleware, Metrics
from wikipulse.ratelimit import LoginGuard
from wikipulse.stores import StatsStore, make_store

if TYPE_CHECKING:
    from wikipulse.config import Settings

__all__ = ["EventSource", "build_app"]

log = logging.getLogger(__name__)

#: How long shutdown waits for the last batch to be committed before giving up on it.
SHUTDOWN_GRACE_SECONDS = 10.0

_DESCRIPTION = (
    "Live statistics of Wikimedia's RecentChange stream. Get a token from `POST /login`, "
    'then press "Authorize" and paste it to call `GET /stats`.'
)


class EventSource(Protocol):
    """Where events come from: the live stream, or a fake in the tests."""

    def events(self, last_id: str | None) -> AsyncIterator[RawEvent]:
        """Yield each event's JSON and its stream position, resuming after `last_id`."""
        ...


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
    The store defaults to `make_store(settings)` and the source to the live stream; both are
    made when the lifespan starts, not here. `clock` is the wall clock the stream lag is
    measured against.
    """
    consumer_state = state if state is not None else ConsumerState()
    authenticator = auth if auth is not None else prepare_credentials(settings)
    # Every app has its own registry: no process-wide metric objects to collide in the tests.
    metrics = Metrics(consumer_state, lambda: consumer_running(app.state), clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        the_store = store if store is not None else make_store(settings)
        await the_store.open()
        try:
            pipeline = Pipeline(
                the_store,
                max_events=settings.batch_max_events,
                max_ms=settings.batch_max_ms,
                dedup_window=settings.dedup_window,
                state=consumer_state,
                observer=metrics,
            )
            position = await pipeline.resume()
            the_source = source if source is not None else _live_source(settings, consumer_state)
            consumer = asyncio.create_task(
                _consume(pipeline, the_source, position, consumer_state),
                name="wikipulse-consumer",
            )
            app.state.store = the_store
            app.state.consumer_task = consumer
            try:
                yield
            finally:
                await _stop(consumer, pipeline, shutdown_grace)
        finally:
            app.state.store = None
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
    app.state.settings = settings
    app.state.consumer = consumer_state
    app.state.auth = authenticator
    app.state.login_guard = LoginGuard.from_settings(settings)
    app.state.store = None  # set while the lifespan runs; `/stats` answers 503 until then
    app.state.consumer_task = None
    app.state.metrics = metrics
    app.state.clock = clock
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    app.include_router(router)
    return app


def _live_source(settings: Settings, state: ConsumerState) -> EventSource:
    # Imported here so that the API and its tests do not load the HTTP client stack.
    from wikipulse.sources.live import LiveSource

    return LiveSource.from_settings(settings, state)


async def _consume(
    pipeline: Pipeline, source: EventSource, position: str | None, state: ConsumerState
) -> None:
    """Run the pipeline over the source; a crash is logged and shown in `/status`, not raised."""
    events = source.events(position)
    try:
        await pipeline.run(events)
    except Exception as exc:  # the API keeps serving what was counted so far
        log.exception("the stream consumer stopped on an unexpected error")
        state.last_error = f"consumer stopped: {type(exc).__name__}: {exc}"
        state.connected = False
    else:
        log.info("the event source ended; %d events counted", state.counters.counted)
    finally:
        # Close the source's generator now (and its connection), not whenever it is collected.
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


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
