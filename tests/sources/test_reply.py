"""One response's worth (`sources/reply.py`): the inflation guard, Retry-After, acceptance."""

from __future__ import annotations

import email.utils
import gzip
import zlib
from collections.abc import AsyncIterator

import httpx
import pytest

from wikipulse.sources import reply

pytestmark = pytest.mark.anyio

SSE = {"Content-Type": "text/event-stream"}


class _Wire(httpx.AsyncByteStream):
    """A body as it comes off the wire, in 16 KiB reads, not decoded by httpx."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for at in range(0, len(self._body), 16384):
            yield self._body[at : at + 16384]


def _response(encoding: str, body: bytes) -> httpx.Response:
    return httpx.Response(200, headers={**SSE, "Content-Encoding": encoding}, stream=_Wire(body))


async def _drain(response: httpx.Response, slack: int, bombs: list[int]) -> list[bytes]:
    out: list[bytes] = []
    async for chunk in reply.inflated(response, slack=slack, on_bomb=lambda: bombs.append(1)):
        out.append(chunk)
    return out


async def test_a_bomb_of_small_lines_is_cut_at_the_inflation_ratio() -> None:
    """Comment lines never make an event too large, so only the ratio stops this body:
    20 MB of `: x` lines in ~20 KB of gzip."""
    body = gzip.compress(b": x\n" * 5_000_000, compresslevel=9)
    response = _response("gzip", body)
    bombs: list[int] = []
    got: list[bytes] = []

    async def drain() -> None:
        async for chunk in reply.inflated(response, slack=1000, on_bomb=lambda: bombs.append(1)):
            got.append(chunk)

    with pytest.raises(reply.ConnectionEnded, match="compression bomb"):
        await drain()
    assert bombs == [1]
    produced = sum(map(len, got))
    assert 0 < produced <= len(body) * reply.MAX_INFLATE_RATIO + 1000


@pytest.mark.parametrize(
    ("encoding", "pack"),
    [
        ("gzip", lambda b: gzip.compress(b)),
        ("deflate", zlib.compress),
        ("identity", lambda b: b),
    ],
)
async def test_an_honest_body_comes_out_whole(encoding: str, pack: object) -> None:
    data = b"".join(b'id: %d\ndata: {"n": %d}\n\n' % (i, i) for i in range(20_000))
    assert callable(pack)
    response = _response(encoding, pack(data))
    bombs: list[int] = []
    assert b"".join(await _drain(response, 1 << 20, bombs)) == data
    assert bombs == []


async def test_a_corrupt_or_unknown_encoding_ends_the_connection() -> None:
    corrupt = _response("gzip", b"nope")
    with pytest.raises(reply.ConnectionEnded, match="corrupt gzip body"):
        await _drain(corrupt, 0, [])
    unknown = _response("br", b"x")
    with pytest.raises(reply.ConnectionEnded, match="unsupported Content-Encoding 'br'"):
        await _drain(unknown, 0, [])


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("7", 7.0), (" 2.5 ", 2.5), ("999999", 600.0), ("soon", None), ("-3", None)],
)
def test_retry_after_in_seconds(value: str | None, expected: float | None) -> None:
    assert reply.retry_after(value, now=0.0, cap=600.0) == expected


def test_retry_after_as_a_date_counts_from_now_and_is_capped() -> None:
    now = 1_800_000_000.0
    in_30 = email.utils.formatdate(now + 30, usegmt=True)
    past = email.utils.formatdate(now - 30, usegmt=True)
    far = email.utils.formatdate(now + 86_400, usegmt=True)
    assert reply.retry_after(in_30, now=now, cap=600.0) == 30.0
    assert reply.retry_after(past, now=now, cap=600.0) == 0.0
    assert reply.retry_after(far, now=now, cap=600.0) == 600.0


@pytest.mark.parametrize(
    ("status", "headers", "message", "delay", "forbidden"),
    [
        (403, SSE, "HTTP 403: example.org refused the User-Agent 'ua/1'", 3600.0, True),
        (429, {"Retry-After": "7"}, r"HTTP 429 \(Retry-After: 7.0\)", 7.0, False),
        (503, {}, r"HTTP 503 \(Retry-After: None\)", None, False),
        (500, SSE, "HTTP 500 from example.org", None, False),
        (200, {"Content-Type": "text/html"}, "not an event stream", None, False),
    ],
)
def test_a_refused_response_says_why_and_how_long_to_wait(
    status: int, headers: dict[str, str], message: str, delay: float | None, forbidden: bool
) -> None:
    response = httpx.Response(status, headers=headers)
    with pytest.raises(reply.ConnectionEnded, match=message) as caught:
        reply.check(
            response,
            host="example.org",
            user_agent="ua/1",
            forbidden_retry=3600.0,
            wait=lambda value: reply.retry_after(value, now=0.0, cap=600.0),
        )
    assert (caught.value.delay, caught.value.forbidden) == (delay, forbidden)


def test_an_event_stream_is_accepted() -> None:
    ok = httpx.Response(200, headers={"Content-Type": "Text/Event-Stream; charset=utf-8"})
    reply.check(ok, host="h", user_agent="u", forbidden_retry=1.0, wait=lambda v: None)
