"""Sealing 5-minute and hour buckets of the Cassandra windows: derived rows, off the commit path.

At the live rate an hour's row is 4-6 MB (every user and page of the hour, with heads). Rolling
it up inside the commit that moved event time past the hour made that one commit take 1.3 s
(decode 60 minutes, sum, encode, heads, write: issue #8's p99). Sealed rows are therefore no
part of any commit: they are *derived* from the committed minute versions, which stay the
truth, and written afterwards, in the background. 5-minute rows are sealed the same way, so
that the newest hour (which has no hour row yet) reads at most 12 of them plus a few minutes
instead of 60 minutes in full (issue #10's 1 h top lists).

- A bucket is *sealable* once the newest event's minute starts `GRACE` (2 minutes) after its
  end. After commit `S` lands, each sealable bucket that `S` made sealable or touched is
  queued. The sealer snapshots that bucket's committed minutes *at once* (between two
  commits, so the snapshot is exactly the state as of `S`), sums, encodes and computes the
  heads in a worker process at the lowest CPU priority (so the event loop and the next commit
  are not held by ~0.7 s of CPU for an hour), then writes the row tagged (epoch of `S`, `S`):
  a single-row insert, which a reader sees whole or not at all.
- A commit that touches a bucket that was sealable already (a late event) also records, *in
  its conditional batch*, a stale mark `stale[(g, bucket)] = seq` in the ingester's
  partition, and the bucket is sealed again after it. Readers use a sealed row only if it is
  committed (its seq at most its epoch's last seq) and not older than its stale mark;
  otherwise they sum the finer level (5 minutes, then minutes), as they do for buckets not
  sealed yet. A sealed row therefore is either absent, stale (ignored), or exactly the sum of
  the committed minutes: a crash before, during or after a seal, a seal that lands late, or
  one that races a late event can only make readers slower, never wrong.
- A crash between a commit and its seals leaves buckets unsealed: on open the store seals the
  sealable buckets of the last hour or so again if they have no valid row.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgspec

from wikipulse.stores.cassandra.window_blob import Content, total
from wikipulse.stores.cassandra.window_head import page_head, user_head
from wikipulse.windows import HOUR, MINUTE

_encode = msgspec.msgpack.Encoder().encode

__all__ = [
    "GRACE",
    "Blobs",
    "Execute",
    "Sealer",
    "Snapshot",
    "parse_stale",
    "seal_blobs",
    "sealable",
    "stale_name",
    "valid_sealed",
]

log = logging.getLogger(__name__)
#: Seal timings at DEBUG, beside the store's commit timings (benchmarks/cassandra_ingest.py).
timing_log = logging.getLogger("wikipulse.stores.cassandra.store.timing")

#: One minute version's blobs: counts, users, pages.
Blobs = tuple[bytes | None, bytes | None, bytes | None]
#: What a sealed row holds: users_n, totals, counts, users, pages, users_head, pages_head,
#: wiki_users, user_names.
Sealed = tuple[int, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes]

_MAX_TTL = 630_720_000  # Cassandra's limit: 20 years


def seal_blobs(minutes: list[Blobs]) -> Sealed:
    """The hour row of some minutes' blobs (pure: runs in a worker process)."""
    hour = total(Content.decode(*b) for b in minutes)
    counts, users, pages = hour.encode()
    names = list(set().union(*hour.users.values()))
    return (
        len(names),
        hour.totals(),
        counts,
        users,
        pages,
        user_head(hour.users),
        page_head(hour.pages),
        _encode({server: len(users) for server, users in hour.users.items()}),
        _encode(names),
    )


#: A bucket is sealed once the newest event's minute starts this long after its end, so the
#: few-seconds-late events of the live stream rarely make a sealed row stale.
GRACE = 2 * MINUTE


def sealable(g: int, bucket: int, newest: int | None) -> bool:
    """Whether a 5-minute or hour bucket may be sealed once the newest minute is `newest`."""
    return newest is not None and bucket + g + GRACE <= newest


def stale_name(g: int, bucket: int) -> str:
    """The `name` of a stale mark in the ingester's partition."""
    return f"{g}:{bucket}"


def parse_stale(name: str) -> tuple[int, int]:
    """(g, bucket) of a stale mark's name."""
    g, _, bucket = name.partition(":")
    return int(g), int(bucket)


@dataclass(slots=True)
class Snapshot:
    """A bucket to seal: its committed minutes (None: read them), as of commit (epoch, seq)."""

    g: int
    bucket: int
    minutes: list[Blobs] | None
    epoch: str
    seq: int
    newest: int
    only_if_missing: bool = False


_pool: Executor | None = None


def _process_pool() -> Executor:
    """One worker process for every store of this process, started on first use (spawn: the
    driver's threads make fork unsafe), at the lowest CPU priority: on a busy machine a seal
    that ran at the same priority took CPU from the commits it was meant to spare (a 1.7 s
    commit while it ran, on 2 cores at load 3); niced, it only takes what they leave."""
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(
            1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_lowest_priority,
            initargs=(os.getpid(),),
        )
    return _pool


def _lowest_priority(parent: int) -> None:
    """Run the worker process at nice 19 (where the platform has it), and end it when its
    parent is gone: a `serve` killed with SIGKILL would otherwise leave it waiting for work
    for ever (and each restart another one)."""
    if hasattr(os, "nice"):
        os.nice(19)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


#: Runs a named statement with its parameters, giving the rows as dicts (the store's
#: `_execute`; declared here, where no driver is imported: sealing runs in worker processes).
Execute = Callable[[str, Sequence[Any]], Awaitable[list[dict[str, Any]]]]


class Sealer:
    """Seal hours one at a time in the background, newest snapshot per hour first wins."""

    def __init__(
        self, ingester_id: str, retention: int, execute: Execute, in_process: bool
    ) -> None:
        self._me = ingester_id
        self._retention = retention
        self._execute = execute
        self._in_process = in_process
        self._queue: dict[tuple[int, int], Snapshot] = {}
        self._task: asyncio.Task[None] | None = None
        #: (g, bucket) -> (epoch, slot) last written
        self._slots: dict[tuple[int, int], tuple[str, int]] = {}
        self.stamp: Callable[[], int] = lambda: time.time_ns() // 1000
        self.sealed = 0  # hour rows written (tests and logs)
        self.paused = False  # tests: queue, but do not seal

    def queue(self, snap: Snapshot) -> None:
        """Seal this bucket (replacing an older snapshot of it still waiting)."""
        self._queue[(snap.g, snap.bucket)] = snap
        if not self.paused and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def drain(self) -> None:
        """Wait until every queued hour is sealed (or has failed: readers use minutes)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    def forget(self) -> None:
        """Drop what is queued (the store closes without waiting, or reopens)."""
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
        self._slots.clear()

    async def _run(self) -> None:
        while self._queue:
            key = min(self._queue)  # 5-minute buckets first: cheap, and read most
            snap = self._queue.pop(key)
            try:
                await self._seal(snap)
            except asyncio.CancelledError:
                raise
            except Exception:  # the hour stays readable from its minutes
                log.warning("sealing %s failed; readers use its minutes", key, exc_info=True)

    async def _seal(self, snap: Snapshot) -> None:
        started = time.perf_counter()
        minutes = snap.minutes
        if minutes is None:
            minutes = await self._read_minutes(snap)
        if not minutes:
            return  # sealed already, or nothing to seal
        if self._in_process:
            loop = asyncio.get_running_loop()
            row = await loop.run_in_executor(_process_pool(), seal_blobs, minutes)
        else:
            row = seal_blobs(minutes)
        computed = time.perf_counter()
        last = self._slots.get((snap.g, snap.bucket))
        slot = 1 - last[1] if last is not None and last[0] == snap.epoch else 0
        ttl = min(_MAX_TTL, max(MINUTE, snap.bucket + snap.g + self._retention - snap.newest))
        period = snap.bucket - snap.bucket % HOUR
        params = [self._me, snap.g, period, snap.bucket, slot, snap.seq, snap.epoch]
        await self._execute("win_write", [*params, *row, self.stamp(), ttl])
        self._slots[(snap.g, snap.bucket)] = (snap.epoch, slot)
        self.sealed += 1
        if timing_log.isEnabledFor(logging.DEBUG):
            done = time.perf_counter()
            timing_log.debug(
                "seal g=%d bucket=%d as_of=%d minutes=%d bytes=%d compute_ms=%.1f write_ms=%.1f",
                snap.g,
                snap.bucket,
                snap.seq,
                len(minutes),
                sum(len(b) for b in row[1:]),
                (computed - started) * 1000,
                (done - computed) * 1000,
            )

    async def _read_minutes(self, snap: Snapshot) -> list[Blobs] | None:
        """The hour's committed minutes as of the snapshot, read back (after a restart)."""
        meta = await self._execute("win_meta", [self._me, ["epoch", "stale"]])
        epochs = {r["name"]: r["last_seq"] for r in meta if r["kind"] == "epoch"}
        period = snap.bucket - snap.bucket % HOUR
        if snap.only_if_missing:
            stale = {parse_stale(r["name"]): r["last_seq"] for r in meta if r["kind"] == "stale"}
            rows = await self._execute("win_load", [self._me, snap.g, period])
            mine = [r for r in rows if r["bucket"] == snap.bucket]
            if any(valid_sealed(r, snap.g, epochs, stale) for r in mine):
                return None  # sealed already
        found = await self._execute("win_load", [self._me, MINUTE, period])
        rows = [r for r in found if snap.bucket <= r["bucket"] < snap.bucket + snap.g]
        best: dict[int, Mapping[str, Any]] = {}
        for row in rows:
            seq, done = row["seq"], epochs.get(row["epoch"])
            if seq is None or done is None or not 0 < seq <= min(done, snap.seq):
                continue
            have = best.get(row["bucket"])
            if have is None or seq > have["seq"]:
                best[row["bucket"]] = row
        return [(r["counts"], r["users"], r["pages"]) for r in best.values()]


def valid_sealed(
    row: Mapping[str, Any],
    g: int,
    epochs: Mapping[str, int],
    stale: Mapping[tuple[int, int], int],
) -> bool:
    """Whether a sealed row is committed and no later commit touched its bucket."""
    seq = row["seq"]
    done = epochs.get(row["epoch"])
    if seq is None or done is None or not 0 < seq <= done:
        return False
    return bool(seq >= stale.get((g, row["bucket"]), 0))
