"""What one response of the stream server is worth: accepted or why not, how long to wait
before the next try, and its body inflated in bounded steps.

Pure functions of the response (no connection state), kept apart from `live.LiveSource`, which
owns the reconnect loop, the resume point and the counters.
"""

from __future__ import annotations

import email.utils
import re
import zlib
from collections.abc import AsyncGenerator, Callable

import httpx

__all__ = ["EVENT_STREAM", "ConnectionEnded", "check", "inflated", "retry_after"]

EVENT_STREAM = "text/event-stream"
# RFC 9110 says delay-seconds is an integer; a decimal costs nothing to accept.
_DELAY_SECONDS = re.compile(r"\s*(\d{1,9}(?:\.\d+)?)\s*")
#: Decompressed bytes produced per step, so that a compression bomb never sits in memory.
_INFLATE_STEP = 64 * 1024
#: Decompressed bytes allowed per compressed byte (JSON compresses ~10:1; bombs ~1000:1).
MAX_INFLATE_RATIO = 100


class ConnectionEnded(Exception):
    """A connection ended badly; `delay` is how long to wait (None: exponential back-off)."""

    def __init__(self, reason: str, delay: float | None = None, *, forbidden: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.delay = delay
        self.forbidden = forbidden


def retry_after(value: str | None, *, now: float, cap: float) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or HTTP-date), at most `cap`
    (a bogus far-off date must not park the consumer for ever); None if it has none."""
    if value is None:
        return None
    match = _DELAY_SECONDS.fullmatch(value)
    if match:
        return min(float(match.group(1)), cap)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(when.timestamp() - now, 0.0), cap)


def check(
    response: httpx.Response,
    *,
    host: str,
    user_agent: str,
    forbidden_retry: float,
    wait: Callable[[str | None], float | None],
) -> None:
    """Raise ConnectionEnded unless the response is a 200 event stream; `wait` turns a
    Retry-After header into seconds."""
    status = response.status_code
    if status == 403:
        raise ConnectionEnded(
            f"HTTP 403: {host} refused the User-Agent {user_agent!r}; set "
            "WIKIPULSE_USER_AGENT to name this tool and a contact "
            "(https://meta.wikimedia.org/wiki/User-Agent_policy)",
            forbidden_retry,
            forbidden=True,
        )
    if status in (429, 503):
        delay = wait(response.headers.get("retry-after"))
        raise ConnectionEnded(f"HTTP {status} (Retry-After: {delay})", delay)
    if status != 200:
        raise ConnectionEnded(f"HTTP {status} from {host}")
    ctype = response.headers.get("content-type", "")
    if ctype.partition(";")[0].strip().lower() != EVENT_STREAM:
        raise ConnectionEnded(f"HTTP 200 with content type {ctype!r}, not an event stream")


async def inflated(
    response: httpx.Response, *, slack: int, on_bomb: Callable[[], None]
) -> AsyncGenerator[bytes, None]:
    """The body's bytes, inflated step by step if the server compressed it anyway.

    We ask for `identity`; a server that still sends gzip or deflate is decoded in bounded
    steps (never the whole inflation of a chunk at once) and to at most MAX_INFLATE_RATIO times
    the compressed size plus `slack` bytes, so a compression bomb costs neither memory nor
    minutes of CPU: past that, `on_bomb` is called and the connection dropped.
    """
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        async for chunk in response.aiter_raw():
            yield chunk
        return
    if encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
    elif encoding == "deflate":
        inflater = zlib.decompressobj(zlib.MAX_WBITS)
    else:
        raise ConnectionEnded(f"unsupported Content-Encoding {encoding!r}")
    received = produced = 0
    async for chunk in response.aiter_raw():
        received += len(chunk)
        pending = chunk
        while True:
            try:
                out = inflater.decompress(pending, _INFLATE_STEP)
            except zlib.error as exc:
                raise ConnectionEnded(f"corrupt {encoding} body: {exc}") from None
            pending = inflater.unconsumed_tail
            produced += len(out)
            if produced > received * MAX_INFLATE_RATIO + slack:
                on_bomb()
                raise ConnectionEnded(
                    f"the {encoding} body inflates more than {MAX_INFLATE_RATIO} times "
                    "(a compression bomb); dropped the connection"
                )
            if out:
                yield out
            if not pending and len(out) < _INFLATE_STEP:
                break
