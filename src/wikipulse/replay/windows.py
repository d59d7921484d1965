"""The time windows of a replayed recording, as `replay --windows` prints them."""

from __future__ import annotations

from typing import Any

from wikipulse.window_query import (
    MAX_BUCKETS,
    STEPS,
    TOP_KINDS,
    SeriesQuery,
    TopQuery,
    WindowStore,
    series_body,
    top_body,
)
from wikipulse.windows import MINUTE

__all__ = ["window_report"]


async def window_report(store: WindowStore, limit: int = 10) -> dict[str, Any]:
    """The timeseries of the whole recording and its top lists, in the API's shapes.

    The step is the finest (60, 300 or 3600 s) that covers the recording in at most
    `MAX_BUCKETS` buckets; a longer recording is cut to its newest `MAX_BUCKETS` hours.
    """
    span = await store.window_span()
    if span is None:
        oldest = newest = 0
    else:
        oldest, newest = span
    end_minute = newest + MINUTE
    step = next((s for s in STEPS if (end_minute - oldest) // s < MAX_BUCKETS), STEPS[-1])
    until = -(-end_minute // step) * step
    since = max(oldest - oldest % step, until - MAX_BUCKETS * step)
    series = SeriesQuery(step, since, until)
    report: dict[str, Any] = {"timeseries": series_body(series, await store.window_series(series))}
    top: dict[str, Any] = {}
    for kind in TOP_KINDS:
        query = TopQuery(kind, since, until, limit)
        top[kind] = top_body(query, await store.window_top(query))
    report["top"] = top
    return report
