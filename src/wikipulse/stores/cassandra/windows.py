"""Time windows in Cassandra, exactly once: whole-bucket versions written before the commit.

A commit is one conditional batch into the ingester's partition (`IF seq = ?`), so rows of other
partitions cannot join it. The window rows are therefore written *before* it, as whole values,
never increments, and made valid by it:

- Each bucket (a minute, or an hour) of an ingester has two slots per epoch in
  `window_versions`, partitioned by (ingester, granularity, hour). A commit writes each bucket
  it touches whole (its full contents: counts by wiki and type, users, pages, as msgpack blobs)
  into a slot of its own epoch that does *not* hold the bucket's newest committed version,
  tagged with the commit's (epoch, seq). A writer that lost its place (a second process of
  the same ingester id, or a holder paused past its lease) writes before its commit is
  refused, but only into its own epoch's slots: never onto the new writer's versions.
- A version counts only if its commit did: the ingester's partition records, per epoch (one
  run of a process, renewed when a batch is given up), the last seq committed in it, so a
  version is committed iff `seq <= last_seq[epoch]`. A reader takes, per bucket, the committed
  version of highest seq. A version written by an attempt that died, timed out or was given up
  never becomes valid, even once seq passes it (its epoch stops below it), and an attempt
  retried with the same batch token keeps its epoch and seq and writes the same value again.
- Overwriting a slot never touches the newest committed version, so a crash between the window
  writes and the commit leaves the previous committed value readable. Slots are overwritten in
  place (no tombstone), each with a write timestamp above every timestamp the writer has read
  on that bucket, so a clock stepped back across a restart cannot lose a write; a lost write
  held in the network that lands late loses to the newer one (or, if it somehow won, is an
  invalid version and readers fall back to the other slot).
- Commits write minutes only. 5-minute and hour rows are *sealed* afterwards, off the commit
  path, as rows derived from the committed minutes (`window_seal.py`): readers use a sealed
  row only if it is committed and no later commit touched its bucket (a stale mark in the
  commit batch says so), and otherwise sum the finer level, so a 24 h query reads 24 hour
  rows and the newest hour as at most 12 five-minute rows plus a few minutes.
- Retention: rows carry a TTL of the retention period counted from the newest event time (so
  live data expires by wall clock as the SQL stores prune by event time), and readers ignore
  what falls out of the retention behind the newest event. Nothing is ever deleted, so nothing
  leaves a tombstone; a partition holds one hour: at most 120 minute rows, 24 five-minute
  rows or 2 hour rows per epoch.

Each sealed row also carries the *head* of its users and pages (`window_head.py`): their
busiest keys and the floor below them, so that top lists over many buckets read the full blobs
only when the heads cannot settle the answer.

The writer keeps the committed minutes of the current and previous hour, loading a partition
from Cassandra on a miss (after a restart, or a late event).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cassandra.query import UNSET_VALUE

from wikipulse.stores.cassandra.window_blob import Content, split_delta
from wikipulse.stores.cassandra.window_seal import GRACE, Execute, Sealer, Snapshot, sealable
from wikipulse.window_delta import WindowDelta
from wikipulse.window_query import FIVE_MINUTES
from wikipulse.windows import HOUR, MINUTE

__all__ = ["Staged", "WindowWriter", "committed_version"]

_MAX_TTL = 630_720_000  # Cassandra's limit: 20 years
_KEEP_DECODED = 2 * MINUTE  # minutes this far behind the newest stay decoded in memory


def committed_version(row: Mapping[str, Any], epochs: Mapping[str, int]) -> bool:
    """Whether a window row was written by a commit that landed."""
    seq = row["seq"]
    done = epochs.get(row["epoch"])
    return seq is not None and done is not None and 0 < seq <= done


@dataclass(slots=True)
class _Bucket:
    """One bucket's newest committed version as the writer knows it."""

    slot: int | None  # the slot holding it; None when no version ever committed
    content: Content | None  # decoded, or None to decode `blobs` when needed
    blobs: tuple[bytes | None, bytes | None, bytes | None] = (None, None, None)
    epoch: str | None = None  # the epoch whose slot holds it

    def value(self) -> Content:
        if self.content is None:
            self.content = Content.decode(*self.blobs)
        return self.content


@dataclass(slots=True)
class Staged:
    """What one commit attempt wrote; the writer adopts it once the commit has landed."""

    buckets: dict[int, _Bucket]  # minute -> its new version
    newest: int
    stale: list[tuple[int, int]]  # sealable (g, bucket) touched: their sealed rows go stale
    closing: list[tuple[int, int]]  # (g, bucket) to seal once the commit has landed


class WindowWriter:
    """Write one ingester's minute buckets as versions of its commits; seal past hours after."""

    def __init__(
        self, ingester_id: str, retention_seconds: int, execute: Execute, seal_in_process: bool
    ) -> None:
        self._me = ingester_id
        self._retention = retention_seconds
        self._execute = execute
        #: hour -> minute -> bucket, for the hours whose minute partition is loaded.
        self._minutes: dict[int, dict[int, _Bucket]] = {}
        self.newest: int | None = None
        self._stamp = 0  # the highest write timestamp written or read (microseconds)
        self.sealer = Sealer(ingester_id, retention_seconds, execute, seal_in_process)
        self.sealer.stamp = self._next_stamp

    def _next_stamp(self) -> int:
        self._stamp = max(self._stamp + 1, time.time_ns() // 1000)
        return self._stamp

    def opened(self, newest: int | None, epoch: str | None, seq: int | None) -> None:
        """Start from the committed state: the newest minute committed, nothing cached; seal
        the hour before the newest event's if a crash left it unsealed."""
        self.sealer.forget()
        self._minutes.clear()
        self.newest = newest
        if newest is not None and epoch is not None and seq:
            for g in (FIVE_MINUTES, HOUR):
                first = newest - HOUR - GRACE
                for bucket in range(first - first % g, newest, g):
                    if sealable(g, bucket, newest):
                        snap = Snapshot(g, bucket, None, epoch, seq, newest, only_if_missing=True)
                        self.sealer.queue(snap)

    async def stage(
        self, delta: WindowDelta, seq: int, epoch: str, epochs: Mapping[str, int]
    ) -> Staged | None:
        """Write the minutes the batch touches as versions (epoch, seq); None if none."""
        if not delta:
            return None
        minutes = split_delta(delta)
        if not minutes:
            return None
        hours = {m - m % HOUR for m in minutes}
        before = self.newest
        newest = max(max(minutes), before if before is not None else -1)
        await asyncio.gather(*(self._load(h, epochs) for h in hours))
        staged: dict[int, _Bucket] = {}
        for minute, change in minutes.items():
            have = self._minutes[minute - minute % HOUR].get(minute)
            new = have.value().plus(change) if have is not None else change
            staged[minute] = self._next(have, new, epoch)
        await asyncio.gather(
            *(self._write(b, version, seq, epoch, newest) for b, version in staged.items())
        )
        touched = {(g, m - m % g) for m in minutes for g in (FIVE_MINUTES, HOUR)}
        # Buckets that could be sealed already: their sealed rows are stale from this commit on.
        stale = sorted(k for k in touched if sealable(*k, before))
        closing = {k for k in touched if sealable(*k, newest)}
        # Buckets this batch moves event time far enough past to seal.
        held = {m for h in self._minutes.values() for m, b in h.items() if b.slot is not None}
        for minute in held | set(minutes):
            for g in (FIVE_MINUTES, HOUR):
                bucket = minute - minute % g
                if sealable(g, bucket, newest) and not sealable(g, bucket, before):
                    closing.add((g, bucket))
        return Staged(staged, newest, stale, sorted(closing))

    @staticmethod
    def _next(have: _Bucket | None, new: Content, epoch: str) -> _Bucket:
        """The next version of a bucket: in a slot of `epoch` not holding its committed one."""
        mine = have is not None and have.slot is not None and have.epoch == epoch
        slot = 1 - have.slot if mine and have is not None and have.slot is not None else 0
        return _Bucket(slot, new, new.encode(), epoch)

    async def _write(
        self, bucket: int, version: _Bucket, seq: int, epoch: str, newest: int
    ) -> None:
        new = version.value()
        stamp = self._next_stamp()
        ttl = min(_MAX_TTL, max(MINUTE, bucket + MINUTE + self._retention - newest))
        params = [self._me, MINUTE, bucket - bucket % HOUR, bucket, version.slot, seq, epoch]
        summary = [new.users_n(), new.totals()]
        # Minutes carry no heads: a minute holds few keys, most of them once, so its head would
        # be nearly all of it with a floor of 1-2, and 60 such floors defeat the merge anyway;
        # readers sum minutes in full. UNSET writes nothing (no null cell, no tombstone).
        heads = [UNSET_VALUE] * 4  # and no per-wiki user counts, no list of names
        await self._execute("win_write", [*params, *summary, *version.blobs, *heads, stamp, ttl])

    def committed(self, staged: Staged | None, seq: int, epoch: str) -> None:
        """The commit (epoch, seq) that wrote `staged` landed: its versions are now the
        committed ones, and the past hours it closed or touched are queued for sealing."""
        if staged is None:
            return
        for bucket, written in staged.buckets.items():
            self._minutes.setdefault(bucket - bucket % HOUR, {})[bucket] = written
        self.newest = staged.newest
        for g, bucket in staged.closing:
            # The snapshot is taken now, between two commits: exactly the state as of `seq`.
            held = self._minutes.get(bucket - bucket % HOUR)
            blobs = (
                [
                    b.blobs
                    for m, b in held.items()
                    if b.slot is not None and bucket <= m < bucket + g
                ]
                if held is not None
                else None
            )
            self.sealer.queue(Snapshot(g, bucket, blobs, epoch, seq, staged.newest))
        self._forget(staged.newest)

    def _forget(self, newest: int) -> None:
        """Bound memory: keep the current and previous hour; decode only the newest minutes."""
        current = newest - newest % HOUR
        for hour in [h for h in self._minutes if h < current - HOUR]:
            del self._minutes[hour]
        for hour, minutes in self._minutes.items():
            if hour + HOUR <= newest - _KEEP_DECODED:
                for b in minutes.values():
                    b.content = None
            else:
                for minute, b in minutes.items():
                    if minute < newest - _KEEP_DECODED:
                        b.content = None

    async def _load(self, hour: int, epochs: Mapping[str, int]) -> None:
        """Read one hour of minutes unless it is in memory."""
        if hour in self._minutes:
            return
        rows = await self._execute("win_load", [self._me, MINUTE, hour])
        found: dict[int, _Bucket] = {}
        best: dict[int, int] = {}
        for row in rows:
            stamp = row.get("writetime(seq)") or 0
            self._stamp = max(self._stamp, stamp)
            bucket = row["bucket"]
            found.setdefault(bucket, _Bucket(None, None))
            if committed_version(row, epochs) and row["seq"] > best.get(bucket, 0):
                best[bucket] = row["seq"]
                blobs = (row["counts"], row["users"], row["pages"])
                found[bucket] = _Bucket(row["slot"], None, blobs, row["epoch"])
        # A minute whose slots were all written by lost attempts holds nothing committed.
        self._minutes.setdefault(hour, {}).update(
            {b: v if v.slot is not None else _Bucket(None, Content()) for b, v in found.items()}
        )
