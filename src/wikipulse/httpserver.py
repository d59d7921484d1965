"""The HTTP server's connection guard: header timeout and a cap on open connections.

uvicorn closes a keep-alive connection that stays idle after a response
(`timeout_keep_alive`), but a connection that never sends a complete request is kept open for
ever: nothing times out before the first request, nor while a request's headers trickle in.
`guarded_protocol` makes uvicorn's httptools protocol class (h11 where httptools is missing)

- close a connection whose request headers are not complete `header_timeout` seconds after it
  opened, or after the previous response ended (so also a slow-loris that sends a byte now
  and then, which stops the keep-alive timer), and
- refuse a connection beyond `max_connections` open ones at once: it gets a bare 503 and is
  closed, and a warning says so (at most once per interval, with how many were refused).

The httptools protocol also hands each response to the socket in one send instead of two
(`HeadWithBody`): uvicorn writes a response's head and its body separately, and under load
each write is a system call that costs about as much as the rest of a cached `/stats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    _HTTPTOOLS = True
except ImportError:  # httptools is a dependency, but a platform without its wheel may lack it
    HttpToolsProtocol = H11Protocol  # type: ignore[misc,assignment]
    _HTTPTOOLS = False

__all__ = ["GuardedH11Protocol", "GuardedHttpToolsProtocol", "HeadWithBody", "guarded_protocol"]

log = logging.getLogger(__name__)

_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\ntoo many connections"
)
_LIMIT_LOG_INTERVAL = 10.0


class _LimitLog:
    """Shared by every connection of a server: when the cap was last logged, and since then."""

    def __init__(self) -> None:
        self.next_at = 0.0
        self.held = 0

    def refused(self, open_connections: int, limit: int) -> None:
        now = time.monotonic()
        if now < self.next_at:
            self.held += 1
            return
        held = f"; {self.held} more refused since the last such line" if self.held else ""
        log.warning(
            "HTTP connection limit reached: %d open (WIKIPULSE_HTTP_MAX_CONNECTIONS=%d), "
            "refusing new connections with 503%s",
            open_connections,
            limit,
            held,
        )
        self.held = 0
        self.next_at = now + _LIMIT_LOG_INTERVAL


if TYPE_CHECKING:

    class _Protocol(asyncio.Protocol):
        """What the guard uses of uvicorn's protocol classes (both have it)."""

        loop: asyncio.AbstractEventLoop
        transport: asyncio.Transport
        server_state: Any
        client: tuple[str, int] | None
        cycle: Any

        def on_response_complete(self) -> None: ...

else:
    _Protocol = object


class _Guard(_Protocol):
    """The guard, mixed in before either uvicorn protocol class (see the module)."""

    header_timeout: ClassVar[float] = 10.0
    max_connections: ClassVar[int | None] = None
    limit_log: ClassVar[_LimitLog] = _LimitLog()
    _header_timer: asyncio.TimerHandle | None = None
    _refused = False

    def _refuse_if_full(self, open_before: int, transport: asyncio.Transport) -> bool:
        """Refuse the new connection (503, closed) if the cap is reached; say whether it was."""
        limit = self.max_connections
        if limit is None or open_before < limit:
            self._arm_header_timer()
            return False
        self._refused = True
        self.limit_log.refused(open_before, limit)
        transport.write(_REFUSED)
        transport.close()
        return True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Register the connection, or refuse it when too many are open; start the timer."""
        open_before = len(self.server_state.connections)
        super().connection_made(transport)
        self._refuse_if_full(open_before, transport)

    def data_received(self, data: bytes) -> None:
        """Ignore whatever a refused connection still sends."""
        if not self._refused:
            super().data_received(data)

    def on_response_complete(self) -> None:
        """After a response, the next request's headers have `header_timeout` again."""
        super().on_response_complete()
        self._response_done()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the timer and let uvicorn clean up."""
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _response_done(self) -> None:
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered: not ours to cut
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.debug(
            "closing the connection of %s: no complete request headers within %gs",
            client,
            self.header_timeout,
        )
        self._close_idle()

    def _close_idle(self) -> None:
        self.transport.close()


class GuardedH11Protocol(_Guard, H11Protocol):
    """uvicorn's h11 protocol with a header timeout and a connection cap (see the module)."""

    def handle_events(self) -> None:
        """Parse as uvicorn does; once a new request's headers are in, stop the header timer."""
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:
            self._cancel_header_timer()

    def _close_idle(self) -> None:
        with contextlib.suppress(h11.LocalProtocolError):
            self.conn.send(h11.ConnectionClosed())
        self.transport.close()


class HeadWithBody:
    """A response's transport that sends its first write (the head) with the next one.

    uvicorn writes the status line and headers when the app starts the response, and the body
    when the app sends it, which for a cached `/stats` is at once, in the same step of the
    event loop. Holding the head until then makes one system call of two. Nothing waits for
    a body that does not come: the head is sent by itself at the loop's next turn (a
    streaming response, a 100 Continue), and before a close. Order is always kept: whatever
    is written while the head is held goes after it, in the same send. Everything but
    `write`, `writelines` and `close` is the connection's transport's own.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        #: None before the first write; the head while it is held; b"" once it is sent.
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        """Hold the first write for the second one; send everything after it as it comes."""
        held = self._held
        if held is None:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        elif held:
            self._held = b""
            self._transport.writelines([held, data])
        else:
            self._transport.write(data)

    def writelines(self, list_of_data: list[bytes]) -> None:
        """Write the pieces in order (after a held head)."""
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Send a held head now."""
        held = self._held
        if held:
            self._held = b""
            if not self._transport.is_closing():
                self._transport.write(held)
        elif held is None:
            self._held = b""

    def close(self) -> None:
        """Send a held head, then close as the transport does (after its buffer drains)."""
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(_Guard, HttpToolsProtocol):
    """uvicorn's httptools protocol (C parser) with the same header timeout and connection cap."""

    def on_headers_complete(self) -> None:
        """A request's headers are in: stop the header timer, then go on as uvicorn does.

        The response's cycle gets a `HeadWithBody` in front of the connection's transport.
        """
        self._cancel_header_timer()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:
            cycle.transport = HeadWithBody(self.transport, self.loop)


def guarded_protocol(header_timeout: float, max_connections: int | None) -> type[_Guard]:
    """A protocol class for uvicorn's `http=` with these limits and its own limit log.

    httptools (a C parser, several times faster per request) where it is installed, else h11.
    """
    base: type[_Guard] = GuardedHttpToolsProtocol if _HTTPTOOLS else GuardedH11Protocol
    return type(
        f"Wikipulse{base.__name__.removeprefix('Guarded')}",
        (base,),
        {
            "header_timeout": header_timeout,
            "max_connections": max_connections,
            "limit_log": _LimitLog(),
        },
    )
