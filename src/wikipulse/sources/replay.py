"""Replay a recorded stream file (NDJSON or a raw SSE capture) through the pipeline."""

from __future__ import annotations

import logging
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from wikipulse.sources.parallel import RangeFolder, replay_parallel
from wikipulse.sse import SSEParser

if TYPE_CHECKING:
    # Only for annotations: `replay` imports this module before it forks its workers.
    from wikipulse.ingest import Pipeline

__all__ = ["Format", "detect_format", "read_format", "replay_file"]

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


async def replay_file(
    path: Path,
    pipeline: Pipeline,
    progress: Callable[[int], None] | None = None,
    folder: RangeFolder | None = None,
) -> Format:
    """Feed every event of the file to the pipeline, commit, and return the format found.

    With a `RangeFolder` (made for this file), an NDJSON file is decoded by its workers.
    """
    fmt = read_format(path)
    if fmt == "ndjson" and folder is not None:
        await replay_parallel(folder, pipeline, progress)
        return fmt
    with path.open("rb") as f:
        if fmt == "ndjson":
            while lines := list(islice(f, _CHUNK_LINES)):
                await pipeline.fold_lines(lines)
                if progress is not None:
                    progress(f.tell())
        else:
            await _replay_sse(f.read, pipeline, progress)
    await pipeline.flush()
    return fmt


async def _replay_sse(
    read: Callable[[int], bytes], pipeline: Pipeline, progress: Callable[[int], None] | None
) -> None:
    parser = SSEParser()
    done = 0
    while block := read(_BLOCK):
        done += len(block)
        for event in parser.feed(block):
            if event.type == "message":
                await pipeline.add(event.data, event.id)
            else:
                log.warning("skipped an %r event: %.200r", event.type, event.data)
        if progress is not None:
            progress(done)
    # A capture cut in the middle of an event ends that event unfinished: count none of it.
