"""`GET /stats` without the framework: the cached snapshot for a token verified before.

The `/stats` route in `api.py` stays the documented one and handles every case: a missing,
new or invalid token, a cache that is empty, a store that is down. This fast path only
answers the common case: the snapshot is cached and the bearer token is one
the `Authenticator` fully verified earlier and that has not expired. Anything else goes on to
the route, so every refusal is the route's own. The answer is the same bytes and headers the
route sends (`snapshot_response`), and it is counted in the request metrics like the route's.
The app (`app.WikipulseApp`) asks it first, before FastAPI's middleware and router, which cost
more than the answer itself.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from starlette.types import Scope, Send

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


class StatsFastPath:
    """Answer `GET /stats` from the cached snapshot for a known-good token, before any routing."""

    def __init__(self, services: Services, path: str = "/stats") -> None:
        self._services = services
        self._path = path

    async def answer(self, scope: Scope, send: Send) -> bool:
        """Answer the request and return True if it is the common case; else send nothing."""
        if scope["type"] != "http" or scope["path"] != self._path or scope["method"] != "GET":
            return False
        services = self._services
        snapshot = services.snapshots.current
        if snapshot is None or services.store is None:
            return False
        started = time.perf_counter()
        authorization = if_none_match = None
        for name, value in scope["headers"]:
            if name == b"authorization" and authorization is None:
                authorization = value
            elif name == b"if-none-match" and if_none_match is None:
                if_none_match = value
        if authorization is None or not self._verified(authorization):
            return False
        tag = None if if_none_match is None else if_none_match.decode("latin-1")
        status, headers, body = snapshot_response(snapshot, tag)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        services.metrics.request_done("GET", self._path, status, time.perf_counter() - started)
        return True

    def _verified(self, authorization: bytes) -> bool:
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        token = token.strip()  # as FastAPI's HTTPBearer reads it
        if scheme.lower() != "bearer" or not token:
            return False
        return self._services.auth.cached_subject(token) is not None
