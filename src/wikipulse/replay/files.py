"""Read a recorded stream file (NDJSON or a raw SSE capture) as a source for the pipeline."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from itertools import islice
from pathlib import Path
from typing import BinaryIO, Literal

from wikipulse.feeds import Feed, Lines
from wikipulse.replay.parallel import RangeFolder, folded_ranges

__all__ = ["PARALLEL_MIN_BYTES", "Format", "detect_format", "file_feed", "read_format"]

log = logging.getLogger(__name__)

Format = Literal["ndjson", "sse"]
_CHUNK_LINES = 2000
_BLOCK = 1 << 20
#: Below this size a pool of workers costs more than it saves.
PARALLEL_MIN_BYTES = 16 << 20


def detect_format(head: bytes) -> Format:
    """Tell NDJSON from an SSE capture by the first non-blank bytes of the file."""
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    # An NDJSON file starts with a JSON value; an SSE capture with a field or a comment.
    if text[:1] == b":" or text.split(b":", 1)[0] in (b"data", b"id", b"event", b"retry"):
        return "sse"
    return "ndjson"


def read_format(path: Path) -> Format:
    """Detect the format of a file from its first 4 KiB."""
    with path.open("rb") as f:
        return detect_format(f.read(4096))


async def file_feed(
    path: Path,
    progress: Callable[[int], None] | None = None,
    folder: RangeFolder | None = None,
) -> AsyncIterator[Feed]:
    """Every event of the file, as blocks of lines, folded ranges or single SSE events.

    With a `RangeFolder` (made for this file), an NDJSON file is decoded by its workers.
    `progress` is told how many bytes have been read, after each item.
    """
    fmt = read_format(path)
    if fmt == "ndjson" and folder is not None:
        async for folded in folded_ranges(folder, progress):
            yield folded
        return
    with path.open("rb") as f:
        if fmt == "ndjson":
            while lines := list(islice(f, _CHUNK_LINES)):
                yield Lines(lines)
                if progress is not None:
                    progress(f.tell())
        else:
            async for event in _sse_events(f, progress):
                yield event


async def _sse_events(
    f: BinaryIO, progress: Callable[[int], None] | None
) -> AsyncIterator[tuple[bytes, str | None]]:
    from wikipulse.sse import SSEParser  # not needed before the workers fork

    parser = SSEParser()
    done = 0
    while block := f.read(_BLOCK):
        done += len(block)
        for event in parser.feed(block):
            if event.type == "message":
                yield event.data, event.id
            else:
                log.warning("skipped an %r event: %.200r", event.type, event.data)
        if progress is not None:
            progress(done)
    # A capture cut in the middle of an event ends that event unfinished: count none of it.
