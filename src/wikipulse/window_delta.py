"""A batch's time-window deltas (`WindowDelta`): what a fold records, summed when read; pure.

See `windows.py` for what a window counts; this is how a batch carries it to a store.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from operator import itemgetter

from wikipulse.events import CANARY_DOMAIN, RecentChange
from wikipulse.window_blobs import add_row
from wikipulse.window_packing import PackedEvents, RawWindowEvent, pack_events, unpack_events
from wikipulse.windows import (
    HOUR,
    MINUTE,
    MINUTE_CACHE,
    STEPS,
    UNKNOWN_TYPE,
    KeyCounts,
    MinuteBlobs,
    RowCounts,
    length_change,
    minute_of,
)

__all__ = ["WindowDelta", "rollup", "rollup_rows", "window_rows"]

_KEY = itemgetter(0, 1, 2)
_USER_KEY = itemgetter(0, 1, 4)
_PAGE_KEY = itemgetter(0, 1, 5)


class WindowDelta:
    """The time-window deltas of a batch: per-minute counts by server and type, users, pages.

    Events are first appended to `raw` (one tuple each, the cheapest thing a hot loop can
    do); `compact` sums them into the three maps. Read the maps only after `compact`.

    A replay worker writing for the SQL stores sums its events per minute itself (in C where
    built) and sends each minute as the blobs of a stored part (`minutes`): that work then
    runs on every core, not in the parent, whose writer holds such a minute as its blobs,
    stores it as it is and sums it into coarser buckets in C (`stores.window_held`). Only that
    writer reads such
    minutes; `compact` and `recorded` refuse a delta that holds any.
    """

    __slots__ = ("counts", "minutes", "packed", "pages", "parts", "raw", "users")

    def __init__(self) -> None:
        self.raw: list[RawWindowEvent] = []
        #: Recorded events packed column-wise to travel between processes (see `pack`).
        self.packed: list[PackedEvents] = []
        #: Deltas merged in and not yet summed (`merge` costs nothing on the replay hot path).
        self.parts: list[WindowDelta] = []
        #: Events already summed per minute by a replay worker (see the class docstring).
        self.minutes: list[MinuteBlobs] = []
        self.counts: RowCounts = {}
        self.users: KeyCounts = {}
        self.pages: KeyCounts = {}

    def __bool__(self) -> bool:
        return bool(self.raw or self.counts or self.parts or self.packed or self.minutes)

    def summed(self) -> list[MinuteBlobs]:
        """The per-minute sums of this delta and its merged parts, leaving them in place."""
        found = list(self.minutes)
        for part in self.parts:
            found += part.summed()
        return found

    def _no_sums(self) -> None:
        if self.minutes:
            raise TypeError(
                "these time windows were summed per minute by a replay worker: only the SQL "
                "stores' window writer reads them (stores.window_held.batch_minutes)"
            )

    def pack(self) -> WindowDelta:
        """Pack the recorded events column-wise (a few long strings); return self.

        A worker process sends its events to the parent this way: unpickling a few long
        strings costs the parent a fraction of unpickling a tuple per event, and the parent
        unpacks them only when it sums them up. Events whose names hold NUL stay as tuples.
        """
        if not self.raw:
            return self
        packed = pack_events(self.raw)
        if packed is None:
            return self
        self.packed.append(packed)
        self.raw = []
        return self

    def add(self, event: RecentChange) -> None:
        """Record one counted event; an event without a readable `meta.dt` is left out."""
        minute = minute_of(event.meta.dt)
        if minute is not None:
            self.raw.append(
                (
                    minute,
                    event.server_name,
                    event.type,
                    event.bot,
                    event.user,
                    event.title,
                    length_change(event),
                )
            )

    def recorded(self, but_sums: bool = False) -> list[RawWindowEvent] | None:
        """The recorded events, merged parts' and packed ones included, in the order `compact`
        sums them, leaving the delta as it is; None if some are summed into the maps already.
        Per-minute sums (`summed`) are left out with `but_sums`, else refused.

        Counting a batch's events per minute straight from these costs half of summing them
        into the maps and walking those (`window_minutes.recorded_minutes`).
        """
        if not but_sums:
            self._no_sums()
        if self.counts:
            return None
        events: list[RawWindowEvent] = []
        for part in self.parts:
            found = part.recorded(but_sums)
            if found is None:
                return None
            events += found
        for columns in self.packed:
            events += unpack_events(columns)
        events += self.raw
        return events

    def compact(self) -> WindowDelta:
        """Sum the recorded events and merged parts into the maps (mostly in C); return self."""
        self._no_sums()
        for part in self.parts:
            part._no_sums()
        parts, self.parts = self.parts, []
        for part in parts:
            self._add_maps(part.compact())
        packed, self.packed = self.packed, []
        for columns in packed:
            self.raw += unpack_events(columns)
        raw = self.raw
        if not raw:
            return self
        self.raw = []
        counts = self.counts
        bots = Counter(map(_KEY, filter(itemgetter(3), raw)))
        for key, n in Counter(map(_KEY, raw)).items():
            if not key[2]:  # no type, or an empty one
                key = (key[0], key[1], UNKNOWN_TYPE)
            row = counts.get(key)
            if row is None:
                counts[key] = [n, 0, 0, 0]
            else:
                row[0] += n
        for key, n in bots.items():
            if not key[2]:  # no type, or an empty one
                key = (key[0], key[1], UNKNOWN_TYPE)
            counts[key][1] += n
        for minute, server, kind, _, _, _, diff in filter(itemgetter(6), raw):
            row = counts[(minute, server, kind or UNKNOWN_TYPE)]
            if diff > 0:
                row[2] += diff
            else:
                row[3] -= diff
        _add_counts(self.users, Counter(map(_USER_KEY, filter(itemgetter(4), raw))))
        _add_counts(self.pages, Counter(map(_PAGE_KEY, filter(itemgetter(5), raw))))
        return self

    def merge(self, other: WindowDelta) -> None:
        """Add another delta to this one (the other is used up); summed by `compact`, not now."""
        if other:
            self.parts.append(other)

    def _add_maps(self, other: WindowDelta) -> None:
        if not self.counts:
            self.counts, self.users, self.pages = other.counts, other.users, other.pages
            return
        counts = self.counts
        for key, row in other.counts.items():
            add_row(counts, key, row)
        _add_counts(self.users, other.users)
        _add_counts(self.pages, other.pages)

    def newest(self) -> int | None:
        """The newest minute in the delta, if any."""
        self.compact()
        return max((key[0] for key in self.counts), default=None)

    def totals(self) -> list[tuple[int, int, str, int, int, int, int]]:
        """Per (step, bucket, type) over all wikis, for steps 60, 300 and 3600: the sums."""
        self.compact()
        sums: dict[tuple[int, int, str], list[int]] = {}
        for (minute, _, kind), row in self.counts.items():
            for step in STEPS:
                add_row(sums, (step, minute - minute % step, kind), row)
        return [(g, b, t, r[0], r[1], r[2], r[3]) for (g, b, t), r in sums.items()]

    def bucket_users(self) -> list[tuple[int, int, str]]:
        """The distinct (step, bucket, user) of the delta, for steps 60, 300 and 3600."""
        self.compact()
        keys = {(step, m - m % step, user) for (m, _, user) in self.users for step in STEPS}
        return sorted(keys)

    def granular(self) -> Iterator[tuple[int, RowCounts, KeyCounts, KeyCounts]]:
        """The compacted delta at each granularity kept: (seconds, counts, users, pages)."""
        self.compact()
        yield MINUTE, self.counts, self.users, self.pages
        yield HOUR, rollup_rows(self.counts), rollup(self.users), rollup(self.pages)


def _add_counts(mine: KeyCounts, theirs: Mapping[tuple[int, str, str], int]) -> None:
    if not mine:
        mine.update(theirs)
        return
    get = mine.get
    for key, n in theirs.items():
        mine[key] = get(key, 0) + n


def rollup_rows(minutes: RowCounts) -> RowCounts:
    """The per-type counts summed per hour: keys move to the hour of their minute."""
    hours: RowCounts = {}
    for (minute, server, key), row in minutes.items():
        add_row(hours, (minute - minute % HOUR, server, key), row)
    return hours


def rollup(minutes: KeyCounts) -> KeyCounts:
    """The user or page counts summed per hour: keys move to the hour of their minute."""
    hours: KeyCounts = {}
    for (minute, server, key), n in minutes.items():
        hkey = (minute - minute % HOUR, server, key)
        hours[hkey] = hours.get(hkey, 0) + n
    return hours


def window_rows(events: list[RecentChange]) -> list[RawWindowEvent]:
    """The time-window rows of decoded counted events (see windows.py): one per event that is
    no canary and has a readable `meta.dt`, its minute read through `MINUTE_CACHE` (a hot
    loop's shortcut to `minute_of`). What `add` records, for many events at once."""
    rows: list[RawWindowEvent] = []
    add_row = rows.append
    minutes = MINUTE_CACHE
    for event in events:
        meta = event.meta
        dt = meta.dt
        if not dt or meta.domain == CANARY_DOMAIN:
            continue
        minute = minutes.get(dt[:16], -1) if dt[-1] == "Z" else -1
        if minute == -1:
            minute = minute_of(dt)
        if minute is not None:
            length = event.length
            diff = 0
            if length is not None and length.new is not None:
                diff = length.new - (length.old or 0)
            add_row(
                (minute, event.server_name, event.type, event.bot, event.user, event.title, diff)
            )
    return rows
