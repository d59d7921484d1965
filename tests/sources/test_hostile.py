"""The live source against a hostile stream: endless lines, gzip bombs, redirects elsewhere."""

from __future__ import annotations

import logging
import tracemalloc
import zlib
from typing import Any

import anyio
import httpx
import pytest

from tests.sources.test_live import _assert_exact, _ingest, _lines, _mock_source, _source
from tests.support.eventstreams import EventStreamsServer, Faults, gzip_bomb
from wikipulse.consumer import ConsumerState

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024


def _hostile_then_normal() -> Faults:
    return Faults(
        hostile={1: "endless_line", 2: "gzip_bomb", 3: "redirect_offhost", 4: "redirect_samehost"}
    )


async def test_hostile_answers_are_cut_then_the_stream_is_counted_exactly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 50 MB line, a gzip bomb and an off-host redirect are refused; then counts are exact."""
    lines = _lines("generated")[:500]
    state = ConsumerState()
    gzip_bomb()  # made (and cached) before tracing: the server's 50 MB are not the client's
    tracemalloc.start()
    try:
        with caplog.at_level(logging.INFO):
            async with EventStreamsServer(lines, faults=_hostile_then_normal()) as srv:
                store, seen = await _ingest(srv, _source(srv, state), state)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _assert_exact(srv, (await store.snapshot()).to_dict(), state, len(seen))
    assert len(seen) == len(srv.delivered) == len(lines)
    assert state.oversized_events == 2
    assert state.redirects_refused == 1
    # Requests: endless line, bomb, off-host redirect, same-host redirect and its target.
    assert [r.status for r in srv.requests[:5]] == [200, 200, 200, 200, 200]
    assert srv.requests[4].path == "/v2/stream/recentchange?moved=1"
    assert {r.headers.get("accept-encoding") for r in srv.requests} == {"identity"}
    # Everything the parser, the inflater and the client held at once: a few MiB, not 50.
    assert peak < 8 * MIB, f"peak of traced allocations {peak / MIB:.1f} MiB"
    cuts = [r.getMessage() for r in caplog.records if "dropped the connection" in r.getMessage()]
    assert (
        cuts
        == [
            "stream connection failed: the stream sent an event or line longer than 1048576 bytes; "
            "dropped the connection",
        ]
        * 2
    )
    refused = [r.getMessage() for r in caplog.records if "refused a redirect" in r.getMessage()]
    assert len(refused) == 1
    assert "to http://127.0.0.2:" in refused[0]


async def test_an_off_host_redirect_is_refused_and_shown_in_the_state() -> None:
    """A redirect to another host is not followed; last_error says so, and nothing is sent there."""
    targets: list[str] = []
    cuts: list[str | None] = []
    state = ConsumerState()

    def handler(request: httpx.Request) -> httpx.Response:
        targets.append(str(request.url))
        return httpx.Response(302, headers={"Location": "https://evil.invalid/stream"})

    async def sleep(seconds: float) -> None:
        cuts.append(state.last_error)
        if len(cuts) == 2:
            raise _Enough

    source = _mock_source(handler, state, sleep)
    with pytest.raises(_Enough), anyio.fail_after(5):
        async for _ in source.events(None):
            pass
    assert targets == ["http://eventstreams.invalid/v2/stream/recentchange"] * 2
    assert (
        cuts
        == [
            "refused a redirect from eventstreams.invalid to https://evil.invalid "
            "(only the stream's own scheme and host are followed)"
        ]
        * 2
    )
    assert state.redirects_refused == 2


async def test_a_scheme_downgrade_on_the_same_host_is_refused() -> None:
    """https -> http on the same host is another origin too, and refused."""
    state = ConsumerState()
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(301, headers={"Location": "http://eventstreams.invalid/x"})

    async def sleep(seconds: float) -> None:
        raise _Enough

    source = _mock_source(handler, state, sleep, url="https://eventstreams.invalid/stream")
    with pytest.raises(_Enough), anyio.fail_after(5):
        async for _ in source.events(None):
            pass
    assert seen == ["https://eventstreams.invalid/stream"]
    assert state.redirects_refused == 1


async def test_a_deflate_body_is_inflated_and_counted() -> None:
    """A server that compresses anyway (deflate) still delivers its events, inflated."""
    body = b"id: 1\ndata: {}\n\n" * 3
    state = ConsumerState()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"Content-Type": "text/event-stream", "Content-Encoding": "deflate"},
            stream=httpx.ByteStream(zlib.compress(body)),
        )

    async def sleep(seconds: float) -> None:
        raise _Enough

    source = _mock_source(handler, state, sleep)
    got: list[Any] = []

    async def consume() -> None:
        async for item in source.events(None):
            got.append(item)

    with pytest.raises(_Enough), anyio.fail_after(5):
        await consume()
    assert got == [(b"{}", "1")] * 3


async def test_an_unknown_content_encoding_is_refused() -> None:
    """A body in an encoding we cannot inflate in bounded steps (br) ends the connection."""
    state = ConsumerState()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"Content-Type": "text/event-stream", "Content-Encoding": "br"},
            stream=httpx.ByteStream(b"\x00\x01"),
        )

    async def sleep(seconds: float) -> None:
        raise _Enough

    source = _mock_source(handler, state, sleep)
    with pytest.raises(_Enough), anyio.fail_after(5):
        async for _ in source.events(None):
            pass
    assert state.last_error == "unsupported Content-Encoding 'br'"


class _Enough(Exception):
    """Raised from a fake sleep to end a test's reconnect loop."""
