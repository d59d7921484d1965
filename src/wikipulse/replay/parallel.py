"""Replay NDJSON on several cores: workers decode byte ranges, the pipeline merges in order.

Decoding JSON is most of the cost of a replay, and it does not depend on what came before,
so worker processes each decode one byte range of the file and fold it into partial deltas
as if it held no duplicates. The parent yields the partials in file order to the pipeline,
whose aggregator checks each range's event ids against the exact deduplication window; only
when a range repeats an id (rare: a replay by timestamp) does it fold that range again, one
event at a time. The result is therefore identical to the sequential replay.

Per event a worker spends its time in msgspec (about half), the UTF-8 check of non-ASCII
lines, the fold and reading (see bulk.py); the parent in the dedup window's set operations
and the union of user names. So the workers read their lines from a memory map (one copy,
not two), send each user name once per worker rather than once per range, and are kept
busy while the parent loads its settings.

Nothing here imports asyncio or the pipeline: `replay` forks the workers before either is
loaded, so that no thread or event loop state is copied into them.
"""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

from wikipulse.dedup import RecentIds
from wikipulse.events import RecentChange
from wikipulse.feeds import Folded
from wikipulse.replay.bulk import checked_blocks, fold_block
from wikipulse.replay.pool import ForkPool, reuse_freed_memory
from wikipulse.stats import Aggregator, Partial
from wikipulse.stores.window_rank import blobs
from wikipulse.window_delta import WindowDelta, window_rows
from wikipulse.window_minutes import c_minutes, events_accs, recorded_minutes

__all__ = [
    "RangeFolder",
    "RangeResult",
    "default_workers",
    "fold_range",
    "folded_ranges",
    "iter_range",
    "read_range",
    "split_ranges",
]

# Large ranges: user names repeat heavily, so each range sends the parent fewer of them, and
# per-range costs (results, merges) are paid less often; measured 4 MiB: 1.44 s, 12 MiB: 1.18 s.
RANGE_BYTES = 12 << 20
_BLOCK = 64 << 10
_SEP = "\0"


@dataclass(frozen=True, slots=True)
class RangeResult:
    """The partial deltas of one byte range, folded as if it held no duplicates.

    Event ids and user names travel as one string each, joined by NUL: unpickling one long
    string and splitting it costs a fraction of unpickling a list of short ones, and the
    parent is the part that cannot be parallel.
    """

    start: int
    end: int
    total: int
    bots: int
    by_server_name: dict[str, int]
    ids: str | list[str]
    users: str | list[str]
    canaries: int
    invalid: int
    last_error: str
    last_dt: str | None
    windows: WindowDelta


def _pack(items: list[str]) -> str | list[str]:
    if items == [""]:
        return items  # joined, it would read back as no item at all
    packed = _SEP.join(items)
    # Names from a malformed event could hold NUL; then they travel as a list.
    return packed if packed.count(_SEP) == max(len(items) - 1, 0) else items


def _unpack(packed: str | list[str]) -> list[str]:
    if isinstance(packed, list):
        return packed
    return packed.split(_SEP) if packed else []


def split_ranges(size: int, range_bytes: int = RANGE_BYTES, tail: int = 0) -> list[tuple[int, int]]:
    """Cut [0, size) into consecutive ranges of about `range_bytes`, the last `tail` bytes finer.

    Finer ranges at the end let the workers finish together: the last one to start a range
    would otherwise leave the other core idle for up to a whole range.
    """
    fine = max(range_bytes // 4, 1)
    cut = max(size - tail, 0)
    coarse = [(start, min(start + range_bytes, cut)) for start in range(0, cut, range_bytes)]
    finish = coarse[-1][1] if coarse else 0
    return coarse + [(start, min(start + fine, size)) for start in range(finish, size, fine)]


def iter_range(f: BinaryIO, start: int, end: int) -> Iterator[list[bytes]]:
    """The lines whose first byte lies in [start, end), a block of lines at a time.

    Blocks are small enough for the allocator to reuse the same memory each time: one big
    read per range would be mapped and faulted in anew for every range, which costs more
    than the decoding on some machines.
    """
    f.seek(max(start - 1, 0))
    if start > 0:
        f.readline()  # the rest of a line that began before `start` belongs to the range before
    pos = f.tell()
    tail = b""
    while pos < end:
        block = f.read(min(_BLOCK, end - pos))
        if not block:
            break
        pos += len(block)
        lines = (tail + block).split(b"\n")
        tail = lines.pop()
        yield lines
    if tail:
        # The last line began inside the range; it ends wherever its newline is.
        yield [tail + f.readline()]


def read_range(path: Path, start: int, end: int) -> list[bytes]:
    """The lines whose first byte lies in [start, end), as a list."""
    with path.open("rb") as f:
        return [line for lines in iter_range(f, start, end) for line in lines]


#: The user names this worker process has already sent for one folder (see `fold_range`).
_sent_users: tuple[str, set[str]] = ("", set())


def _new_users(folder: str, users: set[str]) -> list[str]:
    global _sent_users  # one worker process's memory, across its ranges
    if _sent_users[0] != folder:
        _sent_users = (folder, set())  # a fork of a process that worked for another folder
    sent = _sent_users[1]
    fresh = users - sent
    sent |= fresh
    return list(fresh)


def fold_range(
    path: Path,
    start: int,
    end: int,
    windows: bool = True,
    folder: str = "",
    *,
    summed: bool = False,
) -> RangeResult:
    """Decode and fold one range in a worker process, as if it held no repeated event.

    Repeats are found by the parent, which checks and adds the range's ids to the dedup
    window in bulk (`RecentIds.add_new`); a range with any, within itself or with the window,
    is folded again by the parent against the real window, so folding it wrongly here costs
    nothing.

    With a `folder` token, user names this process already sent for the same token are left
    out (a name repeats in most ranges; the parent then unpickles and merges each name about
    once per worker instead of once per range). That is exact: a worker takes its ranges in
    file order and the parent merges them in file order, so the range that first sent a name
    was merged before, or folded again from its lines, which adds all of its users.

    With `summed`, the windows travel summed per minute, as the blobs of stored parts (for
    the SQL stores' writer, which would sum and encode them so in the parent, on one core:
    `window_minutes.minute_parts`), else as the events themselves, packed.
    """
    agg = Aggregator(RecentIds(1), windows=windows)
    # summed: the bulk blocks' events kept as decoded, their window rows made in C
    decoded: list[RecentChange] | None = [] if summed and windows else None
    for lines, valid in checked_blocks(path, start, end):
        fold_block(agg, lines, valid, decoded)
    c, b = agg.counters, agg.batch
    users = _new_users(folder, b.users) if folder else list(b.users)
    return RangeResult(
        start,
        end,
        b.total,
        b.bots,
        b.by_server_name,
        _pack(b.event_ids),
        _pack(users),
        c.canaries,
        c.invalid,
        agg.last_error,
        c.last_dt,
        _summed(b.windows, decoded or []) if summed else b.windows.pack(),
    )


def _summed(delta: WindowDelta, decoded: list[RecentChange]) -> WindowDelta:
    """The delta's recorded events and the `decoded` ones summed per minute, as blobs (see
    `WindowDelta.minutes`): in C where built (`wikipulse._merge`, the decoded events read in
    place: 4-5x faster), else in Python; the C sums leave to Python what they cannot hold (a
    name with a lone surrogate, a length or a sum over 64 bits). After such a refusal the
    decoded events' minutes are read again through `windows.MINUTE_CACHE`, which C may have
    filled meanwhile: an unreadable time of a minute cached since is then read as that
    minute, as it is in any range after the one that cached it (see `windows.minute_of`)."""
    if delta.raw or decoded:
        sums = c_minutes(delta.raw, decoded)
        if sums is None:
            delta.raw += window_rows(decoded)
            accs = events_accs(recorded_minutes(delta) or [])
            sums = [{minute: blobs(acc) for minute, acc in accs.items()}]
        delta.minutes += sums
        delta.raw = []
    return delta


def default_workers() -> int:
    """One worker per core the process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class RangeFolder:
    """Worker processes folding the ranges of one file, a bounded number of ranges ahead.

    The workers are forked and start decoding as soon as this is made, so a command can make
    it first and load its settings and open its store while the first ranges are decoded;
    forking first also means no thread exists yet to be copied into the children.
    """

    def __init__(
        self,
        path: Path,
        size: int,
        workers: int,
        range_bytes: int = RANGE_BYTES,
        *,
        windows: bool = True,
        summed: bool = False,
    ) -> None:
        self.path = path
        self.workers = workers
        reuse_freed_memory()  # the workers inherit it
        # Tells the workers' memory of names sent (see `fold_range`) from any other folder's.
        token = uuid.uuid4().hex
        tasks = [
            (path, start, end, windows, token, summed)
            for start, end in split_ranges(size, range_bytes, tail=workers * range_bytes)
        ]
        # A bounded number of ranges queued keeps memory flat whatever the store's speed.
        # Eight a worker to start with: the parent takes its first result only once asyncio
        # and the store are loaded, and with two a worker they sat idle by then; two a
        # worker once it takes them (the parent's peak memory).
        # The workers yield to the parent, the serial part (niceness measured: replay into
        # SQLite 1.43-1.47 s at 0, 1.37-1.40 at 10, the parent's backlog of seals no longer
        # left to the end; into memory no change).
        self._pool = ForkPool(_fold_task, tasks, workers, ahead=8 * workers, niceness=10)

    async def results(self) -> AsyncIterator[RangeResult]:
        """The ranges' results, in file order."""
        async for result in self._pool.results(ahead=2 * self.workers):
            yield result

    def close(self) -> None:
        """Stop the workers, dropping ranges not yet decoded."""
        self._pool.close()

    def __enter__(self) -> RangeFolder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _fold_task(
    path: Path, start: int, end: int, windows: bool, folder: str, summed: bool
) -> RangeResult:
    # Runs in a worker, which makes no reference cycles (decoded events are not tracked by
    # the collector; the rest are plain lists, dicts and sets it hands back): the collector
    # would only walk what reference counting frees anyway, 2.6% of a worker's instructions
    # (callgrind, one 8 MiB range).
    gc.disable()
    return fold_range(path, start, end, windows, folder=folder, summed=summed)


def _partial(result: RangeResult) -> Partial:
    return Partial(
        total=result.total,
        bots=result.bots,
        by_server_name=result.by_server_name,
        event_ids=_unpack(result.ids),
        users=_unpack(result.users),
        canaries=result.canaries,
        invalid=result.invalid,
        last_error=result.last_error,
        last_dt=result.last_dt,
        windows=result.windows,
    )


async def folded_ranges(
    folder: RangeFolder, progress: Callable[[int], None] | None = None
) -> AsyncIterator[Folded]:
    """The folder's ranges in file order, as parts for the pipeline to merge."""
    async for result in folder.results():
        yield Folded(_partial(result), partial(read_range, folder.path, result.start, result.end))
        if progress is not None:
            progress(result.end)
