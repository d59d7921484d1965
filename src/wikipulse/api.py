"""HTTP handlers: `/status`, `/ready`, `/metrics`, `/login` and `/stats`, thin over `Services`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from wikipulse import __version__
from wikipulse.auth import LoginBusy, bearer_subject
from wikipulse.fastpath import snapshot_response
from wikipulse.login_form import LOGIN_BODY_DOC, read_login
from wikipulse.ratelimit import client_address

if TYPE_CHECKING:
    from wikipulse.bootstrap import Services

__all__ = [
    "ReadyResponse",
    "StatsResponse",
    "StatusResponse",
    "TokenResponse",
    "router",
]

log = logging.getLogger(__name__)

_RETRY_AFTER_SECONDS = "5"


class TokenResponse(BaseModel):
    """A bearer token and how many seconds it lives."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105  # the OAuth2 token type, not a secret
    expires_in: int


class StatsResponse(BaseModel):
    """The statistics: totals, bots, distinct users and events per wiki, busiest first."""

    total: int
    distinct_users: int
    bots: int
    non_bots: int
    by_server_name: dict[str, int]


class StatusResponse(BaseModel):
    """Liveness and what the stream consumer is doing."""

    status: Literal["ok"] = "ok"
    version: str
    store: str
    #: `serve`, `api` (no consumer) or `ingest` (no API).
    role: str = "serve"
    consumer_running: bool
    consumer: dict[str, Any]
    #: `ingest` only: whether this process holds the writer's lease, who does, the token.
    lease: dict[str, Any] | None = None


class ReadyResponse(BaseModel):
    """Whether this instance should receive traffic, and if not, why."""

    ready: bool
    reasons: list[str]


class ErrorResponse(BaseModel):
    """Why a request was refused."""

    detail: str


# Routes only: the router holds no state, everything lives in `app.state.services`.
router = APIRouter()


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


@router.get("/status", response_model=StatusResponse, tags=["service"])
async def get_status(request: Request) -> StatusResponse:
    """Liveness: answer whenever the process serves, with the consumer's state; needs no token."""
    services = _services(request)
    return StatusResponse(
        version=__version__,
        store=services.settings.store,
        role=services.role,
        consumer_running=services.consumer_running(),
        consumer=services.consumer.as_dict(services.clock()),
        lease=None if services.lease_status is None else services.lease_status(),
    )


@router.get(
    "/ready",
    response_model=ReadyResponse,
    tags=["service"],
    responses={503: {"model": ReadyResponse, "description": "Not ready, with the reasons"}},
)
async def get_ready(request: Request) -> JSONResponse:
    """Readiness: 200 when the store is open and healthy and the consumer runs, else 503."""
    services = _services(request)
    reasons = []
    if services.store is None:
        reasons.append("the statistics store is not open")
    elif not services.consumer.store_ok:
        reasons.append("the last commit to the statistics store failed")
    if services.role != "api" and not services.consumer_running():
        reasons.append("the stream consumer is not running")
    body = ReadyResponse(ready=not reasons, reasons=reasons)
    return JSONResponse(
        body.model_dump(),
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE if reasons else status.HTTP_200_OK,
    )


@router.get(
    "/metrics",
    tags=["service"],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def get_metrics(request: Request) -> Response:
    """Prometheus metrics (OpenMetrics if the scraper asks); needs no token.

    They hold counts and timings, never user names or secrets, and a scraper cannot log in, so
    the endpoint is open like `/status`; keep it off the public internet all the same (the
    reverse proxy or network policy that fronts the API should not route `/metrics`).
    """
    metrics = _services(request).metrics
    body, content_type = metrics.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)


@router.post(
    "/login",
    response_model=TokenResponse,
    tags=["auth"],
    openapi_extra=LOGIN_BODY_DOC,
    responses={
        401: {"model": ErrorResponse, "description": "Wrong user name or password"},
        413: {"model": ErrorResponse, "description": "Body too large"},
        415: {"model": ErrorResponse, "description": "Neither JSON nor a form"},
        422: {"description": "Malformed body: not a user name and password"},
        429: {
            "model": ErrorResponse,
            "description": "Too many attempts from this address or for this user; see Retry-After",
        },
        503: {"model": ErrorResponse, "description": "Too many logins at once; see Retry-After"},
    },
)
async def login(request: Request, response: Response) -> TokenResponse:
    """Exchange a user name and password for a bearer token.

    Attempts are rate-limited per client address and per user name (429 with Retry-After),
    and the password checks waiting at once are bounded (503 with Retry-After).
    """
    form = await read_login(request)
    services = _services(request)
    auth, guard = services.auth, services.login_guard
    peer = request.client.host if request.client else None
    address = client_address(peer, request.headers, guard.trusted_proxies)
    # Checked before a token is taken, and nothing awaits between here and the check.
    if auth.queue_full:
        guard.busy(address, form.username)
        raise _busy()
    refusal = guard.attempt(address, form.username)
    if refusal is not None:
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail="too many login attempts; try again later",
            headers={"Retry-After": str(refusal.retry_after)},
        )
    try:
        accepted = await auth.authenticate(form.username, form.password, address)
    except LoginBusy:
        raise _busy() from None
    if not accepted:
        # One answer whether the user exists or not, so names cannot be probed.
        log.warning(
            "login refused: wrong password or unknown user %r from %s", form.username, address
        )
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="incorrect username or password",
            headers={"WWW-Authenticate": "Bearer"},
        )
    log.info("login: token issued to %r from %s", form.username, address)
    response.headers["Cache-Control"] = "no-store"  # RFC 6749 5.1: tokens are not cached
    return TokenResponse(access_token=auth.issue(form.username), expires_in=auth.ttl_seconds)


@router.get(
    "/stats",
    response_model=StatsResponse,
    tags=["statistics"],
    responses={
        304: {"description": "Unchanged since the `ETag` sent in `If-None-Match`; no body"},
        401: {"model": ErrorResponse, "description": "Missing, invalid or expired token"},
        503: {"model": ErrorResponse, "description": "The statistics store is unavailable"},
    },
)
async def get_stats(
    request: Request, _subject: Annotated[str, Depends(bearer_subject)]
) -> Response:
    """The statistics as of the last committed batch, with an `ETag`; needs a bearer token.

    Send the tag back in `If-None-Match` to get 304 and no body while nothing has changed.
    """
    services = _services(request)
    store = services.store
    if store is None:
        raise _unavailable("the statistics store is not open yet; try again shortly")
    snapshot = services.snapshots.current
    if snapshot is None:
        try:
            snapshot = await services.snapshots.refresh(store.snapshot)
        except Exception as exc:  # whatever the backend raises, the client gets a clean 503
            log.warning("reading the statistics failed: %s: %s", type(exc).__name__, exc)
            raise _unavailable("the statistics store is unavailable; try again shortly") from None
    code, headers, body = snapshot_response(snapshot, request.headers.get("if-none-match"))
    response = Response(body, status_code=code)
    response.raw_headers = headers
    return response


def _busy() -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        detail="too many logins at once; try again shortly",
        headers={"Retry-After": "1"},
    )


def _unavailable(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        detail=detail,
        headers={"Retry-After": _RETRY_AFTER_SECONDS},
    )
