"""The dashboard page: `GET /` and its static files, all shipped in the package (no CDN).

The files are read once from `wikipulse/static/` and served from memory with a strict
Content-Security-Policy: scripts, styles and requests to this origin only, no inline code, no
framing. The page itself is public (it holds no data); everything it shows comes from the
authenticated API (`/stats/live`, `/stats/timeseries`, `/stats/top`) and the open `/status`.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import Final

from fastapi import APIRouter, HTTPException, Request, Response, status

__all__ = ["SECURITY_HEADERS", "STATIC_FILES", "router", "static_file"]

#: The files under `/static/`, with their media types; nothing else is served from there.
STATIC_FILES: Final = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_PAGE: Final = "index.html"

#: Sent with the page and every static file.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@cache
def static_file(name: str) -> tuple[bytes, str]:
    """The bytes of a packaged static file and their ETag."""
    body = resources.files("wikipulse").joinpath("static", name).read_bytes()
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _answer(request: Request, name: str, media_type: str, cache_control: str) -> Response:
    body, etag = static_file(name)
    headers = {**SECURITY_HEADERS, "ETag": etag, "Cache-Control": cache_control}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


router = APIRouter(include_in_schema=False)


@router.get("/")
async def get_page(request: Request) -> Response:
    """The dashboard page; revalidated on every load, so a new version shows at once."""
    return _answer(request, _PAGE, "text/html; charset=utf-8", "no-cache")


@router.get("/static/{name}")
async def get_static(request: Request, name: str) -> Response:
    """One of the page's files; 404 for any name not in `STATIC_FILES`."""
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not found")
    return _answer(request, name, media_type, "no-cache")
