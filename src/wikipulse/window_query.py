"""Time-window queries: parameters, the rows a store returns, and the JSON bodies; pure.

A store that keeps windows implements `WindowStore`; this module turns what the API or the
command line asks into the bucket-aligned ranges and granularities a store reads, and the
store's rows into the bodies of `/stats/timeseries` and `/stats/top`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

from wikipulse.windows import HOUR, MINUTE, STEPS

__all__ = [
    "MAX_BUCKETS",
    "STEPS",
    "TOP_KINDS",
    "Range",
    "SeriesQuery",
    "SeriesRows",
    "TopItem",
    "TopKind",
    "TopQuery",
    "WindowQueryError",
    "WindowStore",
    "iso",
    "parse_instant",
    "series_body",
    "series_query",
    "split_levels",
    "split_range",
    "top_body",
    "top_query",
]

#: At most this many buckets in one timeseries.
MAX_BUCKETS = 10_000
TopKind = Literal["server_name", "user", "page"]
TOP_KINDS: tuple[TopKind, ...] = ("server_name", "user", "page")
FIVE_MINUTES = 300
_MAX_TIME = 253_402_300_799  # 9999-12-31T23:59:59Z


class WindowQueryError(ValueError):
    """A bad query parameter; `param` names it, the message says what is wrong."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


@dataclass(frozen=True, slots=True)
class Range:
    """Buckets of `granularity` seconds starting in [since, until), all aligned to it."""

    granularity: int
    since: int
    until: int


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    """A timeseries: `step`-second buckets over [since, until), of one wiki or all."""

    step: int
    since: int
    until: int
    server_name: str | None = None

    @property
    def granularity(self) -> int:
        """The stored granularity the buckets are summed from."""
        return HOUR if self.step % HOUR == 0 else MINUTE


@dataclass(frozen=True, slots=True)
class TopQuery:
    """The `limit` busiest keys of one kind over [since, until) (whole minutes)."""

    by: TopKind
    since: int
    until: int
    limit: int = 10

    def ranges(self) -> list[Range]:
        """Whole hours from the hourly rows, the minutes at either edge from the minute rows."""
        return split_range(self.since, self.until)


@dataclass(frozen=True, slots=True)
class SeriesRows:
    """What a store returns for a timeseries, each row's bucket aligned to the step.

    `counts`: (bucket, type, events, bots, bytes_added, bytes_removed), one row per bucket and
    type; `users`: (bucket, distinct users).
    """

    counts: Sequence[tuple[int, str, int, int, int, int]]
    users: Sequence[tuple[int, int]]


#: A top key and its count: (server_name,), (user,) or (server_name, title).
TopItem = tuple[tuple[str, ...], int]


@runtime_checkable
class WindowStore(Protocol):
    """A store that keeps time windows with its counters."""

    async def window_span(self) -> tuple[int, int] | None:
        """The oldest and newest minute kept, or None when no window holds an event."""
        ...

    async def window_series(self, query: SeriesQuery) -> SeriesRows:
        """The rows of a timeseries, read as of one commit."""
        ...

    async def window_top(self, query: TopQuery) -> list[TopItem]:
        """The busiest keys, highest count first, ties by key ascending."""
        ...

    async def prune_windows(self) -> int:
        """Drop what is older than the retention period now; return how many rows went."""
        ...


def split_range(since: int, until: int) -> list[Range]:
    """Cover minute-aligned [since, until) with hourly ranges where whole, minutes elsewhere."""
    first_hour = -(-since // HOUR) * HOUR
    last_hour = until - until % HOUR
    if first_hour >= last_hour:
        return [Range(MINUTE, since, until)] if since < until else []
    ranges = [Range(MINUTE, since, first_hour)] if since < first_hour else []
    ranges.append(Range(HOUR, first_hour, last_hour))
    if last_hour < until:
        ranges.append(Range(MINUTE, last_hour, until))
    return ranges


def split_levels(since: int, until: int) -> list[Range]:
    """Cover minute-aligned [since, until) with hours where whole, then 5 minutes, then minutes.

    The SQL stores keep 5-minute buckets too, so a window's ragged edges read at most 11
    five-minute and 4 minute buckets each instead of up to 59 minutes.
    """
    out: list[Range] = []
    for part in split_range(since, until):
        if part.granularity == HOUR:
            out.append(part)
            continue
        lo = -(-part.since // FIVE_MINUTES) * FIVE_MINUTES
        hi = part.until - part.until % FIVE_MINUTES
        if lo >= hi:
            out.append(part)
            continue
        if part.since < lo:
            out.append(Range(MINUTE, part.since, lo))
        out.append(Range(FIVE_MINUTES, lo, hi))
        if hi < part.until:
            out.append(Range(MINUTE, hi, part.until))
    return out


def parse_instant(value: str, param: str) -> int:
    """Unix seconds (e.g. `1793534400`) or ISO 8601 (UTC unless an offset is given)."""
    text = value.strip()
    try:
        seconds = int(float(text)) if _is_number(text) else _iso_seconds(text)
    except (ValueError, OverflowError):
        raise WindowQueryError(param, f"{value!r} is neither ISO 8601 nor Unix seconds") from None
    if not 0 <= seconds <= _MAX_TIME:
        raise WindowQueryError(param, f"{value!r} is out of range")
    return seconds


def _is_number(text: str) -> bool:
    return text.replace(".", "", 1).lstrip("-").isdigit()


def _iso_seconds(text: str) -> int:
    when = datetime.fromisoformat(text.replace("z", "Z"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def iso(seconds: int) -> str:
    """Unix seconds as ISO 8601 UTC with a `Z`."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bounds(
    since: str | None, until: str | None, step: int, newest: int | None, now: float
) -> tuple[int, int]:
    """[since, until) rounded out to `step`; by default the hour ending at the newest event."""
    if until is not None:
        end = parse_instant(until, "until")
    else:
        # The newest minute's events run to its end; with nothing counted, the wall clock.
        end = newest + MINUTE if newest is not None else int(now)
    start = parse_instant(since, "since") if since is not None else None
    if until is None and start is not None and start >= end:
        end = start + HOUR
    end = -(-end // step) * step
    start = end - HOUR if start is None else start - start % step
    if start >= end:
        raise WindowQueryError("since", "must be before until")
    return start, end


def series_query(
    *,
    since: str | None,
    until: str | None,
    step: str | None,
    server_name: str | None,
    newest: int | None,
    now: float,
) -> SeriesQuery:
    """Validate the parameters of `/stats/timeseries`; raise WindowQueryError if bad."""
    size = 60
    if step is not None:
        if not step.strip().isdigit() or int(step) not in STEPS:
            raise WindowQueryError("step", f"must be one of {', '.join(map(str, STEPS))} seconds")
        size = int(step)
    start, end = _bounds(since, until, size, newest, now)
    if (end - start) // size > MAX_BUCKETS:
        raise WindowQueryError(
            "since", f"the window holds more than {MAX_BUCKETS} buckets; shorten it or widen step"
        )
    if server_name is not None and not server_name:
        raise WindowQueryError("server_name", "must not be empty")
    return SeriesQuery(size, start, end, server_name)


def top_query(
    *,
    by: str | None,
    since: str | None,
    until: str | None,
    limit: str | None,
    newest: int | None,
    now: float,
) -> TopQuery:
    """Validate the parameters of `/stats/top`; raise WindowQueryError if bad."""
    if by not in TOP_KINDS:
        raise WindowQueryError("by", f"must be one of {', '.join(TOP_KINDS)}")
    count = 10
    if limit is not None:
        if not limit.strip().isdigit() or not 1 <= int(limit) <= 100:
            raise WindowQueryError("limit", "must be a whole number from 1 to 100")
        count = int(limit)
    start, end = _bounds(since, until, MINUTE, newest, now)
    return TopQuery(by, start, end, count)


def series_body(query: SeriesQuery, rows: SeriesRows) -> dict[str, Any]:
    """The `/stats/timeseries` body: every bucket of the window, zeros included, oldest first."""
    step = query.step
    buckets: dict[int, dict[str, Any]] = {}
    for start in range(query.since, query.until, step):
        buckets[start] = {
            "start": iso(start),
            "total": 0,
            "bots": 0,
            "non_bots": 0,
            "distinct_users": 0,
            "by_type": {},
            "bytes_added": 0,
            "bytes_removed": 0,
        }
    for bucket, kind, events, bots, added, removed in rows.counts:
        body = buckets.get(bucket)
        if body is None:
            continue
        body["total"] += events
        body["bots"] += bots
        body["non_bots"] += events - bots
        body["by_type"][kind] = body["by_type"].get(kind, 0) + events
        body["bytes_added"] += added
        body["bytes_removed"] += removed
    for bucket, users in rows.users:
        if bucket in buckets:
            buckets[bucket]["distinct_users"] = users
    for body in buckets.values():
        body["by_type"] = dict(sorted(body["by_type"].items(), key=lambda kv: (-kv[1], kv[0])))
    return {
        "step": step,
        "since": iso(query.since),
        "until": iso(query.until),
        "buckets": list(buckets.values()),
    }


def top_body(query: TopQuery, items: list[TopItem]) -> dict[str, Any]:
    """The `/stats/top` body: items highest count first, ties by key ascending."""
    ordered = sorted(items, key=lambda item: (-item[1], item[0]))[: query.limit]
    out: list[dict[str, Any]] = []
    for key, count in ordered:
        if query.by == "server_name":
            out.append({"server_name": key[0], "count": count})
        elif query.by == "user":
            out.append({"user": key[0], "count": count})
        else:
            out.append({"server_name": key[0], "title": key[1], "count": count})
    return {"by": query.by, "since": iso(query.since), "until": iso(query.until), "items": out}
