"""Folding a network read's events as one block: the live path's fold, with C-level loops.

`Aggregator.fold` spends about a microsecond of Python bytecode per event beyond decoding.
A read of the live stream brings a few hundred events, and nearly always every one of them
is valid, not a canary and new. `fold_block` folds such a block column-wise: each event is
decoded by one `map` call, its fields are read with `attrgetter` in `map`s, ids are checked
against each other and the dedup window with set operations, servers are counted with a
`Counter`, and the time-window tuples are built by one `zip`.

It folds nothing and returns False as soon as the block holds anything that needs a
per-event decision (bad UTF-8, an undecodable or invalid event, a canary, an id seen before
or twice in the block); the caller then folds the block with `Aggregator.fold`, so garbage is
counted and skipped exactly as one by one. The result of a block folded here is that of
`Aggregator.fold` on it (tests/test_fold_bulk.py compares the two on hostile blocks).
"""

from __future__ import annotations

from collections import Counter
from operator import attrgetter, itemgetter
from typing import cast

from wikipulse.events import CANARY_DOMAIN, DECODE_ERRORS, decode_json_only
from wikipulse.stats import Aggregator
from wikipulse.utf8 import all_valid_utf8
from wikipulse.windows import MINUTE_CACHE, minute_of

__all__ = ["fold_block"]

_META = attrgetter("meta")
_ID = attrgetter("id")
_DOMAIN = attrgetter("domain")
_DT = attrgetter("dt")
_BOT = attrgetter("bot")
_SERVER = attrgetter("server_name")
_USER = attrgetter("user")
_TYPE = attrgetter("type")
_TITLE = attrgetter("title")
_LENGTH = attrgetter("length")
_FIRST16 = itemgetter(slice(0, 16))
_LAST = itemgetter(-1)


def fold_block(agg: Aggregator, raws: list[bytes]) -> bool:
    """Fold `raws` into the aggregator's batch if every one is a valid, new, non-canary event.

    Returns False, having changed nothing, if any is not; the position is the caller's.
    """
    if not raws:
        return False
    # Bad UTF-8 anywhere makes an event malformed (msgspec checks only the strings it reads).
    if not all_valid_utf8(raws):
        return False
    try:
        events = list(map(decode_json_only, raws))
    except DECODE_ERRORS:
        return False
    metas = list(map(_META, events))
    if CANARY_DOMAIN in map(_DOMAIN, metas):
        return False
    ids = list(map(_ID, metas))
    distinct = set(ids)
    recent = agg.recent
    if len(distinct) != len(ids) or not recent.isdisjoint(distinct):
        return False
    recent.extend_new(ids)

    batch = agg.batch
    batch.touched = True
    count = len(events)
    bots = list(map(_BOT, events))
    bot_count = sum(bots)
    batch.total += count
    batch.bots += bot_count
    names = list(map(_SERVER, events))
    servers = batch.by_server_name
    get = servers.get
    for name, n in Counter(names).items():
        servers[name] = get(name, 0) + n
    users = list(map(_USER, events))
    batch.users.update(filter(None, users))
    batch.event_ids += ids
    dts = list(map(_DT, metas))
    if agg.keep_windows:
        minutes = _minutes(dts)
        diffs = [
            0 if n is None or n.new is None else n.new - (n.old or 0) for n in map(_LENGTH, events)
        ]
        rows = zip(
            minutes, names, map(_TYPE, events), bots, users, map(_TITLE, events), diffs, strict=True
        )
        if None in minutes:  # events without a readable time are in no window
            batch.windows.raw += [row for row in rows if row[0] is not None]
        else:
            batch.windows.raw += rows

    counters = agg.counters
    counters.counted += count
    # Only the last counted event's time matters (the lag), as in `Aggregator.fold`.
    if dts[-1] is not None:
        counters.last_dt = dts[-1]
    return True


def _minutes(dts: list[str | None]) -> list[int | None]:
    """Each time's minute as `Aggregator.fold` finds it (its cache, then `minute_of`).

    The common case, every time in UTC and its minute cached, is a few C-level passes (and no
    string made per event when the block's earliest and latest times share a minute). A new
    minute is parsed from the first time that has it, as one by one, and the lookup done
    again (a few times at most); a block with a missing, empty or non-UTC time, or one whose
    minute stays unknown, is done event by event.
    """
    if None in dts or "" in dts:
        return list(map(_minute, dts))
    texts = cast("list[str]", dts)
    if list(map(_LAST, texts)).count("Z") != len(texts):
        return list(map(_minute, dts))
    low, high = min(texts), max(texts)
    if low[:16] == high[:16]:  # every time between them shares that prefix: one minute
        minute = MINUTE_CACHE.get(low[:16])
        if minute is not None:
            return [minute] * len(texts)
    for _ in range(4):
        minutes: list[int | None] = list(map(MINUTE_CACHE.get, map(_FIRST16, texts)))
        if None not in minutes:
            return minutes
        first = minutes.index(None)
        if _minute(texts[first]) is None:
            break
    return list(map(_minute, dts))


def _minute(dt: str | None) -> int | None:
    """One event's minute exactly as the loop of `Aggregator.fold` computes it."""
    if not dt:
        return None
    minute = MINUTE_CACHE.get(dt[:16], -1) if dt[-1] == "Z" else -1
    if minute == -1:
        return minute_of(dt)
    return minute
