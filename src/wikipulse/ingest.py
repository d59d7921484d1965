"""The ingestion pipeline: raw events from a source, through the aggregator, into the store."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from wikipulse.stats import Aggregator, Batch, Counters, Outcome, RecentIds
from wikipulse.stores import StatsStore, StoreError, StoreUnavailable

__all__ = ["CommitObserver", "ConsumerState", "Pipeline", "RawEvent", "parse_dt"]

log = logging.getLogger(__name__)

#: How many times a commit failing with an error that is not an outage is tried again.
_UNEXPECTED_FAILURES = 3

#: One event as a source delivers it: its JSON bytes and the stream position after it.
RawEvent = tuple[bytes, str | None]


@dataclass(slots=True)
class ConsumerState:
    """What the stream consumer is doing, shared by the source, the pipeline and `/status`."""

    connected: bool = False
    reconnects: int = 0
    last_event_at: float | None = None  # wall-clock time of the last event received
    last_error: str | None = None
    forbidden: bool = False  # the server refused our User-Agent (HTTP 403)
    store_ok: bool = True
    oversized_events: int = 0  # connections dropped for a line or event over the size limit
    redirects_refused: int = 0  # redirects to another scheme or host, not followed
    counters: Counters = field(default_factory=Counters)

    @property
    def last_event_dt(self) -> str | None:
        """The `meta.dt` of the last event counted, as the stream sent it."""
        return self.counters.last_dt

    def lag_seconds(self, now: float) -> float | None:
        """Seconds from the last counted event's `meta.dt` to `now`; None if not known.

        Negative when the local clock is behind the stream's: shown as is, not hidden.
        """
        event_time = parse_dt(self.counters.last_dt)
        return None if event_time is None else now - event_time

    def as_dict(self, now: float | None = None) -> dict[str, object]:
        """The consumer part of the `/status` body."""
        c = self.counters
        lag = self.lag_seconds(time.time() if now is None else now)
        return {
            "connected": self.connected,
            "events_consumed": c.counted,
            "duplicates": c.duplicates,
            "invalid": c.invalid,
            "canaries_dropped": c.canaries,
            "reconnects": self.reconnects,
            "last_event_at": _iso(self.last_event_at),
            "last_event_dt": c.last_dt,
            "lag_seconds": None if lag is None else round(lag, 3),
            "last_error": self.last_error,
            "user_agent_refused": self.forbidden,
            "store_ok": self.store_ok,
            "oversized_events": self.oversized_events,
            "redirects_refused": self.redirects_refused,
        }


def parse_dt(value: str | None) -> float | None:
    """A `meta.dt` (ISO 8601, `Z` or an offset, any sub-second precision) as a Unix time.

    A time without an offset is taken as UTC; anything unparsable gives None, because a bad
    timestamp must not break `/status` or a scrape.
    """
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class CommitObserver(Protocol):
    """Told how each store commit went, e.g. to export metrics; must not block."""

    def commit_succeeded(self, seconds: float) -> None:
        """A batch was committed, taking `seconds`."""

    def commit_failed(self, seconds: float) -> None:
        """A commit raised after `seconds`; the pipeline will retry it."""


class _RateLimitedLog:
    """Log at most one message per interval and say how many were held back."""

    def __init__(self, interval: float = 10.0) -> None:
        self._interval = interval
        self._next = 0.0
        self._held = 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return
        if self._held:
            msg += " (%d similar messages suppressed)"
            args = (*args, self._held)
        log.warning(msg, *args)
        self._held = 0
        self._next = now + self._interval


class Pipeline:
    """Fold events into batches and commit each batch when it is big or old enough."""

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
    ) -> None:
        self.store = store
        self.state = state or ConsumerState()
        self._observer = observer
        self._max_events = max_events
        self._max_age = max_ms / 1000
        self._dedup_window = dedup_window
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._lock = asyncio.Lock()
        self._invalid_log = _RateLimitedLog()
        self._batch_started: float | None = None
        self._pending: Batch | None = None
        self._inflight: asyncio.Task[None] | None = None
        self.aggregator = Aggregator(RecentIds(dedup_window))
        self.aggregator.counters = self.state.counters

    async def resume(self) -> str | None:
        """Load the store's resume point into the dedup window; return the position."""
        point = await self.store.resume_point()
        self.aggregator.recent = RecentIds(self._dedup_window, point.recent_ids)
        return point.position

    async def run(self, events: AsyncIterator[RawEvent]) -> None:
        """Consume events until the source ends, committing as it goes and at the end."""
        flusher = asyncio.create_task(self._flush_when_old())
        try:
            async for data, position in events:
                await self.add(data, position)
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

    async def fold_lines(self, lines: list[bytes]) -> None:
        """Process NDJSON lines (no stream position) and commit the batch if it is full."""
        agg = self.aggregator
        invalid = agg.counters.invalid
        agg.fold(lines)
        self.note_invalid(agg.counters.invalid - invalid, agg.last_error)
        await self.commit_if_full()

    def note_invalid(self, count: int, last_error: str) -> None:
        """Log (rate-limited) that invalid events were skipped."""
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
                await self._commit(self._pending)
                self._pending = None
                if fresh:
                    return

    async def _commit(self, batch: Batch) -> None:
        """Commit one batch; wait out an unavailable store, give up on a broken one."""
        delay = self._retry_initial
        observer = self._observer
        unexpected = 0
        while True:
            started = time.perf_counter()
            try:
                await self.store.commit(batch)
            except Exception as exc:
                if observer is not None:
                    observer.commit_failed(time.perf_counter() - started)
                self.state.store_ok = False
                self.state.last_error = f"store: {exc}"
                # An outage is waited out for as long as it lasts; a store that refuses the
                # batch for another reason (a wrong schema, a bug) is given a few chances only,
                # then the error stops the pipeline rather than stalling it for ever.
                if isinstance(exc, StoreError) and not isinstance(exc, StoreUnavailable):
                    raise
                if not isinstance(exc, StoreUnavailable):
                    unexpected += 1
                    if unexpected > _UNEXPECTED_FAILURES:
                        raise
                log.warning("store commit failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311  # jitter
                delay = min(delay * 2, self._retry_max)
                continue
            if observer is not None:
                observer.commit_succeeded(time.perf_counter() - started)
            if not self.state.store_ok:
                log.info("store is back; batch of %d events committed", batch.total)
            self.state.store_ok = True
            return

    async def _flush_when_old(self) -> None:
        while True:
            await asyncio.sleep(self._max_age / 2)
            started = self._batch_started
            if started is not None and time.monotonic() - started >= self._max_age:
                await self.flush()
