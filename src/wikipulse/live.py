"""`GET /stats/live` over HTTP: the route, the server that ends its streams, its metrics.

The fan-out itself (`LiveFeed`, one per app, in `Services.live`) is in `broadcast`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import jwt
import uvicorn
from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import StreamingResponse
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from wikipulse.auth import bearer_subject
from wikipulse.broadcast import LiveFeed
from wikipulse.metrics import SampledCollector

if TYPE_CHECKING:
    import socket

    from fastapi import FastAPI

__all__ = ["LiveCollector", "LiveServer", "live_feed", "router"]


def live_feed(app: FastAPI) -> LiveFeed:
    """The app's live feed (`Services.live`)."""
    feed: LiveFeed = app.state.services.live
    return feed


class LiveServer(uvicorn.Server):
    """uvicorn's server, which ends the `/stats/live` streams first when it shuts down.

    uvicorn waits for every open response before it stops, and a live stream never ends by
    itself: without this, SIGTERM would hang until the clients went away.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """End the live streams, then shut down as uvicorn does."""
        app = self.config.app
        services = getattr(getattr(app, "state", None), "services", None)
        feed = getattr(services, "live", None)
        if isinstance(feed, LiveFeed):
            feed.close()
        await super().shutdown(sockets)


class LiveCollector(SampledCollector):
    """Prometheus figures of the live feed: clients connected, messages published."""

    def __init__(self, feed: LiveFeed) -> None:
        self._feed = feed

    def _metrics(self, *, sample: bool) -> Iterator[Metric]:
        feed = self._feed
        yield GaugeMetricFamily(
            "wikipulse_live_clients",
            "Clients following /stats/live now.",
            value=float(feed.clients) if sample else None,
        )
        yield CounterMetricFamily(
            "wikipulse_live_messages_published",
            "Messages built and sent to the /stats/live clients (each to all of them).",
            value=float(feed.published) if sample else None,
        )


def _token_expiry(request: Request) -> float | None:
    """The `exp` of the request's bearer token, which `bearer_subject` has already verified."""
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) else None


router = APIRouter()


@router.get(
    "/stats/live",
    tags=["statistics"],
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: stats` with the `/stats` body at once and after each "
            "change (and `event: bucket` with the newest minute when time windows exist); a "
            "comment every 15 s; `event: expired` when the token expires, then the end",
        },
        401: {"description": "Missing, invalid or expired token"},
    },
)
async def get_live(
    request: Request, _subject: Annotated[str, Depends(bearer_subject)]
) -> StreamingResponse:
    """The statistics as Server-Sent Events, pushed after each commit that changed them."""
    feed = live_feed(request.app)
    if feed.stats is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the statistics store is not open yet; try again shortly",
            headers={"Retry-After": "5"},
        )
    return StreamingResponse(
        feed.messages(_token_expiry(request)),
        media_type="text/event-stream",
        headers={
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx: pass each message on at once
        },
    )
