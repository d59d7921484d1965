"""Time windows: folding counted events into per-minute deltas by event time; pure, no I/O.

Every counted event (valid, non-canary, first of its `meta.id`) whose `meta.dt` parses lands in
the minute of its event time (UTC, seconds since the Unix epoch, a multiple of 60). A delta
(`window_delta.WindowDelta`) holds three maps, each keyed by (minute, server name, x):

- `counts`: x is the event `type` (`unknown` when absent); the value is
  `[events, bots, bytes_added, bytes_removed]`, bytes_removed as a positive number;
- `users`: x is the user name (events without one are left out); the value is a count;
- `pages`: x is the page title (events without one are left out); the value is a count.

The stores keep buckets of several sizes (the memory store minutes and hours,
`WindowDelta.granular`; the others minutes, 5 minutes and hours), so a query reads few rows
whatever its span. Bytes: `length.new - length.old`, a missing `old` counting as 0; an event
without `length` or without `length.new` adds nothing.
"""

from __future__ import annotations

from wikipulse.events import RecentChange, parse_dt
from wikipulse.window_packing import RawWindowEvent

__all__ = [
    "GRANULARITIES",
    "HOUR",
    "MINUTE",
    "MINUTE_CACHE",
    "STEPS",
    "UNKNOWN_TYPE",
    "KeyCounts",
    "MinuteBlobs",
    "RawWindowEvent",
    "RowCounts",
    "length_change",
    "minute_of",
]

MINUTE = 60
HOUR = 3600
#: The bucket sizes every store keeps rows of, per wiki, in seconds.
GRANULARITIES = (MINUTE, HOUR)
#: The timeseries steps; SQL stores also keep all-wiki totals and distinct users per step.
STEPS = (60, 300, 3600)
#: Where events without a `type` are counted in `by_type`.
UNKNOWN_TYPE = "unknown"

#: Minute -> the (dimension, blob) rows of a stored part holding its events (window_blobs).
MinuteBlobs = dict[int, list[tuple[str, bytes]]]
#: (bucket, server, key) -> count.
KeyCounts = dict[tuple[int, str, str], int]
#: (bucket, server, type) -> [events, bots, bytes_added, bytes_removed].
RowCounts = dict[tuple[int, str, str], list[int]]

#: "YYYY-MM-DDTHH:MM" of UTC times -> their minute: one parse per minute of event time. Hot
#: loops look minutes up here directly and call `minute_of` only on a miss.
MINUTE_CACHE: dict[str, int | None] = {}
_minutes = MINUTE_CACHE
_MAX_CACHED = 100_000


def _parse_minute(dt: str) -> int | None:
    when = parse_dt(dt)
    if when is None:
        return None
    seconds = int(when)
    return seconds - seconds % MINUTE


def minute_of(dt: str | None) -> int | None:
    """The start of the UTC minute of an ISO 8601 time, in Unix seconds; None if unparsable.

    Times in UTC (ending in `Z`, as the stream sends them) are read by their first 16
    characters through a cache, so a minute is parsed once; other offsets are parsed whole.
    The cache holds only minutes of times that parsed; a later time of a cached minute is
    not parsed again, so its seconds are not checked.
    """
    if not dt:
        return None
    if dt[-1] == "Z" and dt[16:17] in (":", "Z"):
        prefix = dt[:16]
        try:
            return _minutes[prefix]
        except KeyError:
            pass
        minute = _parse_minute(dt)
        # Only a time that parses fills the cache: an unreadable one (`...T12:00:99Z`) must
        # not make every later event of its minute unreadable too.
        if minute is not None:
            if len(_minutes) >= _MAX_CACHED:
                _minutes.clear()
            _minutes[prefix] = minute
        return minute
    return _parse_minute(dt)


def length_change(event: RecentChange) -> int:
    """`length.new - length.old` (a missing old counts as 0); 0 without `length.new`."""
    length = event.length
    if length is None or length.new is None:
        return 0
    return length.new - (length.old or 0)
