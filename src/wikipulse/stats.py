"""Statistics: the snapshot served to clients and the pure folding of events into deltas."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wikipulse.dedup import RecentIds
from wikipulse.events import (
    CANARY_DOMAIN,
    DECODE_ERRORS,
    InvalidEvent,
    Meta,
    RecentChange,
    decode,
    decode_json_only,
)
from wikipulse.utf8 import valid_utf8
from wikipulse.window_delta import WindowDelta, window_rows

__all__ = ["Aggregator", "Batch", "Counters", "Outcome", "Partial", "Stats"]


@dataclass(frozen=True, slots=True)
class Stats:
    """A consistent snapshot of the statistics, as `/stats` serves it."""

    total: int = 0
    distinct_users: int = 0
    bots: int = 0
    by_server_name: Mapping[str, int] = field(default_factory=dict)

    @property
    def non_bots(self) -> int:
        """Events not flagged as made by a bot."""
        return self.total - self.bots

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of `/stats`, servers sorted by count then name."""
        servers = sorted(self.by_server_name.items(), key=lambda kv: (-kv[1], kv[0]))
        return {
            "total": self.total,
            "distinct_users": self.distinct_users,
            "bots": self.bots,
            "non_bots": self.non_bots,
            "by_server_name": dict(servers),
        }


@dataclass(slots=True)
class Batch:
    """Deltas folded from consecutive events, committed to a store as one unit."""

    total: int = 0
    bots: int = 0
    by_server_name: dict[str, int] = field(default_factory=dict)
    users: set[str] = field(default_factory=set)
    #: `meta.id` of every event counted here, oldest first, for the store's dedup window.
    event_ids: list[str] = field(default_factory=list)
    #: The stream position (SSE id) reached by the last event folded in, if any.
    position: str | None = None
    #: Whether any event (counted or not) moved the position; an empty batch need not commit.
    touched: bool = False
    #: Unique to this batch: a store that records it can tell a retried commit from a new one.
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: The time-window deltas of the events counted here, committed with everything else.
    windows: WindowDelta = field(default_factory=WindowDelta)

    def add(self, event: RecentChange, *, windows: bool = True) -> None:
        """Fold one valid, non-canary, not-yet-seen event into the deltas."""
        self.total += 1
        if event.bot:
            self.bots += 1
        servers = self.by_server_name
        servers[event.server_name] = servers.get(event.server_name, 0) + 1
        if event.user:
            self.users.add(event.user)
        self.event_ids.append(event.meta.id)
        if windows:
            self.windows.add(event)


class Outcome(enum.Enum):
    """What became of one raw event."""

    COUNTED = "counted"
    DUPLICATE = "duplicate"
    CANARY = "canary"
    INVALID = "invalid"


@dataclass(slots=True)
class Counters:
    """Running totals of what the aggregator has seen, for status and metrics."""

    counted: int = 0
    duplicates: int = 0
    canaries: int = 0
    invalid: int = 0
    #: `meta.dt` of the last event counted (as sent, ISO 8601), for the stream lag.
    last_dt: str | None = None


@dataclass(frozen=True, slots=True)
class Partial:
    """Deltas folded elsewhere (a worker process) as if their events held no repeated id."""

    total: int
    bots: int
    by_server_name: dict[str, int]
    event_ids: list[str]
    users: list[str]
    canaries: int
    invalid: int
    last_error: str
    last_dt: str | None
    windows: WindowDelta = field(default_factory=WindowDelta)


class Aggregator:
    """Decode raw event bytes, drop canaries, invalid and repeated events, fold the rest."""

    __slots__ = ("batch", "counters", "keep_windows", "last_error", "recent")

    def __init__(self, recent: RecentIds, *, windows: bool = True) -> None:
        self.recent = recent
        #: Whether to fold the time windows too; off where nothing will read them (a replay
        #: into memory without --windows), which saves their time and memory.
        self.keep_windows = windows
        self.batch = Batch()
        self.counters = Counters()
        #: Why the last invalid event was refused, for the caller to log.
        self.last_error = ""

    def add_raw(self, data: bytes | str, position: str | None = None) -> Outcome:
        """Process one event's JSON; the position moves on whatever becomes of it."""
        batch = self.batch
        batch.touched = True
        if position is not None:
            batch.position = position
        try:
            event = decode(data)
        except InvalidEvent as exc:
            self.counters.invalid += 1
            self.last_error = str(exc)
            return Outcome.INVALID
        if event.meta.domain == CANARY_DOMAIN:
            self.counters.canaries += 1
            return Outcome.CANARY
        if not self.recent.add(event.meta.id):
            self.counters.duplicates += 1
            return Outcome.DUPLICATE
        batch.add(event, windows=self.keep_windows)
        counters = self.counters
        counters.counted += 1
        if event.meta.dt is not None:
            counters.last_dt = event.meta.dt
        return Outcome.COUNTED

    def fold(
        self, raws: Iterable[bytes], *, dedup: bool = True, blank_invalid: bool = False
    ) -> None:
        """Process many events that carry no position (NDJSON lines); blank lines are skipped.

        The same outcome as `add_raw` on each, written as one loop over local names because
        this is the replay hot path (it roughly halves the time per event). With `dedup`
        false, repeated ids are folded too and the window is left alone: for a worker that
        checks its ids for repeats afterwards, in bulk (see sources/parallel.py). With
        `blank_invalid`, a blank event counts as invalid, as `add_raw` counts it (live events).
        """
        batch = self.batch
        batch.touched = True
        servers = batch.by_server_name
        add_user = batch.users.add
        ids = batch.event_ids
        add_id = ids.append
        # The time windows: the counted events, whose rows are recorded after the loop.
        keep_windows = self.keep_windows
        windowed: list[RecentChange] = []
        add_window = windowed.append
        counted_before = len(ids)
        window = self.recent
        new, old, capacity = window._new, window._old, window._capacity
        decode_raw = decode_json_only
        bots = canaries = duplicates = invalid = 0
        last_meta: Meta | None = None
        for raw in raws:
            try:
                # Bad UTF-8 anywhere makes the event malformed (see events.py): checked in C
                # (utf8.py); only a line that fails is decoded, for the codec's message.
                if not valid_utf8(raw):
                    raw.decode()
                event = decode_raw(raw)
            except DECODE_ERRORS as exc:
                if blank_invalid or raw.strip():
                    invalid += 1
                    self.last_error = str(exc)
                continue
            meta = event.meta
            if meta.domain == CANARY_DOMAIN:
                canaries += 1
                continue
            event_id = meta.id
            if dedup:
                if event_id in new or event_id in old:
                    duplicates += 1
                    continue
                new.add(event_id)
                if len(new) >= capacity:
                    window._rotate()
                    new, old = window._new, window._old
            last_meta = meta
            bots += event.bot
            name = event.server_name
            servers[name] = servers.get(name, 0) + 1
            user = event.user
            if user:
                add_user(user)
            add_id(event_id)
            if keep_windows:
                add_window(event)
        if windowed:
            batch.windows.raw += window_rows(windowed)
        counted = len(ids) - counted_before
        batch.total += counted
        batch.bots += bots
        c = self.counters
        c.counted += counted
        c.canaries += canaries
        c.duplicates += duplicates
        c.invalid += invalid
        # Once per call, not per event: only the last counted event's time matters (lag).
        if last_meta is not None and last_meta.dt is not None:
            c.last_dt = last_meta.dt

    def merge(self, part: Partial) -> bool:
        """Add a part folded elsewhere, if none of its events repeats; say whether it was added.

        A part with a repeated id, within itself or with the dedup window, is refused whole
        and left for the caller to fold event by event, so the result is always that of
        folding the same events here in order.
        """
        if not self.recent.add_new(part.event_ids):
            return False
        batch = self.batch
        batch.touched = True
        batch.total += part.total
        batch.bots += part.bots
        servers = batch.by_server_name
        for name, count in part.by_server_name.items():
            servers[name] = servers.get(name, 0) + count
        batch.users.update(part.users)
        batch.event_ids += part.event_ids
        batch.windows.merge(part.windows)
        c = self.counters
        c.counted += part.total
        c.canaries += part.canaries
        c.invalid += part.invalid
        if part.invalid:
            self.last_error = part.last_error
        if part.last_dt is not None:
            c.last_dt = part.last_dt
        return True

    def take(self) -> Batch:
        """Hand over the deltas folded so far and start a new batch."""
        batch, self.batch = self.batch, Batch()
        return batch
