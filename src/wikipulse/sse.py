"""An incremental Server-Sent Events parser: bytes in, events out, no I/O.

Follows the WHATWG "event stream interpretation" rules: LF, CR and CRLF line endings (also
when a CRLF is split across two chunks), comments, multi-line ``data`` joined with "\\n",
``id`` and ``retry`` fields, and dispatch only at the blank line that ends an event, so a
connection cut in the middle of an event yields nothing of it.

The cost is linear in the bytes fed: the unfinished line waits in a ``bytearray`` and each
chunk is scanned for line ends once, from where the previous scan stopped. With
``max_event_bytes`` a line or an event's data longer than that raises `EventTooLarge`, so a
server that never ends a line cannot make the parser hold more than that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["EventTooLarge", "SSEEvent", "SSEParser"]

_LINE_END = re.compile(rb"[\r\n]")
_BOM = b"\xef\xbb\xbf"
_CR, _LF, _COLON = 13, 10, 58


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: its type, its data (raw bytes) and the last event id at dispatch."""

    type: str
    data: bytes
    id: str | None


class EventTooLarge(Exception):
    """A line or an event exceeded the parser's limit; `events` were completed before it."""

    def __init__(self, limit: int, events: list[SSEEvent]) -> None:
        super().__init__(f"an event or line longer than {limit} bytes")
        self.limit = limit
        self.events = events


class SSEParser:
    """Turn chunks of an event stream into events; one parser per connection."""

    __slots__ = (
        "_buf",
        "_data",
        "_data_size",
        "_first",
        "_id_buffer",
        "_limit",
        "_scanned",
        "_skip_lf",
        "_type",
        "last_id",
        "retry",
    )

    def __init__(self, last_id: str | None = None, max_event_bytes: int | None = None) -> None:
        self._buf = bytearray()
        #: How much of `_buf` is known to hold no line end.
        self._scanned = 0
        self._data: list[bytes] = []
        self._data_size = 0
        self._type = ""
        self._first = True
        self._skip_lf = False
        self._limit = max_event_bytes
        # The spec's "last event ID buffer": set by `id:` lines, but it becomes the id to
        # resume from only when the event ends, so an event cut mid-way does not move it.
        self._id_buffer = last_id
        #: The id to send as Last-Event-ID on reconnection: the buffer at the last blank line.
        self.last_id = last_id
        #: The reconnection delay the server asked for, in milliseconds.
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume a chunk of bytes and return the events it completes.

        Raises EventTooLarge (carrying the events completed before it) when a line or an
        event's data exceeds `max_event_bytes`; the parser is then of no further use.
        """
        buf = self._buf
        buf += chunk
        pos = 0
        if self._first and buf:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                return []  # cannot yet tell whether this is a byte-order mark
            self._first = False
            if buf.startswith(_BOM):
                pos = len(_BOM)
                self._scanned = pos
        if self._skip_lf and len(buf) > pos:
            # The previous chunk ended in CR; an LF starting this one belongs to that CRLF.
            if buf[pos] == _LF:
                pos += 1
                self._scanned = max(self._scanned, pos)
            self._skip_lf = False
        out: list[SSEEvent] = []
        limit = self._limit
        search = _LINE_END.search
        end = len(buf)
        while True:
            match = search(buf, self._scanned)
            if match is None:
                break
            eol = match.start()
            line = bytes(buf[pos:eol])
            pos = eol + 1
            if buf[eol] == _CR:
                if pos < end:
                    if buf[pos] == _LF:
                        pos += 1
                else:
                    self._skip_lf = True
            self._scanned = pos
            if limit is not None and len(line) > limit:
                self._fail(out)
            self._line(line, out)
        del buf[:pos]
        self._scanned = len(buf)
        if limit is not None and len(buf) > limit:
            self._fail(out)
        return out

    def _fail(self, out: list[SSEEvent]) -> None:
        assert self._limit is not None
        self._buf.clear()
        self._data = []
        raise EventTooLarge(self._limit, out)

    def _line(self, line: bytes, out: list[SSEEvent]) -> None:
        if not line:
            self.last_id = self._id_buffer
            if self._data:
                data = b"\n".join(self._data)
                out.append(SSEEvent(self._type or "message", data, self.last_id))
            self._data = []
            self._data_size = 0
            self._type = ""
        elif line[0] != _COLON:  # a colon starts a comment
            self._field(line, out)

    def _field(self, line: bytes, out: list[SSEEvent]) -> None:
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._data_size += len(value) + 1
            if self._limit is not None and self._data_size > self._limit:
                self._fail(out)
        elif name == b"event":
            self._type = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self._id_buffer = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            self.retry = int(value)
