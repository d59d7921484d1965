"""The live source: Wikimedia's RecentChange stream over HTTP, reconnecting for ever.

EventStreams closes every connection after about 15 minutes and sends no heartbeats, so a
clean end of a response is routine and silence longer than the stall timeout means a dead
connection. Each reconnect sends ``Last-Event-ID`` so the server resumes where we stopped;
events it sends twice are dropped downstream by their ``meta.id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import httpcore
import httpx

from wikipulse.consumer import ConsumerState
from wikipulse.feeds import Events, RawEvent
from wikipulse.redact import redact_text
from wikipulse.retry import Backoff
from wikipulse.sources import reply
from wikipulse.sse_bulk import BulkSSEParser, EventTooLarge

if TYPE_CHECKING:
    from wikipulse.config import Settings

__all__ = ["LiveSource"]

log = logging.getLogger(__name__)

#: Redirects followed within the stream's own scheme and host.
_MAX_REDIRECTS = 5
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
#: Bytes asked of the socket per read. httpcore asks for 64 KiB, and each read costs about
#: 100 us of Python (anyio, httpcore, h11, httpx) on the 2-core VM: while catching up that was
#: half of the cost of reading the stream (benchmarks/serve_ingest.py; 256 KiB reads: 0.75
#: instead of 1.4 us per event). A read still returns as soon as any bytes arrive.
READ_BYTES = 256 * 1024


def _read_larger() -> None:
    """Raise httpcore's read size to READ_BYTES, for this process.

    httpcore has no setting per client or connection, only this class attribute; raising it
    is harmless to other clients (a read returns what has arrived, up to that size).
    """
    connection = httpcore.AsyncHTTP11Connection
    if getattr(connection, "READ_NUM_BYTES", READ_BYTES) < READ_BYTES:
        connection.READ_NUM_BYTES = READ_BYTES


class LiveSource:
    """Read the RecentChange SSE stream, yielding each event's data and stream position."""

    def __init__(
        self,
        *,
        url: str,
        user_agent: str,
        state: ConsumerState,
        stall_timeout: float,
        connect_timeout: float,
        backoff_initial: float,
        backoff_max: float,
        forbidden_retry: float,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.user_agent = user_agent
        self.state = state
        self._stall_timeout = stall_timeout
        self._connect_timeout = connect_timeout
        self._backoff_max = backoff_max
        self._forbidden_retry = forbidden_retry
        self._max_event_bytes = max_event_bytes
        self._transport = transport
        self._sleep = sleep
        self._clock = clock
        self._retry = Backoff(backoff_initial, max(backoff_max, backoff_initial), rng)
        # Only the host goes into logs: a URL may carry credentials in its userinfo.
        origin = httpx.URL(url)
        self._host = origin.host
        self._origin = (origin.scheme, origin.host, origin.port)
        #: The id of the last event dispatched; sent as Last-Event-ID on every reconnect.
        self.last_id: str | None = None
        #: The server's `retry:` field, in seconds: the least we wait before reconnecting.
        self.retry_floor = 0.0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        state: ConsumerState,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> LiveSource:
        """Build a source from the service settings."""
        return cls(
            url=settings.stream_url,
            user_agent=settings.user_agent,
            state=state,
            stall_timeout=settings.stall_timeout_seconds,
            connect_timeout=settings.connect_timeout_seconds,
            backoff_initial=settings.backoff_initial_seconds,
            backoff_max=settings.backoff_max_seconds,
            forbidden_retry=settings.forbidden_retry_seconds,
            max_event_bytes=settings.max_event_bytes,
            transport=transport,
        )

    async def events(self, last_id: str | None) -> AsyncIterator[RawEvent]:
        """Yield (data, position) of every `message` event, reconnecting until cancelled."""
        async with contextlib.aclosing(self.bulk_events(last_id)) as reads:
            async for events in reads:
                for event in events.pairs():
                    yield event

    async def bulk_events(self, last_id: str | None) -> AsyncGenerator[Events, None]:
        """Like `events`, but the `message` events of each network read come as one item."""
        self.last_id = last_id
        _read_larger()
        timeout = httpx.Timeout(
            connect=self._connect_timeout,
            # No heartbeats: a read that waits this long means the connection is dead.
            read=self._stall_timeout,
            write=self._connect_timeout,
            pool=self._connect_timeout,
        )
        attempts = 0
        async with httpx.AsyncClient(
            transport=self._transport,
            timeout=timeout,
            follow_redirects=True,
            max_redirects=_MAX_REDIRECTS,
            # Called for every request, redirects included: only the stream's own origin.
            event_hooks={"request": [self._same_origin]},
        ) as client:
            while True:
                if attempts:
                    self.state.reconnects += 1
                attempts += 1
                delivered = 0
                delay: float | None
                try:
                    async with client.stream("GET", self.url, headers=self._headers()) as resp:
                        reply.check(
                            resp,
                            host=self._host,
                            user_agent=self.user_agent,
                            forbidden_retry=self._forbidden_retry,
                            wait=self._wait,
                        )
                        self.state.connected = True
                        self.state.forbidden = False
                        self.state.source_error = None
                        log.info("connected to %s (Last-Event-ID %s)", self._host, self.last_id)
                        # A fresh parser per connection: an event cut by a disconnect is dropped.
                        parser = BulkSSEParser(self.last_id, self._max_event_bytes)
                        async with contextlib.aclosing(
                            reply.inflated(resp, slack=self._max_event_bytes, on_bomb=self._bomb)
                        ) as body:
                            async for chunk in body:
                                got = parser.feed(chunk)
                                if got.last_id is not None:
                                    # The id at dispatch, not the parser's: an id read from
                                    # an event cut mid-way must not move the resume point.
                                    self.last_id = got.last_id
                                for kind, data in got.others:
                                    if kind == "error":
                                        log.warning(
                                            "server sent an error event: %s",
                                            data[:500].decode("utf-8", "replace"),
                                        )
                                    else:
                                        log.debug("ignoring SSE event of type %r", kind)
                                if got.data:
                                    delivered += len(got.data)
                                    self.state.last_event_at = self._clock()
                                    yield Events(got.data, got.positions)
                                if parser.retry is not None:
                                    self.retry_floor = parser.retry / 1000
                    log.info("stream ended after %d events; reconnecting", delivered)
                    delay = 0.0 if delivered else None
                except EventTooLarge as exc:
                    # Events of the same read before it were not dispatched: the resume point
                    # did not move past them, so the reconnect reads them again.
                    delay = 0.0 if delivered else None
                    self.state.oversized_events += 1
                    self._failed(f"the stream sent {exc}; dropped the connection")
                except reply.ConnectionEnded as exc:
                    delay = 0.0 if delivered and exc.delay is None else exc.delay
                    self._failed(exc.reason, forbidden=exc.forbidden)
                except httpx.ReadTimeout:
                    delay = 0.0 if delivered else None
                    self._failed(f"no data for {self._stall_timeout:g}s (stalled connection)")
                except httpx.HTTPError as exc:
                    delay = 0.0 if delivered else None
                    self._failed(redact_text(f"{type(exc).__name__}: {exc}"))
                finally:
                    self.state.connected = False
                # Back-off grows over connections that delivered nothing, and resets after one
                # that did: the routine 15-minute close must not look like an error storm.
                if delivered:
                    self._retry.reset()
                if delay is None:
                    delay = self._retry.next_delay()
                elif not delivered:
                    # Retry-After is the least to wait, never a licence to hammer: a server
                    # answering "Retry-After: 0" again and again still meets the back-off.
                    delay = max(delay, self._retry.next_delay())
                delay = max(delay, self.retry_floor)
                if delay > 0:
                    log.info("reconnecting in %.2fs", delay)
                await self._sleep(delay)  # even sleep(0) lets the rest of the service run

    async def _same_origin(self, request: httpx.Request) -> None:
        """Refuse a request (a redirect) to another scheme, host or port than the stream's."""
        url = request.url
        if (url.scheme, url.host, url.port) != self._origin:
            self.state.redirects_refused += 1
            port = f":{url.port}" if url.port is not None else ""
            raise reply.ConnectionEnded(
                f"refused a redirect from {self._host} to {url.scheme}://{url.host}{port} "
                "(only the stream's own scheme and host are followed)"
            )

    def _bomb(self) -> None:
        self.state.oversized_events += 1

    def _headers(self) -> dict[str, str]:
        headers = {
            "User-Agent": self.user_agent,
            "Accept": reply.EVENT_STREAM,
            # No compression: a compressed body can inflate without limit (see _body).
            "Accept-Encoding": "identity",
        }
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id
        return headers

    def _wait(self, value: str | None) -> float | None:
        return reply.retry_after(
            value, now=self._clock(), cap=max(self._backoff_max, self._forbidden_retry)
        )

    def _failed(self, reason: str, *, forbidden: bool = False) -> None:
        self.state.source_error = reason
        if forbidden:
            self.state.forbidden = True
            log.error("%s; retrying in %.0fs", reason, self._forbidden_retry)
        else:
            log.warning("stream connection failed: %s", reason)
