"""An incremental Server-Sent Events parser: bytes in, events out, no I/O.

Follows the WHATWG "event stream interpretation" rules: LF, CR and CRLF line endings (also
when a CRLF is split across two chunks), comments, multi-line ``data`` joined with "\\n",
``id`` and ``retry`` fields, and dispatch only at the blank line that ends an event, so a
connection cut in the middle of an event yields nothing of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["SSEEvent", "SSEParser"]

_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: its type, its data (raw bytes) and the last event id at dispatch."""

    type: str
    data: bytes
    id: str | None


class SSEParser:
    """Turn chunks of an event stream into events; one parser per connection."""

    __slots__ = ("_buf", "_data", "_first", "_id_buffer", "_skip_lf", "_type", "last_id", "retry")

    def __init__(self, last_id: str | None = None) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._type = ""
        self._first = True
        self._skip_lf = False
        # The spec's "last event ID buffer": set by `id:` lines, but it becomes the id to
        # resume from only when the event ends, so an event cut mid-way does not move it.
        self._id_buffer = last_id
        #: The id to send as Last-Event-ID on reconnection: the buffer at the last blank line.
        self.last_id = last_id
        #: The reconnection delay the server asked for, in milliseconds.
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume a chunk of bytes and return the events it completes."""
        buf = self._buf + chunk if self._buf else chunk
        if self._first and buf:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                self._buf = buf  # cannot yet tell whether this is a byte-order mark
                return []
            self._first = False
            if buf.startswith(_BOM):
                buf = buf[len(_BOM) :]
        if self._skip_lf and buf:
            # The previous chunk ended in CR; an LF starting this one belongs to that CRLF.
            if buf[:1] == b"\n":
                buf = buf[1:]
            self._skip_lf = False
        if b"\r" in buf:
            lines = _EOL.split(buf)
            self._skip_lf = buf.endswith(b"\r")
        else:
            lines = buf.split(b"\n")
        self._buf = lines.pop()
        out: list[SSEEvent] = []
        for line in lines:
            if not line:
                self.last_id = self._id_buffer
                if self._data:
                    data = b"\n".join(self._data)
                    out.append(SSEEvent(self._type or "message", data, self.last_id))
                self._data = []
                self._type = ""
            elif line[0] != 58:  # b":" starts a comment
                self._field(line)
        return out

    def _field(self, line: bytes) -> None:
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._type = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self._id_buffer = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            self.retry = int(value)
