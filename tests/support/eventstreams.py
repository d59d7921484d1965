"""A fake Wikimedia EventStreams server that misbehaves on purpose.

It speaks raw HTTP/1.1 over asyncio streams, so it can cut a connection in the middle of an
event, write an event a few bytes at a time, stall with the socket open, and mix line endings.
Use it inside an async test (``async with EventStreamsServer(lines) as srv``) or from any
thread (``with EventStreamsServer(lines) as srv``), which also serves a separate process.

Every event the server writes completely is logged in ``delivered`` (indices into ``lines``),
and every request in ``requests``, so tests can compute what the client must have seen.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import gzip
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

__all__ = [
    "CODFW_TOPIC",
    "EQIAD_TOPIC",
    "EventStreamsServer",
    "Faults",
    "Hostile",
    "RecordedRequest",
    "canary_event",
    "gzip_bomb",
    "inject",
    "malformed_events",
]

EQIAD_TOPIC = "eqiad.mediawiki.recentchange"
CODFW_TOPIC = "codfw.mediawiki.recentchange"
STREAM_PATH = "/v2/stream/recentchange"
IdFormat = Literal["offset", "timestamp"]
LineEnding = Literal["lf", "crlf", "cr", "mixed"]
#: Answers of a hostile server: a data line that never ends, a gzip body inflating to one
#: (sent although the client asked for identity), a redirect to another host (127.0.0.2), a
#: redirect to the same host and scheme.
Hostile = Literal["endless_line", "gzip_bomb", "redirect_offhost", "redirect_samehost"]

_BASE_OFFSET = 5_600_000_000
_BASE_TIMESTAMP_MS = 1_793_534_400_000
# What HTTP libraries send unless told otherwise; Wikimedia answers those with 403.
_LIBRARY_AGENT = re.compile(
    r"^(python-httpx|python-requests|python-urllib|curl|wget|aiohttp|go-http-client|okhttp)/",
    re.IGNORECASE,
)
_EOLS: dict[str, bytes] = {"lf": b"\n", "crlf": b"\r\n", "cr": b"\r"}
_REASONS = {
    200: "OK",
    302: "Found",
    307: "Temporary Redirect",
    403: "Forbidden",
    429: "Too Many Requests",
    503: "Service Unavailable",
}
#: The endless line and the gzip bomb's inflated line: 50 MB without a line end.
HOSTILE_LINE_BYTES = 50 * 1024 * 1024


@functools.cache
def gzip_bomb() -> bytes:
    """`data: ` and 50 MB of one letter, gzipped: about 50 KB on the wire."""
    return gzip.compress(b"data: " + b"a" * HOSTILE_LINE_BYTES, compresslevel=9)


@dataclass(frozen=True)
class Faults:
    """Which misbehaviours the server commits, and how often; the default commits none."""

    #: End each stream connection after a random 1..2*close_every events (None: never).
    close_every: int | None = None
    #: Probability that such an end cuts the next event part-way instead of at a boundary.
    cut_mid_event: float = 0.0
    #: Write events in random pieces of 1..chunk_max bytes, each its own HTTP chunk.
    chunk_max: int | None = None
    #: The share of events written in tiny pieces (all of them is slow with large data).
    tiny_fraction: float = 1.0
    line_ending: LineEnding = "lf"
    #: Probability that an event's JSON is pretty-printed over several `data:` lines.
    split_data: float = 0.0
    #: Send an `event: error` after every this many events (None: never).
    error_every: int | None = None
    #: Request numbers (1-based, every request counts) answered with this status (429/503).
    refuse: Mapping[int, int] = field(default_factory=dict)
    #: Retry-After value sent with 429 and 503; a callable is asked at response time.
    retry_after: str | Callable[[], str] | None = "0"
    #: Request numbers answered 200 with an HTML page instead of an event stream.
    html: frozenset[int] = frozenset()
    #: Stream connection numbers (1-based) that stall after `stall_after` events.
    stall_connections: frozenset[int] = frozenset()
    stall_after: int = 3
    #: How long a stall lasts unless the client hangs up first; then the server closes.
    stall_seconds: float = 2.0
    #: A `retry:` field (milliseconds) sent at the start of each stream.
    retry_field: int | None = None
    #: Refuse missing and library-default User-Agents with 403, as Wikimedia does.
    forbid_library_agents: bool = True
    #: After the last event: "close" the stream, or "hold" it open and silent.
    when_done: Literal["close", "hold"] = "close"
    #: Pace delivery at this many events per second over all connections (None: as fast as
    #: the client reads).
    events_per_second: float | None = None
    #: Request numbers (1-based) answered in a hostile way (see `Hostile`).
    hostile: Mapping[int, Hostile] = field(default_factory=dict)

    @classmethod
    def everything(cls, *, close_every: int = 150, stall_seconds: float = 2.0) -> Faults:
        """Every fault at once, at rates that keep a few thousand events fast."""
        return cls(
            close_every=close_every,
            cut_mid_event=0.5,
            chunk_max=9,
            tiny_fraction=0.03,
            line_ending="mixed",
            split_data=0.1,
            error_every=97,
            refuse={2: 429, 4: 503, 7: 429},
            retry_after="0",
            html=frozenset({9}),
            stall_connections=frozenset({2}),
            stall_after=1,
            stall_seconds=stall_seconds,
            retry_field=1,
        )


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received, and what it knew when it answered."""

    number: int
    method: str
    path: str
    headers: Mapping[str, str]  # names in lower case
    at: float  # time.monotonic()
    status: int
    #: The id of the last event the server had delivered before this request.
    previous_id: str | None

    @property
    def user_agent(self) -> str | None:
        """The User-Agent header, if any."""
        return self.headers.get("user-agent")

    @property
    def last_event_id(self) -> str | None:
        """The Last-Event-ID header, if any."""
        return self.headers.get("last-event-id")


def canary_event(n: int) -> bytes:
    """A canary event like the ones Wikimedia mixes into the stream."""
    return json.dumps(
        {
            "$schema": "/mediawiki/recentchange/1.0.0",
            "meta": {"id": f"canary-{n}", "domain": "canary", "dt": "2026-11-01T12:00:00Z"},
            "type": "edit",
            "server_name": "canary",
            "user": "Canary",
            "bot": False,
        },
        separators=(",", ":"),
    ).encode()


def malformed_events() -> list[bytes]:
    """Events no decoder may count: not JSON, not an object, wrong types, invalid UTF-8."""
    return [
        b"this is not json",
        b"[1, 2, 3]",
        b'{"meta": {"id": "bad-bot"}, "server_name": "x.wikipedia.org", "bot": "yes"}',
        b'{"meta": {"id": 7}, "server_name": "x.wikipedia.org", "bot": false}',
        b'{"meta": {"id": "bad-utf8"}, "server_name": "x.wikipedia.org", "bot": false, '
        b'"user": "\xff\xfeX"}',
        b'{"meta": {"id": "truncated"}, "server_name": ',
    ]


def inject(lines: Sequence[bytes], extra: Iterable[bytes], seed: int = 0) -> list[bytes]:
    """Insert extra events at random (seeded) places among the lines."""
    rng = random.Random(seed)
    out = list(lines)
    for item in extra:
        out.insert(rng.randrange(len(out) + 1), item)
    return out


def _encode_id(entries: list[dict[str, object]]) -> bytes:
    return json.dumps(entries, separators=(",", ":")).encode()


class EventStreamsServer:
    """Serve `lines` (one JSON event each) as an EventStreams-like SSE endpoint."""

    def __init__(
        self,
        lines: Sequence[bytes],
        *,
        id_format: IdFormat = "offset",
        faults: Faults | None = None,
        seed: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.lines = [line.rstrip(b"\r\n") for line in lines]
        if any(b"\n" in line or b"\r" in line or not line for line in self.lines):
            raise ValueError("each event must be one non-empty line")
        self.id_format = id_format
        self.faults = faults or Faults()
        self.host = host
        self.port = port
        self._rng = random.Random(seed)
        self.offsets = [_BASE_OFFSET + i for i in range(len(self.lines))]
        self.timestamps = self._make_timestamps(len(self.lines))
        self.ids = [self._event_id(i) for i in range(len(self.lines))]
        #: Every request, in order of arrival.
        self.requests: list[RecordedRequest] = []
        #: The index of every event written completely, in order, replays included.
        self.delivered: list[int] = []
        #: How long each stall lasted (shorter than stall_seconds if the client hung up).
        self.stalls: list[float] = []
        #: Number of `event: error` events written completely.
        self.errors_sent = 0
        #: Set once the last event has been delivered.
        self.finished = threading.Event()
        self._connections = 0
        self._paced_from: float | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The stream URL to give the client."""
        return f"http://{self.host}:{self.port}{STREAM_PATH}"

    @property
    def last_delivered_id(self) -> str | None:
        """The id of the last event written completely."""
        return self.ids[self.delivered[-1]] if self.delivered else None

    def _make_timestamps(self, n: int) -> list[int]:
        # Runs of 1-4 events share a millisecond, so resuming by timestamp replays some.
        out: list[int] = []
        ts = _BASE_TIMESTAMP_MS
        while len(out) < n:
            out.extend([ts] * self._rng.randint(1, 4))
            ts += self._rng.randint(1, 40)
        return out[:n]

    def _event_id(self, i: int) -> str:
        if self.id_format == "offset":
            entries: list[dict[str, object]] = [
                {"topic": EQIAD_TOPIC, "partition": 0, "offset": self.offsets[i]}
            ]
        else:
            entries = [
                {"topic": EQIAD_TOPIC, "partition": 0, "timestamp": self.timestamps[i]},
                {"topic": CODFW_TOPIC, "partition": 0, "offset": -1},
            ]
        return _encode_id(entries).decode()

    def resume_index(self, last_event_id: str | None) -> int:
        """Where a request with this Last-Event-ID starts, as the real service decides."""
        if not last_event_id:
            return 0
        try:
            entries = json.loads(last_event_id)
        except ValueError:
            return 0
        if not isinstance(entries, list):
            return 0
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("topic") != EQIAD_TOPIC:
                continue
            if isinstance(entry.get("timestamp"), int):
                # The first event at or after that time, which replays ones already sent.
                return bisect.bisect_left(self.timestamps, entry["timestamp"])
            if isinstance(entry.get("offset"), int):
                return bisect.bisect_right(self.offsets, entry["offset"])
        return 0

    # -- running ------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the port (0: any free one), in the running event loop."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and end every open connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> EventStreamsServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __enter__(self) -> EventStreamsServer:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # hand a failed bind to the caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="eventstreams", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._loop is not None
        assert self._thread is not None
        asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- one connection -----------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away; that is its right
        except asyncio.CancelledError:
            # stop() cancels this task, which it owns; ending normally spares asyncio 3.11's
            # start_server callback from logging the cancellation as an error.
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _version = [*request_line.split(" "), "", ""][:3]
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        faults = self.faults
        number = len(self.requests) + 1
        agent = headers.get("user-agent", "")
        if faults.forbid_library_agents and (not agent.strip() or _LIBRARY_AGENT.match(agent)):
            status = 403
        elif number in faults.refuse:
            status = faults.refuse[number]
        else:
            status = 200
        self.requests.append(
            RecordedRequest(
                number, method, path, headers, time.monotonic(), status, self.last_delivered_id
            )
        )
        if status == 403:
            await self._simple(writer, 403, b"Please set a User-Agent header with contact info.")
        elif status != 200:
            retry_after = faults.retry_after
            if callable(retry_after):
                retry_after = retry_after()
            extra = {} if retry_after is None else {"Retry-After": retry_after}
            await self._simple(writer, status, b"Slow down.", extra)
        elif number in faults.html:
            await self._simple(writer, 200, b"<html>maintenance</html>", {}, "text/html")
        elif number in faults.hostile:
            await self._hostile(writer, faults.hostile[number], path)
        else:
            await self._stream(reader, writer, headers.get("last-event-id"))

    async def _hostile(self, writer: asyncio.StreamWriter, kind: Hostile, path: str) -> None:
        if kind == "redirect_offhost":
            target = f"http://127.0.0.2:{self.port}{path}"
            await self._simple(writer, 302, b"moved", {"Location": target})
        elif kind == "redirect_samehost":
            target = f"http://{self.host}:{self.port}{STREAM_PATH}?moved=1"
            await self._simple(writer, 307, b"moved", {"Location": target})
        elif kind == "gzip_bomb":
            body = gzip_bomb()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Content-Encoding: gzip\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                % len(body)
                + body
            )
            await writer.drain()
        else:  # an endless line, until the client hangs up or 50 MB are out
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            await self._send(writer, b"data: ")
            piece = b"a" * 65536
            for _ in range(HOSTILE_LINE_BYTES // len(piece)):
                await self._send(writer, piece)

    async def _simple(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        extra: Mapping[str, str] | None = None,
        content_type: str = "text/plain",
    ) -> None:
        lines = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in (extra or {}).items()),
        ]
        writer.write("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
        await writer.drain()

    async def _stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, last_id: str | None
    ) -> None:
        faults, rng = self.faults, self._rng
        self._connections += 1
        connection = self._connections
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        await self._send(writer, b":ok" + self._eol() * 2)
        if faults.retry_field is not None:
            await self._send(writer, b"retry: %d" % faults.retry_field + self._eol() * 2)
        budget = rng.randint(1, 2 * faults.close_every) if faults.close_every else None
        sent = 0
        i = self.resume_index(last_id)
        while i < len(self.lines):
            if connection in faults.stall_connections and sent == faults.stall_after:
                await self._stall(reader)
                return
            if budget is not None and sent >= budget:
                if rng.random() < faults.cut_mid_event:
                    encoded = self._encode(i)
                    # Stop at least 3 bytes short: "\r\n\r" already ends the event (CR alone
                    # ends a line), and the client must not have this event complete.
                    await self._send(writer, encoded[: rng.randrange(1, len(encoded) - 2)])
                    if rng.random() < 0.5:
                        return  # no chunked terminator: the client sees a broken body
                await self._send_end(writer)
                return
            tiny = rng.random() < faults.tiny_fraction
            await self._send(writer, self._encode(i), tiny=tiny, before_last=self._deliver(i))
            sent += 1
            i += 1
            if faults.events_per_second:
                await self._pace(faults.events_per_second)
            if faults.error_every and sent % faults.error_every == 0:
                eol = self._eol()
                await self._send(
                    writer,
                    b"event: error"
                    + eol
                    + b'data: {"message": "upstream hiccup", "status": 500}'
                    + eol * 2,
                )
                self.errors_sent += 1
        if faults.when_done == "hold":
            await reader.read(1)  # silent until the client hangs up (or the server stops)
        else:
            await self._send_end(writer)

    async def _pace(self, rate: float) -> None:
        """Sleep until the events delivered so far are due at `rate` events per second."""
        now = time.monotonic()
        if self._paced_from is None:
            self._paced_from = now
        delay = self._paced_from + len(self.delivered) / rate - now
        if delay > 0.002:
            await asyncio.sleep(delay)

    async def _stall(self, reader: asyncio.StreamReader) -> None:
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader.read(1), self.faults.stall_seconds)
        self.stalls.append(time.monotonic() - started)

    def _eol(self) -> bytes:
        ending = self.faults.line_ending
        if ending == "mixed":
            ending = self._rng.choice(("lf", "crlf", "cr"))
        return _EOLS[ending]

    def _encode(self, i: int) -> bytes:
        line = self.lines[i]
        data_lines = [line]
        if self.faults.split_data and self._rng.random() < self.faults.split_data:
            data_lines = self._split(line)
        eol = self._eol()
        # Both "data: x" and "data:x" are valid; the field order within an event is free.
        fields = [b"data:" + self._rng.choice((b" ", b"")) + d for d in data_lines]
        id_field = b"id: " + self.ids[i].encode()
        fields.insert(self._rng.choice((0, len(fields))), id_field)
        return eol.join(fields) + eol * 2

    @staticmethod
    def _split(line: bytes) -> list[bytes]:
        """The same JSON value spread over several lines, if the line is JSON at all."""
        try:
            value = json.loads(line)
        except ValueError:
            return [line]
        return json.dumps(value, indent=1, ensure_ascii=False).encode().split(b"\n")

    def _deliver(self, i: int) -> Callable[[], None]:
        def record() -> None:
            self.delivered.append(i)
            if i == len(self.lines) - 1:
                self.finished.set()

        return record

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        data: bytes,
        *,
        tiny: bool = False,
        before_last: Callable[[], None] | None = None,
    ) -> None:
        """Write data as HTTP chunks; `before_last` runs just before the final piece is written.

        Recording a delivery before the bytes that complete the event go out (with no await in
        between) means a client can never see an event the log does not have yet.
        """
        pieces = [data]
        if tiny and self.faults.chunk_max:
            pieces = []
            pos = 0
            while pos < len(data):
                step = self._rng.randint(1, self.faults.chunk_max)
                pieces.append(data[pos : pos + step])
                pos += step
        for n, piece in enumerate(pieces, 1):
            if n == len(pieces) and before_last is not None:
                before_last()
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            if tiny:
                await asyncio.sleep(0)  # let the client read this piece on its own

    @staticmethod
    async def _send_end(writer: asyncio.StreamWriter) -> None:
        writer.write(b"0\r\n\r\n")
        await writer.drain()
