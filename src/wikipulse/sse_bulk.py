"""A bulk Server-Sent Events parser for the live source: one call and one result per chunk.

It follows the same WHATWG rules as `sse.SSEParser` (LF, CR and CRLF line endings, also when a
CRLF is split across chunks; a leading BOM; comments; multi-line `data`; `id` without NUL;
`retry`; dispatch only at a blank line), and `tests/test_sse_bulk.py` checks that both give the
same events on any stream cut in any chunks. What differs is the shape of its answer: a chunk's
`message` events come back as two lists (the data and the stream position of each) instead of
one object per event, with the fields read in one loop with no call per line. The live source
hands those lists to the pipeline, which folds them in one call.

An unfinished line is kept as a list of pieces and joined once its end arrives, so an event
cut into many chunks costs linear time; an event (its unfinished line and data so far) larger
than `max_event_bytes` raises `EventTooLarge`.
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "BulkSSEParser", "Dispatched", "EventTooLarge"]

_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"
# How EventStreams starts every event; the id's value follows.
_USUAL = b"event: message\nid: "
_ID_AT = len(_USUAL)
#: The end of such an event and the start of the next: one search checks both.
_NEXT = b"\n\n" + _USUAL
#: Wikimedia's RecentChange events are a few KiB; a MiB of one event is not a RecentChange.
DEFAULT_MAX_EVENT_BYTES = 1 << 20


class EventTooLarge(ValueError):
    """Raised when one event grows beyond the parser's limit before it ends."""


class Dispatched:
    """The events one chunk completed: message data and positions, and the other events."""

    __slots__ = ("data", "last_id", "others", "positions")

    def __init__(self) -> None:
        #: The data of each `message` event, in stream order.
        self.data: list[bytes] = []
        #: The id at dispatch of each of those events (None if none was set, or empty).
        self.positions: list[str | None] = []
        #: Events of other types, as (type, data).
        self.others: list[tuple[str, bytes]] = []
        #: The id at dispatch of the last event of any type that had one, else None.
        self.last_id: str | None = None


class BulkSSEParser:
    """Turn chunks of an event stream into `Dispatched` lists; one parser per connection."""

    __slots__ = (
        "_data",
        "_data_bytes",
        "_first",
        "_id_buffer",
        "_pieces",
        "_pieces_bytes",
        "_skip_lf",
        "_type",
        "last_id",
        "max_event_bytes",
        "retry",
    )

    def __init__(
        self, last_id: str | None = None, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    ) -> None:
        self._pieces: list[bytes] = []  # the unfinished line, as received
        self._pieces_bytes = 0
        self._data: list[bytes] = []
        self._data_bytes = 0
        self._type = ""
        self._first = True
        self._skip_lf = False
        self._id_buffer = last_id
        #: The id to send as Last-Event-ID: the id buffer at the last blank line.
        self.last_id = last_id
        #: The reconnection delay the server asked for, in milliseconds.
        self.retry: int | None = None
        self.max_event_bytes = max_event_bytes

    def feed(self, chunk: bytes) -> Dispatched:
        """Consume a chunk of bytes and return the events it completes."""
        out = Dispatched()
        if not chunk:
            return out
        if self._pieces:
            self._pieces.append(chunk)
            self._pieces_bytes += len(chunk)
            if b"\n" not in chunk and b"\r" not in chunk:
                self._check_size()
                return out
            buf = b"".join(self._pieces)
            self._pieces = []
            self._pieces_bytes = 0
        else:
            buf = chunk
        if self._first:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                self._keep(buf)  # cannot yet tell whether this is a byte-order mark
                return out
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
            tail = lines.pop()
            self._lines(lines, out)
        else:
            tail = self._blocks(buf, out)
        if tail:
            self._keep(tail)
        return out

    def _keep(self, unfinished: bytes) -> None:
        self._pieces = [unfinished]
        self._pieces_bytes = len(unfinished)
        self._check_size()

    def _check_size(self) -> None:
        if self._pieces_bytes + self._data_bytes > self.max_event_bytes:
            raise EventTooLarge(f"an event or line longer than {self.max_event_bytes} bytes")

    def _blocks(self, buf: bytes, out: Dispatched) -> bytes:
        """Interpret LF-only bytes event by event; return the unfinished last line.

        Runs of blocks that are exactly `event: message`, `id: ...`, `data: ...` and a blank
        line (how EventStreams writes every event) are read by `_usual`; any other block goes
        through the line-by-line rules.
        """
        end = buf.rfind(b"\n\n")
        if end < 0:
            lines = buf.split(b"\n")
            tail = lines.pop()
            self._lines(lines, out)
            return tail
        find, startswith = buf.find, buf.startswith
        # A NUL anywhere might be in an id, which the rules then ignore: such bytes go the
        # line-by-line way, so the fast path never has to look for it event by event.
        usual = find(b"\0") < 0
        pos = 0
        while pos <= end:
            if usual and startswith(_USUAL, pos) and not self._data and not self._type:
                pos = self._usual(buf, pos, end, out)
                if pos > end:
                    break
            stop = find(b"\n\n", pos)  # the end of this block; `end` is the last one
            lines = buf[pos:stop].split(b"\n")
            lines.append(b"")  # the blank line that ended the block
            self._lines(lines, out)
            pos = stop + 2
        lines = buf[end + 2 :].split(b"\n")
        tail = lines.pop()
        self._lines(lines, out)
        return tail

    def _usual(self, buf: bytes, pos: int, end: int, out: Dispatched) -> int:
        """Read EventStreams-shaped blocks from `pos`; return where the first other one starts.

        `pos` starts such a block's header and `end` is the buffer's last blank line, so
        every search below finds a line end at or before it. A block is searched for LF
        only (memchr; a two-byte search is ten times slower), its data line must be
        followed by the blank line, and data larger than the limit is left to `_lines`,
        which refuses it. The ids are decoded in one call at the end.
        """
        find, startswith = buf.find, buf.startswith
        messages = out.data
        ids: list[bytes] = []
        limit = self.max_event_bytes
        at = pos + _ID_AT
        while True:
            eol = find(b"\n", at)
            if not startswith(b"\ndata: ", eol):
                break
            stop = find(b"\n", eol + 7)
            if stop - eol - 7 > limit:
                break
            if stop < end and startswith(_NEXT, stop):
                # The blank line, then another such header: the next block ends by `end`.
                messages.append(buf[eol + 7 : stop])
                ids.append(buf[at:eol])
                pos = stop + 2
                at = pos + _ID_AT
                continue
            if buf[stop + 1] == 10:  # the blank line; what follows is not such a header
                messages.append(buf[eol + 7 : stop])
                ids.append(buf[at:eol])
                pos = stop + 2
            break
        if ids:
            # One decode for all: no id holds a line end, and an invalid sequence before an LF
            # is replaced exactly as at the end of its own id.
            text = b"\n".join(ids).decode("utf-8", "replace").split("\n")
            self._id_buffer = self.last_id = out.last_id = text[-1]
            if "" in text:
                out.positions += [ident or None for ident in text]
            else:
                out.positions += text
        return pos

    def _lines(self, lines: list[bytes], out: Dispatched) -> None:
        """Interpret complete lines: the fields, and a dispatch at each blank line."""
        data, data_bytes, kind, id_buffer = (
            self._data,
            self._data_bytes,
            self._type,
            self._id_buffer,
        )
        messages, positions = out.data, out.positions
        for line in lines:
            if not line:
                self.last_id = id_buffer
                if data:
                    payload = data[0] if len(data) == 1 else b"\n".join(data)
                    if not kind or kind == "message":
                        messages.append(payload)
                        positions.append(id_buffer or None)
                    else:
                        out.others.append((kind, payload))
                    if id_buffer is not None:
                        out.last_id = id_buffer
                    data = []
                    data_bytes = 0
                kind = ""
            elif line[:5] == b"data:":
                value = line[6:] if line[5:6] == b" " else line[5:]
                data.append(value)
                data_bytes += len(value)
                if data_bytes > self.max_event_bytes:
                    raise EventTooLarge(
                        f"an event or line longer than {self.max_event_bytes} bytes"
                    )
            elif line[0] == 58:  # b":" starts a comment
                continue
            else:
                name, sep, value = line.partition(b":")
                if sep and value[:1] == b" ":
                    value = value[1:]
                if name == b"id":
                    if b"\0" not in value:
                        id_buffer = value.decode("utf-8", "replace")
                elif name == b"event":
                    kind = value.decode("utf-8", "replace")
                elif name == b"data":  # `data` with no colon: an empty data line
                    data.append(value)
                elif name == b"retry" and value.isdigit():
                    self.retry = int(value)
        self._data, self._data_bytes, self._type, self._id_buffer = (
            data,
            data_bytes,
            kind,
            id_buffer,
        )
