"""`GET /stats` without the framework: the cached snapshot for a token verified before.

The `/stats` route in `api.py` stays the documented one and handles every case: a missing,
new or invalid token, a cache that is empty, a store that is down. This ASGI middleware only
answers the common case before routing: the snapshot is cached and the bearer token is one
the `Authenticator` fully verified earlier and that has not expired. Anything else goes on to
the route, so every refusal is the route's own. The answer is the same bytes and headers the
route sends (`snapshot_response`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Receive, Scope, Send

from wikipulse.snapshots import EncodedSnapshot, etag_matches

if TYPE_CHECKING:
    from wikipulse.bootstrap import Services

__all__ = ["CACHE_CONTROL", "StatsFastPath", "snapshot_response"]

#: Clients may keep the body but must ask again (with If-None-Match) before reusing it.
CACHE_CONTROL = "private, no-cache"
_JSON = b"application/json"


def snapshot_response(
    snapshot: EncodedSnapshot, if_none_match: str | None
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of `/stats`: 304 without a body if the client has this tag."""
    etag = snapshot.etag.encode()
    if if_none_match is not None and etag_matches(if_none_match, snapshot.etag):
        return 304, [(b"etag", etag), (b"cache-control", CACHE_CONTROL.encode())], b""
    body = snapshot.body
    headers = [
        (b"content-type", _JSON),
        (b"content-length", str(len(body)).encode()),
        (b"etag", etag),
        (b"cache-control", CACHE_CONTROL.encode()),
    ]
    return 200, headers, body


@dataclass(frozen=True, slots=True)
class _RouteLabel:
    """What the router leaves in `scope["route"]`, as far as the request metrics read it."""

    path: str


class StatsFastPath:
    """ASGI middleware: answer `GET /stats` from the cached snapshot for a known-good token."""

    def __init__(self, app: ASGIApp, services: Services, path: str = "/stats") -> None:
        self.app = app
        self._services = services
        #: Put in the scope as the router would, so request metrics name the route.
        self._route = _RouteLabel(path)
        self._path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the request here if it is the common case, else pass it on unchanged."""
        if scope["type"] == "http" and scope["path"] == self._path and scope["method"] == "GET":
            services = self._services
            snapshot = services.snapshots.current
            if snapshot is not None and services.store is not None:
                authorization = if_none_match = None
                for name, value in scope["headers"]:
                    if name == b"authorization" and authorization is None:
                        authorization = value
                    elif name == b"if-none-match" and if_none_match is None:
                        if_none_match = value
                if authorization is not None and self._verified(authorization):
                    scope["route"] = self._route
                    status, headers, body = snapshot_response(
                        snapshot, None if if_none_match is None else if_none_match.decode("latin-1")
                    )
                    await send(
                        {"type": "http.response.start", "status": status, "headers": headers}
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    def _verified(self, authorization: bytes) -> bool:
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        token = token.strip()  # as FastAPI's HTTPBearer reads it
        if scheme.lower() != "bearer" or not token:
            return False
        return self._services.auth.cached_subject(token) is not None
