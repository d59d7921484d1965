"""HTTP handlers of the time windows: `/stats/timeseries` and `/stats/top`, bearer token."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel

from wikipulse.auth import bearer_subject
from wikipulse.window_query import (
    WindowQueryError,
    WindowStore,
    series_body,
    series_query,
    top_body,
    top_query,
)

if TYPE_CHECKING:
    from wikipulse.bootstrap import Services

__all__ = ["Bucket", "TimeseriesResponse", "TopResponse", "router"]

log = logging.getLogger(__name__)

router = APIRouter()


class Bucket(BaseModel):
    """One bucket of a timeseries; bytes_removed is a positive number of bytes."""

    start: str
    total: int
    bots: int
    non_bots: int
    distinct_users: int
    by_type: dict[str, int]
    bytes_added: int
    bytes_removed: int


class TimeseriesResponse(BaseModel):
    """Every `step`-second bucket of [since, until), oldest first."""

    step: int
    since: str
    until: str
    buckets: list[Bucket]


class TopResponse(BaseModel):
    """The busiest servers, users or pages of [since, until), highest count first."""

    by: str
    since: str
    until: str
    items: list[dict[str, Any]]


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, invalid or expired token"},
    422: {"description": "A bad parameter; the message names it"},
    501: {"description": "The configured store keeps no time windows"},
    503: {"description": "The statistics store is unavailable"},
}
_TIME_DOC = "ISO 8601 (UTC unless an offset is given) or Unix seconds"


def _window_store(request: Request) -> WindowStore:
    services: Services = request.app.state.services
    store = services.store
    if store is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the statistics store is not open yet; try again shortly",
            headers={"Retry-After": "5"},
        )
    if not isinstance(store, WindowStore):
        raise HTTPException(
            status.HTTP_501_NOT_IMPLEMENTED,
            f"the {services.settings.store} store keeps no time windows yet",
        )
    return store


async def _newest(store: WindowStore) -> int | None:
    span = await store.window_span()
    return None if span is None else span[1]


def _bad(exc: WindowQueryError) -> HTTPException:
    return HTTPException(422, str(exc))


def _unavailable(exc: Exception) -> HTTPException:
    log.warning("reading the time windows failed: %s: %s", type(exc).__name__, exc)
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "the statistics store is unavailable; try again shortly",
        headers={"Retry-After": "5"},
    )


@router.get(
    "/stats/timeseries",
    response_model=TimeseriesResponse,
    tags=["statistics"],
    responses=_ERRORS,
)
async def get_timeseries(
    request: Request,
    _subject: Annotated[str, Depends(bearer_subject)],
    since: Annotated[str | None, Query(description=f"start, {_TIME_DOC}")] = None,
    until: Annotated[str | None, Query(description=f"end (excluded), {_TIME_DOC}")] = None,
    step: Annotated[str | None, Query(description="bucket seconds: 60, 300 or 3600")] = None,
    server_name: Annotated[str | None, Query(description="only this wiki")] = None,
) -> dict[str, Any]:
    """Events per bucket by event time; by default the hour ending at the newest event."""
    store = _window_store(request)
    services: Services = request.app.state.services
    try:
        newest = await _newest(store) if since is None or until is None else None
        query = series_query(
            since=since,
            until=until,
            step=step,
            server_name=server_name,
            newest=newest,
            now=services.clock(),
        )
        rows = await store.window_series(query)
    except WindowQueryError as exc:
        raise _bad(exc) from None
    except Exception as exc:
        raise _unavailable(exc) from None
    return series_body(query, rows)


@router.get("/stats/top", response_model=TopResponse, tags=["statistics"], responses=_ERRORS)
async def get_top(
    request: Request,
    _subject: Annotated[str, Depends(bearer_subject)],
    by: Annotated[str | None, Query(description="server_name, user or page")] = None,
    since: Annotated[str | None, Query(description=f"start, {_TIME_DOC}")] = None,
    until: Annotated[str | None, Query(description=f"end (excluded), {_TIME_DOC}")] = None,
    limit: Annotated[str | None, Query(description="1 to 100 items (default 10)")] = None,
) -> dict[str, Any]:
    """The busiest wikis, users or pages by event time; ties by key ascending."""
    store = _window_store(request)
    services: Services = request.app.state.services
    try:
        newest = await _newest(store) if since is None or until is None else None
        query = top_query(
            by=by, since=since, until=until, limit=limit, newest=newest, now=services.clock()
        )
        items = await store.window_top(query)
    except WindowQueryError as exc:
        raise _bad(exc) from None
    except Exception as exc:
        raise _unavailable(exc) from None
    return top_body(query, items)
