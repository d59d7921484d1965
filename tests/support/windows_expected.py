"""An independent count of the time windows of a file of events, with the stdlib only.

It shares no code with the package: events are picked exactly as `counting.expected_stats`
picks them (valid, non-canary, each meta.id once), then put into buckets by a plain loop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.support.counting import counted


@dataclass(frozen=True)
class Counted:
    """One counted event, as the windows see it."""

    second: int
    server: str
    kind: str
    bot: bool
    user: str
    title: str
    diff: int


def counted_events(lines: Iterable[bytes | str]) -> list[Counted]:
    """The counted events that have a readable meta.dt, in file order."""
    out: list[Counted] = []
    for event in counted(lines):
        meta = event["meta"]
        if not meta.get("dt"):
            continue
        when = datetime.fromisoformat(meta["dt"].replace("Z", "+00:00"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        length = event.get("length") or {}
        diff = 0
        if length.get("new") is not None:
            diff = length["new"] - (length.get("old") or 0)
        out.append(
            Counted(
                int(when.timestamp()),
                event["server_name"],
                event.get("type") or "unknown",
                event["bot"],
                event.get("user") or "",
                event.get("title") or "",
                diff,
            )
        )
    return out


def iso(seconds: int) -> str:
    """Unix seconds as ISO 8601 UTC with a Z."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expected_series(
    events: list[Counted], step: int, since: int, until: int, server: str | None = None
) -> dict[str, Any]:
    """The /stats/timeseries body for [since, until) (already aligned to step)."""
    grouped: dict[int, list[Counted]] = {}
    for e in events:
        if since <= e.second < until and (server is None or e.server == server):
            grouped.setdefault(e.second - e.second % step, []).append(e)
    buckets = []
    for start in range(since, until, step):
        inside = grouped.get(start, [])
        by_type: dict[str, int] = {}
        for e in inside:
            by_type[e.kind] = by_type.get(e.kind, 0) + 1
        bots = sum(1 for e in inside if e.bot)
        buckets.append(
            {
                "start": iso(start),
                "total": len(inside),
                "bots": bots,
                "non_bots": len(inside) - bots,
                "distinct_users": len({e.user for e in inside if e.user}),
                "by_type": dict(sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))),
                "bytes_added": sum(e.diff for e in inside if e.diff > 0),
                "bytes_removed": -sum(e.diff for e in inside if e.diff < 0),
            }
        )
    return {"step": step, "since": iso(since), "until": iso(until), "buckets": buckets}


def expected_top(
    events: list[Counted], by: str, since: int, until: int, limit: int = 10
) -> dict[str, Any]:
    """The /stats/top body for [since, until)."""
    counts: dict[tuple[str, ...], int] = {}
    for e in events:
        if not since <= e.second < until:
            continue
        if by == "server_name":
            key: tuple[str, ...] = (e.server,)
        elif by == "user":
            if not e.user:
                continue
            key = (e.user,)
        else:
            if not e.title:
                continue
            key = (e.server, e.title)
        counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    if by == "server_name":
        items = [{"server_name": k[0], "count": n} for k, n in ranked]
    elif by == "user":
        items = [{"user": k[0], "count": n} for k, n in ranked]
    else:
        items = [{"server_name": k[0], "title": k[1], "count": n} for k, n in ranked]
    return {"by": by, "since": iso(since), "until": iso(until), "items": items}
