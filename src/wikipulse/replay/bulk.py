"""A worker's hot path: read a range's lines from a memory map and decode them in bulk.

`Aggregator.fold` is the reference: it checks, decodes and folds one line at a time, and
exactly that is done here for any block that holds a line it would refuse (garbage, a blank
line, a wrong type, bad UTF-8). A block whose every line is a valid event, the usual case,
goes through C-level loops instead: the UTF-8 check of every line is one call (utf8.py),
msgspec's decoding of every line one `map`, and only the fold of the decoded events runs as
Python code. The outcome is the same as `Aggregator.fold(lines, dedup=False)`, event for
event (tests/test_replay_bulk.py compares both on hostile inputs).

Why not one msgspec call per block (the lines joined into a JSON array, or
`Decoder.decode_lines`)? msgspec checks the UTF-8 only of the strings it decodes: bad bytes
in a skipped field or an unknown key pass (tried on msgspec 0.23), so every line must still
be checked on its own, which needs the lines split anyway (decoding a whole block at once is
3x slower: its string widens to 4 bytes a character). Joining them
again, and proving that each line held exactly one value (a value may span lines, or two
share one, and the counts can still agree), cost more than the per-call overhead it saves:
2.1-3.1 µs per event against 2.1 one line at a time (split, check, decode), measured on the
loaded 2-core VM.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from wikipulse.events import CANARY_DOMAIN, DECODE_ERRORS, RecentChange, decode_json_only
from wikipulse.stats import Aggregator
from wikipulse.utf8 import all_valid_utf8, checked_lines
from wikipulse.window_delta import window_rows

__all__ = [
    "BLOCK_LINES",
    "checked_blocks",
    "fold_block",
    "fold_decoded",
    "line_span",
]

#: Lines decoded per bulk call: few enough that a block's lines and events stay in the CPU's
#: caches (measured, µs per event: 64 lines 2.53, 300 lines 2.73, 256 KiB reads split 2.73).
BLOCK_LINES = 64


#: Every line is read, so the range's pages are mapped in one call (Linux's MAP_POPULATE), not
#: faulted in a page at a time: 360-400 ns a line read instead of 490-550 (a file on tmpfs).
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


def line_span(f: BinaryIO, start: int, end: int) -> tuple[int, int]:
    """The bytes of the lines whose first byte lies in [start, end): (first, stop)."""
    end = min(end, os.fstat(f.fileno()).st_size)
    if start > 0:
        f.seek(start - 1)
        f.readline()  # the rest of a line that began before `start` belongs to the range before
        start = f.tell()
    if start >= end:
        return start, start
    f.seek(end - 1)
    f.readline()  # the last line began inside the range; it ends wherever its newline is
    return start, f.tell()


def checked_blocks(
    path: Path, start: int, end: int, lines: int = BLOCK_LINES
) -> Iterator[tuple[list[bytes], bool]]:
    """The lines whose first byte lies in [start, end), `lines` at a time, newlines kept,
    each block with whether all its lines are well-formed UTF-8.

    The lines are cut from a memory map of just those bytes, so the map's end bounds the
    reading and each line is copied once, straight from the page cache (a `read` into a
    buffer and a split copy every byte twice, the larger cost on a slow-memory machine), and
    checked as it is copied (`utf8.checked_lines`).
    """
    with path.open("rb") as f:
        first, stop = line_span(f, start, end)
        if first >= stop:
            return
        base = first - first % mmap.ALLOCATIONGRANULARITY
        with mmap.mmap(
            f.fileno(), stop - base, flags=_MAP_FLAGS, prot=mmap.PROT_READ, offset=base
        ) as mapped:
            pos, stop = first - base, stop - base
            while pos < stop:
                block, pos, valid = checked_lines(mapped, pos, stop, lines)
                yield block, valid


def fold_block(
    agg: Aggregator,
    lines: list[bytes],
    valid: bool | None = None,
    decoded: list[RecentChange] | None = None,
) -> None:
    """Fold NDJSON lines as `agg.fold(lines, dedup=False)` does, in bulk when all are valid.

    `valid` says whether every line is well-formed UTF-8, when the caller checked already.
    With a `decoded` list, a bulk block's events are added to it for their window rows to be
    made later (see `fold_decoded`).
    """
    if valid is None:
        valid = all_valid_utf8(lines)
    # Bad UTF-8 anywhere makes an event malformed (see events.py), whatever msgspec reads.
    if valid:
        try:
            events = list(map(decode_json_only, lines))
        except DECODE_ERRORS:
            pass
        else:
            fold_decoded(agg, events, decoded)
            return
    # Some line is refused: fold the block line by line, counting exactly what is.
    agg.fold(lines, dedup=False)


def fold_decoded(
    agg: Aggregator, events: list[RecentChange], decoded: list[RecentChange] | None = None
) -> None:
    """Fold valid decoded events as `Aggregator.fold(..., dedup=False)` folds their lines.

    Canaries are counted and dropped; every other event is counted, repeats included (a
    worker's repeats are found afterwards from its ids, see parallel.py). Their time-window
    rows are recorded (`window_rows`), or, given a `decoded` list, the events are added to
    it as they are, canaries too, for the C extension to read them in place and sum them per
    minute (`wikipulse._merge.decoded_minutes`, which leaves out what `window_rows` does).
    """
    batch = agg.batch
    batch.touched = True
    canaries, bots = _fold_counts(agg, events)
    if agg.keep_windows:
        if decoded is None:
            batch.windows.raw += window_rows(events)
        else:
            decoded += events
    counted = len(events) - canaries
    batch.total += counted
    batch.bots += bots
    c = agg.counters
    c.counted += counted
    c.canaries += canaries
    # Only the last counted event's time matters (the lag), so it is looked up once.
    for event in reversed(events):
        if event.meta.domain != CANARY_DOMAIN:
            if event.meta.dt is not None:
                c.last_dt = event.meta.dt
            break


def _fold_counts(agg: Aggregator, events: list[RecentChange]) -> tuple[int, int]:
    batch = agg.batch
    servers = batch.by_server_name
    count = servers.get
    add_user = batch.users.add
    add_id = batch.event_ids.append
    bots = canaries = 0
    for event in events:
        meta = event.meta
        if meta.domain == CANARY_DOMAIN:
            canaries += 1
            continue
        bots += event.bot
        name = event.server_name
        servers[name] = count(name, 0) + 1
        user = event.user
        if user:
            add_user(user)
        add_id(meta.id)
    return canaries, bots
