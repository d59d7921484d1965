"""The committed snapshot, encoded once: what `/stats` serves without touching the store.

The statistics change only when a batch commits. The process that commits publishes the
store's snapshot right after each commit (`SnapshotCache.refresh`, called by the pipeline);
a process that only reads a shared store runs a `SnapshotRefresher`, which re-reads it every
batch interval. Either way the snapshot is read once, encoded to JSON bytes once and given an
`ETag` derived from those bytes, so the tag changes when and only when the statistics do.

Readers never see half a batch: the store's snapshot is consistent (a read transaction or
the store's own lock), and the cache swaps one immutable `EncodedSnapshot` in one assignment.
A refresh that fails drops the cached snapshot, so `/stats` reads the store again (and answers
503 if it cannot) instead of serving figures older than one batch interval.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec

from wikipulse.stats import Stats

__all__ = ["EncodedSnapshot", "SnapshotCache", "SnapshotRefresher", "encode_stats", "etag_matches"]

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class EncodedSnapshot:
    """One committed snapshot: the statistics, their JSON body and its entity tag."""

    stats: Stats
    body: bytes
    #: A strong entity tag, quoted as it goes into the `ETag` header.
    etag: str


def encode_stats(stats: Stats) -> EncodedSnapshot:
    """Encode a snapshot as the `/stats` body (servers busiest first) and tag it by its bytes."""
    body = _encode(stats.to_dict())
    digest = hashlib.blake2b(body, digest_size=12).hexdigest()
    return EncodedSnapshot(stats, body, f'"{digest}"')


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Whether an `If-None-Match` header names `etag` (weak comparison, RFC 9110 13.1.2)."""
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


class SnapshotCache:
    """The latest committed snapshot, encoded, and the reads of a store that refresh it."""

    __slots__ = ("_current", "_published", "_refreshing", "_started")

    def __init__(self) -> None:
        self._current: EncodedSnapshot | None = None
        self._refreshing: asyncio.Task[EncodedSnapshot] | None = None
        # Reads are numbered as they start; a read publishes only if none that started after
        # it has published already, so a slow old read never replaces a newer snapshot.
        self._started = 0
        self._published = 0

    @property
    def current(self) -> EncodedSnapshot | None:
        """The snapshot to serve, or None if none is known to be current."""
        return self._current

    def publish(self, stats: Stats) -> EncodedSnapshot:
        """Encode `stats` and make it the snapshot served; keep the old one if nothing changed."""
        self._started += 1
        self._published = self._started
        return self._swap(stats)

    def _swap(self, stats: Stats) -> EncodedSnapshot:
        current = self._current
        if current is not None and current.stats == stats:
            return current
        encoded = encode_stats(stats)
        self._current = encoded  # one assignment: readers see the old snapshot or the new
        return encoded

    def invalidate(self) -> None:
        """Forget the snapshot, so that the next request reads the store."""
        self._current = None

    async def load(self, read: Callable[[], Awaitable[Stats]]) -> EncodedSnapshot | None:
        """Read the store's snapshot now and publish it; None if a newer read published first.

        The committer calls this after each commit. A failed read invalidates the cache and
        raises.
        """
        self._started += 1
        ticket = self._started
        try:
            stats = await read()
        except BaseException:  # cancelled too: the store may now hold more than is cached
            self.invalidate()
            raise
        if ticket < self._published:
            return None
        self._published = ticket
        return self._swap(stats)

    async def refresh(self, read: Callable[[], Awaitable[Stats]]) -> EncodedSnapshot:
        """The current snapshot, reading the store if there is none; callers share one read."""
        task = self._refreshing
        if task is None:
            task = asyncio.ensure_future(self._load_current(read))
            self._refreshing = task
            task.add_done_callback(self._refreshed)
        return await asyncio.shield(task)

    async def _load_current(self, read: Callable[[], Awaitable[Stats]]) -> EncodedSnapshot:
        encoded = await self.load(read)
        current = encoded or self._current
        if current is None:  # a newer read published, then failed: read once more
            current = await self.load(read)
        if current is None:
            raise RuntimeError("no snapshot could be published")
        return current

    def _refreshed(self, task: asyncio.Task[EncodedSnapshot]) -> None:
        if self._refreshing is task:
            self._refreshing = None
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have been cancelled


class SnapshotRefresher:
    """Re-read a store's snapshot every interval: for processes that do not commit themselves.

    Needs no pipeline: an API process over a shared store (PostgreSQL, Cassandra) runs one so
    that what it serves is never older than one batch interval of the ingester writing it.
    """

    def __init__(
        self,
        cache: SnapshotCache,
        read: Callable[[], Awaitable[Stats]],
        interval: float,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.cache = cache
        self._read = read
        self._interval = interval
        self._sleep = sleep

    async def run(self) -> None:
        """Refresh, then wait an interval, until cancelled; a failed read is logged and retried."""
        failing = False
        while True:
            try:
                await self.cache.load(self._read)
            except Exception as exc:
                if not failing:
                    log.warning("reading the statistics failed: %s: %s", type(exc).__name__, exc)
                failing = True
            else:
                failing = False
            await self._sleep(self._interval)
