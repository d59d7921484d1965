"""A batch's time windows split into buckets (`Acc`), per minute or coarser; pure, no I/O.

A store's writer gets a batch as a `WindowDelta`: events recorded one tuple each (live reads, a
replay's packed ranges) or already summed into its three maps. `minute_accs` splits it per
minute straight from the recorded events when it can (half the cost of summing them into the
maps and walking those), else from the maps (`delta_accs`); Cassandra's writer uses the same
per-minute helpers (`recorded_minutes`, `minute_rows`, `server_keys`) to build its rows.
The SQL stores' writer and a replay's workers sum recorded events straight into stored blobs
in C where built (`c_minutes`), and use these sums only where it is not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from itertools import groupby
from operator import itemgetter
from typing import Any

from wikipulse.events import CANARY_DOMAIN, RecentChange
from wikipulse.window_blobs import Acc, Part, add_row, decode_part
from wikipulse.window_delta import WindowDelta
from wikipulse.window_packing import RawWindowEvent
from wikipulse.windows import MINUTE, MINUTE_CACHE, UNKNOWN_TYPE, MinuteBlobs, minute_of

_c_minutes: Callable[[list[RawWindowEvent]], MinuteBlobs] | None
#: wikipulse._merge.decoded_minutes: (events, canary domain, minute cache, minute_of) -> sums
_Decoded = Callable[
    [list[Any], str, dict[str, int | None], Callable[[str | None], int | None]], MinuteBlobs
]
_c_decoded: _Decoded | None
try:  # built from src/wikipulse/_merge.c, optional like the other extensions
    from wikipulse._merge import decoded_minutes as _c_decoded
    from wikipulse._merge import minutes as _c_minutes
except ImportError:  # installed without a C compiler
    _c_minutes = _c_decoded = None

__all__ = [
    "c_built",
    "c_minutes",
    "delta_accs",
    "events_accs",
    "minute_accs",
    "minute_rows",
    "recorded_accs",
    "recorded_minutes",
    "server_keys",
]


def delta_accs(delta: WindowDelta, granularity: int) -> dict[int, Acc]:
    """A batch's windows summed into buckets of `granularity` seconds."""
    delta.compact()
    accs: dict[int, Acc] = {}
    last, a = -1, Acc()  # the maps come in event order: a bucket is looked up once per run
    for (minute, server, kind), row in delta.counts.items():
        if minute != last:
            last, a = minute, _acc(accs, minute - minute % granularity)
        add_row(a.types, kind, row)
        add_row(a.rows.setdefault(server, {}), kind, row)
    last = -1
    for (minute, server, user), n in delta.users.items():
        if minute != last:
            last, a = minute, _acc(accs, minute - minute % granularity)
        users = a.users
        users[user] = users.get(user, 0) + n
        members = a.members.get(server)
        if members is None:
            a.members[server] = {user}
        else:
            members.add(user)
    last = -1
    for (minute, server, title), n in delta.pages.items():
        if minute != last:
            last, a = minute, _acc(accs, minute - minute % granularity)
        pages = a.pages
        key = (server, title)
        pages[key] = pages.get(key, 0) + n
    return accs


_MINUTE = itemgetter(0)
_SERVER_KIND = itemgetter(1, 2)
_SERVER_USER = itemgetter(1, 4)
_SERVER_TITLE = itemgetter(1, 5)
_USER = itemgetter(4)
_TITLE = itemgetter(5)
_BOT = itemgetter(3)
_DIFF = itemgetter(6)


def recorded_minutes(
    delta: WindowDelta, but_sums: bool = False
) -> list[tuple[int, list[RawWindowEvent]]] | None:
    """The delta's recorded events (`WindowDelta.recorded`) by minute, oldest first; None if
    some of it is summed into maps already."""
    raw = delta.recorded(but_sums)
    if raw is None:
        return None
    return [(minute, list(group)) for minute, group in groupby(sorted(raw, key=_MINUTE), _MINUTE)]


def minute_rows(events: list[RawWindowEvent]) -> dict[str, dict[str, list[int]]]:
    """Per wiki, per type: [events, bots, added, removed] of some recorded events."""
    rows: dict[str, dict[str, list[int]]] = {}
    for (server, kind), n in Counter(map(_SERVER_KIND, events)).items():
        # no type and an empty one are both counted as UNKNOWN_TYPE: add, never overwrite
        add_row(rows.setdefault(server, {}), kind or UNKNOWN_TYPE, (n, 0, 0, 0))
    for (server, kind), n in Counter(map(_SERVER_KIND, filter(_BOT, events))).items():
        rows[server][kind or UNKNOWN_TYPE][1] += n
    for _, server, kind, _, _, _, diff in filter(_DIFF, events):
        row = rows[server][kind or UNKNOWN_TYPE]
        if diff > 0:
            row[2] += diff
        else:
            row[3] -= diff
    return rows


def server_keys(events: list[RawWindowEvent], users: bool) -> dict[str, dict[str, int]]:
    """Per wiki: each user (or page title) of some recorded events with its count."""
    pairs = (_SERVER_USER, _USER) if users else (_SERVER_TITLE, _TITLE)
    out: dict[str, dict[str, int]] = {}
    for (server, key), n in Counter(map(pairs[0], filter(pairs[1], events))).items():
        have = out.get(server)
        if have is None:
            out[server] = {key: n}
        else:
            have[key] = n
    return out


def minute_accs(delta: WindowDelta) -> dict[int, Acc]:
    """A batch's windows per minute, all summed in Python: its recorded events
    (`recorded_accs`) and the minutes a worker summed (`WindowDelta.summed`), decoded from
    their blobs anew at each call, so the delta stays as it was. (The SQL stores' writer holds
    the latter as blobs instead: `stores.window_held.batch_minutes`.)"""
    accs = recorded_accs(delta)
    for sums in delta.summed():
        for minute, rows in sums.items():
            piece = Part()
            for dim, data in rows:
                decode_part(piece, dim, data)
            _acc(accs, minute).add_part(piece)
    return accs


def recorded_accs(delta: WindowDelta) -> dict[int, Acc]:
    """A batch's recorded events (not the minutes a worker summed) per minute: straight from
    the events when none is summed into the maps yet (`recorded_minutes`), else from them."""
    minutes = recorded_minutes(delta, but_sums=True)
    return delta_accs(delta, MINUTE) if minutes is None else events_accs(minutes)


def events_accs(minutes: list[tuple[int, list[RawWindowEvent]]]) -> dict[int, Acc]:
    """Recorded events, grouped by minute (`recorded_minutes`), summed per minute."""
    accs: dict[int, Acc] = {}
    for minute, events in minutes:
        a = accs[minute] = Acc()
        rows = a.rows = minute_rows(events)
        types = a.types
        for kinds in rows.values():
            for kind, row in kinds.items():
                add_row(types, kind, row)
        named = list(filter(_USER, events))
        a.users = dict(Counter(map(_USER, named)))
        members = a.members
        for server, user in set(map(_SERVER_USER, named)):
            have = members.get(server)
            if have is None:
                members[server] = {user}
            else:
                have.add(user)
        a.pages = dict(Counter(map(_SERVER_TITLE, filter(_TITLE, events))))
    return accs


def _acc(accs: dict[int, Acc], bucket: int) -> Acc:
    found = accs.get(bucket)
    if found is None:
        found = accs[bucket] = Acc()
    return found


def c_built() -> bool:
    """Whether `c_minutes` can sum in C (the extension is built)."""
    return _c_minutes is not None and _c_decoded is not None


def c_minutes(
    rows: list[RawWindowEvent], decoded: list[RecentChange] | None = None
) -> list[MinuteBlobs] | None:
    """Recorded rows and decoded events summed per minute as stored blobs in C (the decoded
    events read in place: `wikipulse._merge.decoded_minutes`), one dict for each of the two
    that holds any; None where Python must sum them: the extension is not built, or it
    refuses what it cannot hold (a name with a lone surrogate, a length or a sum past 64
    bits, a name that is no str)."""
    if _c_minutes is None or _c_decoded is None:  # as c_built(), narrowed for the checker
        return None
    try:
        sums = [_c_decoded(decoded, CANARY_DOMAIN, MINUTE_CACHE, minute_of)] if decoded else []
        return [*sums, _c_minutes(rows)] if rows else sums
    except (OverflowError, TypeError, UnicodeEncodeError):
        return None
