"""Counted events as the window hot loop records them, and packed column-wise; pure.

A worker process sends its events to the parent packed: unpickling a few long strings costs
the parent a fraction of unpickling a tuple per event, and the parent unpacks them only when
it sums them up (`WindowDelta.compact`).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from operator import itemgetter

__all__ = ["PackedEvents", "RawWindowEvent", "pack_events", "unpack_events"]

#: One counted event as the hot loop records it: (minute, server, type, bot, user, title,
#: length.new - length.old or 0); `WindowDelta.compact` sums them up in C (`Counter`).
RawWindowEvent = tuple[int, str, str | None, bool, str | None, str | None, int]
#: Columns of packed events: minutes, servers, types, bots, users, titles, diffs, count.
PackedEvents = tuple[bytes, str, str, bytes, str, str, bytes, int]
_SEP = "\0"


class _HasNul(ValueError):
    """A name holds the separator, so its column cannot be joined."""


def _join(names: Iterable[str]) -> str:
    items = list(names)
    joined = _SEP.join(items)
    if joined.count(_SEP) != max(len(items) - 1, 0):
        raise _HasNul
    return joined


def pack_events(raw: list[RawWindowEvent]) -> PackedEvents | None:
    """The events as columns; None if a name holds NUL or a number does not fit 64 bits."""
    try:
        return (
            array("q", map(itemgetter(0), raw)).tobytes(),
            _join(map(itemgetter(1), raw)),
            _join([kind or "" for kind in map(itemgetter(2), raw)]),
            bytes(map(itemgetter(3), raw)),
            _join([user or "" for user in map(itemgetter(4), raw)]),
            _join([title or "" for title in map(itemgetter(5), raw)]),
            array("q", map(itemgetter(6), raw)).tobytes(),
            len(raw),
        )
    except (OverflowError, _HasNul):
        return None


def unpack_events(columns: PackedEvents) -> list[RawWindowEvent]:
    """The events back as tuples (a missing type, user or title comes back empty)."""
    minutes_b, servers, kinds, bots, users, titles, diffs_b, count = columns
    minutes, diffs = array("q"), array("q")
    minutes.frombytes(minutes_b)
    diffs.frombytes(diffs_b)
    split = [c.split(_SEP) if count else [] for c in (servers, kinds, users, titles)]
    flags = [bool(b) for b in bots]
    return list(zip(minutes, split[0], split[1], flags, split[2], split[3], diffs, strict=True))
