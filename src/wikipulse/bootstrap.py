"""One place that wires the parts: the store, the pipeline and the sources of every command.

`serve` (through `app.build_app`), `ingest` (through `fleet.Elector`) and `replay` build their
store and pipeline here, from the settings, so that all run the same parts the same way (the
roles are wired in `roles.py`). Imports of drivers and of the HTTP client stack happen in the
functions that need them, so a command loads only what it uses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from wikipulse.consumer import ConsumerState
from wikipulse.feeds import Feed, RawEvent
from wikipulse.ingest import CommitObserver, Pipeline
from wikipulse.snapshots import SnapshotCache
from wikipulse.stores import StatsStore, make_store

if TYPE_CHECKING:
    from wikipulse.auth import Authenticator
    from wikipulse.broadcast import LiveFeed
    from wikipulse.config import Settings
    from wikipulse.metrics import Metrics
    from wikipulse.ratelimit import LoginGuard

__all__ = [
    "EventSource",
    "Services",
    "live_source",
    "make_pipeline",
    "run_consumer",
    "source_feed",
    "store_for",
]

log = logging.getLogger(__name__)


class EventSource(Protocol):
    """Where live events come from: the EventStreams client, or a fake in the tests."""

    def events(self, last_id: str | None) -> AsyncIterator[RawEvent]:
        """Yield each event's JSON and its stream position, resuming after `last_id`."""
        ...


def source_feed(source: EventSource, position: str | None) -> AsyncIterator[Feed]:
    """What the pipeline reads from a source: its events per network read where it has them."""
    bulk = getattr(source, "bulk_events", None)
    if bulk is not None:
        feed: AsyncIterator[Feed] = bulk(position)
        return feed
    return source.events(position)


def store_for(settings: Settings, store: StatsStore | None = None) -> StatsStore:
    """The store to use: the one given (tests), else the one the settings name."""
    return store if store is not None else make_store(settings)


def make_pipeline(
    settings: Settings,
    store: StatsStore,
    state: ConsumerState | None = None,
    observer: CommitObserver | None = None,
    published: Callable[[], Awaitable[object]] | None = None,
    windows: bool = True,
) -> Pipeline:
    """A pipeline into `store` with the batching and dedup settings (`published`: see Pipeline)."""
    return Pipeline(
        store,
        max_events=settings.batch_max_events,
        max_ms=settings.batch_max_ms,
        dedup_window=settings.dedup_window,
        state=state,
        observer=observer,
        published=published,
        windows=windows,
    )


def live_source(settings: Settings, state: ConsumerState) -> EventSource:
    """The EventStreams client the settings describe."""
    # Imported here so that the API, replay and their tests do not load the HTTP client stack.
    from wikipulse.sources.live import LiveSource

    return LiveSource.from_settings(settings, state)


async def run_consumer(pipeline: Pipeline, feed: AsyncIterator[Feed], state: ConsumerState) -> None:
    """Run the pipeline over a feed; a crash is logged and shown in `/status`, not raised."""
    try:
        await pipeline.run(feed)
    except Exception as exc:  # the API keeps serving what was counted so far
        log.exception("the stream consumer stopped on an unexpected error")
        state.stopped_error = f"consumer stopped: {type(exc).__name__}: {exc}"
        state.connected = False
    else:
        log.info("the event source ended; %d events counted", state.counters.counted)
    finally:
        # Close the source's generator now (and its connection), not whenever it is collected.
        aclose = getattr(feed, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass(slots=True)
class Services:
    """Everything the HTTP handlers use, in one typed object (`app.state.services`)."""

    settings: Settings
    consumer: ConsumerState
    auth: Authenticator
    metrics: Metrics
    clock: Callable[[], float]
    login_guard: LoginGuard
    #: The fan-out of `/stats/live`, told about every commit.
    live: LiveFeed
    #: The committed snapshot `/stats` serves, encoded once per commit.
    snapshots: SnapshotCache = field(default_factory=SnapshotCache)
    #: Set while the app's lifespan runs; `/stats` answers 503 until then.
    store: StatsStore | None = None
    consumer_task: asyncio.Task[None] | None = field(default=None)
    #: `serve` (consumer and API), `api` (API only) or `ingest` (consumer only).
    role: str = "serve"
    #: The writer's lease as `/status` shows it (`ingest` only).
    lease_status: Callable[[], dict[str, object]] | None = None

    def consumer_running(self) -> bool:
        """Whether the stream consumer task exists and has not ended."""
        task = self.consumer_task
        return task is not None and not task.done()
