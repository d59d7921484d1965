"""The fan-out behind `GET /stats/live`: the newest statistics as SSE messages, to every client.

One `LiveFeed` per app. The pipeline tells it about each commit (it is a `CommitObserver`; the
call only sets a flag). A single publisher task then reads the statistics once, encodes one SSE
message (`event: stats`, and `event: bucket` when a bucket provider is plugged in), and wakes the
clients; it publishes at most once per `min_interval` (`WIKIPULSE_BATCH_MAX_MS`) and only when
the encoded message changed. Every client holds nothing but the number of the last message it
sent: when it is ready to write again it takes the newest message, so a slow client skips the
ones it missed instead of queueing them, and never slows the pipeline, which does not wait for
anyone. While no client listens, nothing is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from wikipulse.retry import RateLimitedLog
from wikipulse.window_query import SeriesQuery, WindowStore, series_body
from wikipulse.windows import MINUTE

if TYPE_CHECKING:
    from wikipulse.ingest import CommitObserver
    from wikipulse.stores import StatsStore

__all__ = [
    "EXPIRED",
    "FANOUT_SHARE",
    "KEEPALIVE",
    "KEEPALIVE_SECONDS",
    "BucketProvider",
    "CommitObservers",
    "LiveFeed",
    "StatsProvider",
    "store_newest_bucket",
    "store_stats",
]

log = logging.getLogger(__name__)

#: A comment line is sent after this much silence, so proxies keep an idle stream open.
KEEPALIVE_SECONDS = 15.0
KEEPALIVE = b": keep-alive\n\n"
#: The largest share of the event loop's time that sending to the clients may take; the rest is
#: the pipeline's (and the API's). Many clients make messages rarer, never ingest slower.
FANOUT_SHARE = 0.2
#: Sent when the client's token expires: the stream ends and the client logs in again.
EXPIRED = b"event: expired\ndata: {}\n\n"

#: Reads the `/stats` body (raises if the store cannot answer).
StatsProvider = Callable[[], Awaitable[dict[str, Any]]]
#: Reads the newest one-minute bucket of `/stats/timeseries`, or None if there is none yet.
BucketProvider = Callable[[], Awaitable[dict[str, Any] | None]]

_encoder = msgspec.json.Encoder()


def _event(name: str, body: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encoder.encode(body) + b"\n\n"


class CommitObservers:
    """Several commit observers seen as one, so the pipeline can tell metrics and the feed."""

    def __init__(self, *observers: CommitObserver) -> None:
        self._observers = observers

    def commit_succeeded(self, seconds: float) -> None:
        """Tell every observer that a batch was committed."""
        for observer in self._observers:
            observer.commit_succeeded(seconds)

    def commit_failed(self, seconds: float) -> None:
        """Tell every observer that a commit failed."""
        for observer in self._observers:
            observer.commit_failed(seconds)


class LiveFeed:
    """Publish the newest statistics to any number of SSE clients, newest message only."""

    def __init__(self, *, min_interval: float, keepalive: float = KEEPALIVE_SECONDS) -> None:
        #: Reads the statistics; set once the store is open. No client gets data before.
        self.stats: StatsProvider | None = None
        #: Reads the newest minute bucket; None while the time windows are not available.
        self.bucket: BucketProvider | None = None
        self._min_interval = min_interval
        self._keepalive = keepalive
        self._message: bytes | None = None
        self._version = 0  # bumped whenever `_message` changes
        self._stale = True  # a commit happened since `_message` was built
        self._built = asyncio.Event()  # set (and replaced) after every build, and on close
        self._wake = asyncio.Event()
        self._clients = 0
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._error_log = RateLimitedLog(log)
        #: How many messages were built and published; for the tests and the curious.
        self.published = 0

    @property
    def clients(self) -> int:
        """How many clients are connected now."""
        return self._clients

    def commit_succeeded(self, seconds: float) -> None:
        """A batch was committed: the statistics may have changed, so publish them soon."""
        self._stale = True
        self._wake.set()

    def commit_failed(self, seconds: float) -> None:
        """A failed commit changed nothing; there is nothing to publish."""

    def close(self) -> None:
        """End every stream and the publisher, e.g. when the server shuts down."""
        self._closed = True
        self._wake.set()
        self._built.set()

    async def aclose(self) -> None:
        """`close`, then wait for the publisher task to end."""
        self.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def messages(self, expires_at: float | None = None) -> AsyncIterator[bytes]:
        """One client's stream: the current statistics at once, then each change, newest only.

        Ends when the feed closes, or with an `expired` event at `expires_at` (Unix time).
        """
        self._clients += 1
        self._start()
        seen = -1
        try:
            if self._stale or self._message is None:
                self._wake.set()
                if not await self._wait_for_build(expires_at):
                    yield KEEPALIVE
            while not self._closed:
                if seen != self._version and self._message is not None:
                    seen = self._version
                    yield self._message
                    continue
                if expires_at is not None and time.time() >= expires_at:
                    yield EXPIRED
                    return
                if not await self._wait_for_build(expires_at):
                    yield KEEPALIVE
        finally:
            self._clients -= 1

    async def _wait_for_build(self, expires_at: float | None) -> bool:
        """Wait for the next build (True), or for the keep-alive or expiry time (False)."""
        timeout = self._keepalive
        if expires_at is not None:
            timeout = max(0.0, min(timeout, expires_at - time.time()))
        try:
            async with asyncio.timeout(timeout):  # no task per wait, unlike `wait_for`
                await self._built.wait()
        except TimeoutError:
            return False
        return True

    def _start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._publish(), name="wikipulse-live")

    async def _publish(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            if self._closed or self._clients == 0 or not self._stale:
                continue  # stays stale: the next client to connect asks again
            self._stale = False
            try:
                message = await self._build()
            except Exception as exc:  # the store is down: keep the old message, try later
                self._stale = True
                self._error_log.warning("live statistics not read: %s: %s", type(exc).__name__, exc)
                message = None
            if message is not None and message != self._message:
                self._message = message
                self._version += 1
                self.published += 1
            built, self._built = self._built, asyncio.Event()
            started = time.perf_counter()
            built.set()
            # Each waiting client writes the message in this one turn of the event loop, so
            # this measures what the fan-out costs the loop that also runs the pipeline.
            await asyncio.sleep(0)
            cost = time.perf_counter() - started
            # At most one message per interval, and the fan-out never takes more than its
            # share of the loop however many clients listen; commits meanwhile are folded
            # into the next message.
            await asyncio.sleep(max(self._min_interval, cost * (1 / FANOUT_SHARE - 1)))
            if self._stale:
                self._wake.set()

    async def _build(self) -> bytes | None:
        stats = self.stats
        if stats is None:
            self._stale = True
            return None
        message = _event("stats", await stats())
        bucket_provider = self.bucket
        if bucket_provider is not None:
            try:
                bucket = await bucket_provider()
            except Exception as exc:  # the totals still go out without it
                self._error_log.warning("live bucket not read: %s: %s", type(exc).__name__, exc)
                bucket = None
            if bucket is not None:
                message += _event("bucket", bucket)
        return message


def store_stats(store: StatsStore) -> StatsProvider:
    """A provider of the `/stats` body read from `store`."""

    async def read() -> dict[str, Any]:
        body: dict[str, Any] = (await store.snapshot()).to_dict()
        return body

    return read


def store_newest_bucket(store: StatsStore) -> BucketProvider | None:
    """A provider of the newest one-minute bucket of `store`'s windows, if it keeps any."""
    if not isinstance(store, WindowStore):
        return None
    windows = store

    async def read() -> dict[str, Any] | None:
        span = await windows.window_span()
        if span is None:
            return None
        newest = span[1]
        query = SeriesQuery(MINUTE, newest, newest + MINUTE, None)
        buckets: list[dict[str, Any]] = series_body(query, await windows.window_series(query))[
            "buckets"
        ]
        return buckets[-1]

    return read
