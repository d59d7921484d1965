"""The ingestion pipeline: what a source feeds, through the aggregator, into the store."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from wikipulse.consumer import ConsumerState
from wikipulse.dedup import RecentIds
from wikipulse.feeds import Events, Feed, Folded, Lines
from wikipulse.fold_bulk import fold_block
from wikipulse.retry import Backoff, RateLimitedLog
from wikipulse.stats import Aggregator, Batch, Outcome
from wikipulse.stores import StatsStore, StoreError, StoreUnavailable

__all__ = ["CommitObserver", "Committer", "Pipeline"]

log = logging.getLogger(__name__)

#: How many times a commit failing with an error that is not an outage is tried again.
_UNEXPECTED_FAILURES = 3


class CommitObserver(Protocol):
    """Told how each store commit went, e.g. to export metrics; must not block."""

    def commit_succeeded(self, seconds: float) -> None:
        """A batch was committed, taking `seconds`."""

    def commit_failed(self, seconds: float) -> None:
        """A commit raised after `seconds`; the pipeline will retry it."""


class Committer:
    """Commits one batch to the store: waits out an outage, gives up on a broken store."""

    def __init__(
        self,
        store: StatsStore,
        state: ConsumerState,
        backoff: Backoff,
        observer: CommitObserver | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self._state = state
        self._backoff = backoff
        self._observer = observer
        self._sleep = sleep

    async def commit(self, batch: Batch) -> None:
        """Commit `batch`, retrying outages for as long as they last; raise if it is refused."""
        observer = self._observer
        state = self._state
        unexpected = 0
        while True:
            started = time.perf_counter()
            try:
                await self.store.commit(batch)
            except Exception as exc:
                if observer is not None:
                    observer.commit_failed(time.perf_counter() - started)
                state.store_ok = False
                state.store_error = f"store: {exc}"
                # An outage is waited out for as long as it lasts; a store that refuses the
                # batch for another reason (a wrong schema, a bug) is given a few chances only,
                # then the error stops the pipeline rather than stalling it for ever.
                if isinstance(exc, StoreError) and not isinstance(exc, StoreUnavailable):
                    raise
                if not isinstance(exc, StoreUnavailable):
                    unexpected += 1
                    if unexpected > _UNEXPECTED_FAILURES:
                        raise
                delay = self._backoff.next_delay()
                log.warning("store commit failed (%s); retrying in %.1fs", exc, delay)
                await self._sleep(delay)
                continue
            if observer is not None:
                observer.commit_succeeded(time.perf_counter() - started)
            if not state.store_ok:
                log.info("store is back; batch of %d events committed", batch.total)
            state.store_ok = True
            state.store_error = None
            self._backoff.reset()
            return


class Pipeline:
    """Fold what a source feeds into batches; commit each when it is big or old enough."""

    def __init__(
        self,
        store: StatsStore,
        *,
        max_events: int = 1000,
        max_ms: int = 500,
        dedup_window: int = 100_000,
        state: ConsumerState | None = None,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        observer: CommitObserver | None = None,
        published: Callable[[], Awaitable[object]] | None = None,
        windows: bool = True,
    ) -> None:
        self.store = store
        self.state = state or ConsumerState()
        self._committer = Committer(
            store, self.state, Backoff(retry_initial, max(retry_max, retry_initial)), observer
        )
        #: Awaited after each successful commit, once the batch is no longer pending, e.g. to
        #: publish the new snapshot; an error is logged (the batch is committed all the same).
        self._published = published
        self._max_events = max_events
        self._max_age = max_ms / 1000
        self._dedup_window = dedup_window
        self._lock = asyncio.Lock()
        self._invalid_log = RateLimitedLog(log)
        self._batch_started: float | None = None
        self._pending: Batch | None = None
        self._inflight: asyncio.Task[None] | None = None
        self.aggregator = Aggregator(RecentIds(dedup_window), windows=windows)
        self.aggregator.counters = self.state.counters

    async def resume(self) -> str | None:
        """Load the store's resume point into the dedup window; return the position."""
        point = await self.store.resume_point()
        self.aggregator.recent = RecentIds(self._dedup_window, point.recent_ids)
        return point.position

    async def run(self, feed: AsyncIterator[Feed]) -> None:
        """Consume a source until it ends, committing as it goes and at the end."""
        flusher = asyncio.create_task(self._flush_when_old())
        try:
            async for item in feed:
                if type(item) is Events:  # the live path: the events of one network read
                    await self.fold_events(item)
                elif type(item) is tuple:  # one event at a time
                    await self.add(*item)
                elif isinstance(item, Lines):
                    await self.fold_lines(item.lines)
                elif isinstance(item, Folded):
                    await self.merge(item)
                else:
                    raise TypeError(f"a source fed {type(item).__name__}, not a Feed item")
        finally:
            flusher.cancel()
            await self.flush()

    async def add(self, data: bytes, position: str | None) -> Outcome:
        """Process one event and commit the batch if it is full."""
        agg = self.aggregator
        outcome = agg.add_raw(data, position)
        if outcome is Outcome.INVALID:
            self._invalid_log.warning("invalid event skipped: %s", agg.last_error)
        await self.commit_if_full()
        return outcome

    async def fold_events(self, events: Events) -> None:
        """Process live events in one call, as `add` on each would, and commit if the batch is full.

        The batch takes the position of the last event that has one, as it would one by one.
        """
        agg = self.aggregator
        invalid = agg.counters.invalid
        if not fold_block(agg, events.data):  # anything unusual: event by event
            agg.fold(events.data, blank_invalid=True)
        for position in reversed(events.positions):
            if position is not None:
                agg.batch.position = position
                break
        self._note_invalid(agg.counters.invalid - invalid, agg.last_error)
        await self.commit_if_full()

    async def fold_lines(self, lines: list[bytes]) -> None:
        """Process NDJSON lines (no stream position) and commit the batch if it is full."""
        agg = self.aggregator
        invalid = agg.counters.invalid
        agg.fold(lines)
        self._note_invalid(agg.counters.invalid - invalid, agg.last_error)
        await self.commit_if_full()

    async def merge(self, folded: Folded) -> None:
        """Add a part a worker folded, or fold its lines here if it repeats an event."""
        if not self.aggregator.merge(folded.partial):
            await self.fold_lines(folded.lines())
            return
        self._note_invalid(folded.partial.invalid, folded.partial.last_error)
        await self.commit_if_full()

    def _note_invalid(self, count: int, last_error: str) -> None:
        if count:
            self._invalid_log.warning("%d invalid events skipped, the last: %s", count, last_error)

    async def commit_if_full(self) -> None:
        """Start committing the batch if it is full; folding goes on while the store works.

        At most one commit is in flight: a second full batch waits for the first, so a slow
        or failing store slows the source down instead of piling batches up in memory.
        """
        if self._batch_started is None:
            self._batch_started = time.monotonic()
        inflight = self._inflight
        if inflight is not None and inflight.done():
            self._inflight = None
            inflight.result()  # a commit that failed for good stops the pipeline here
            inflight = None
        if self.aggregator.batch.total < self._max_events:
            if inflight is not None:
                await asyncio.sleep(0)  # let the commit in flight make progress
            return
        if inflight is not None:
            await inflight
        self._inflight = asyncio.create_task(self._flush_locked(), name="wikipulse-commit")
        await asyncio.sleep(0)  # start it: take the batch and hand it to the store

    async def flush(self) -> None:
        """Commit everything folded so far, retrying with back-off while the store is down.

        A batch whose commit was interrupted (cancelled at shutdown) stays pending and is
        committed first next time, so it is never dropped from memory half-way.
        """
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            await inflight
        await self._flush_locked()

    async def _flush_locked(self) -> None:
        async with self._lock:
            while True:
                fresh = self._pending is None
                if self._pending is None:
                    batch = self.aggregator.take()
                    self._batch_started = None
                    if not batch.touched:
                        return
                    self._pending = batch
                await self._committer.commit(self._pending)
                self._pending = None
                await self._publish()
                if fresh:
                    return

    async def _publish(self) -> None:
        if self._published is None:
            return
        try:
            await self._published()
        except Exception as exc:
            log.warning("publishing the committed snapshot failed: %s", exc)

    async def _flush_when_old(self) -> None:
        while True:
            await asyncio.sleep(self._max_age / 2)
            started = self._batch_started
            if started is not None and time.monotonic() - started >= self._max_age:
                await self.flush()
