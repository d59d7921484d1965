"""The live source against the project's misbehaving EventStreams server, end to end."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import io
import itertools
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from tests.conftest import DATA_DIR
from tests.support.counting import expected_stats
from tests.support.eventstreams import (
    EventStreamsServer,
    Faults,
    IdFormat,
    canary_event,
    inject,
    malformed_events,
)
from wikipulse.consumer import ConsumerState
from wikipulse.feeds import RawEvent
from wikipulse.generate import GeneratorOptions, write
from wikipulse.ingest import Pipeline
from wikipulse.sources.live import LiveSource
from wikipulse.stores.memory import MemoryStore

AGENT = "wikipulse-tests/1.0 (https://example.org/wikipulse; tests@example.org)"
STALL = 0.3


@functools.cache
def _generated(events: int, seed: int) -> tuple[bytes, ...]:
    out = io.BytesIO()
    write(GeneratorOptions(events, seed=seed), out)
    return tuple(out.getvalue().splitlines())


def _recording() -> list[bytes]:
    return (DATA_DIR / "recentchange-polars-guide.ndjson").read_bytes().splitlines()


def _lines(name: str) -> list[bytes]:
    """Served events: real or generated, with malformed events and extra canaries mixed in."""
    base = _recording() if name == "recording" else list(_generated(3000, 7))
    extra = [*malformed_events(), canary_event(1), canary_event(2)]
    return inject(base, extra, seed=3)


def _kind(line: bytes) -> str:
    """Classify a served line independently of the package: counted, canary or invalid."""
    if expected_stats([line])["total"] == 1:
        return "counted"
    try:
        value = json.loads(line)
    except ValueError:
        return "invalid"
    is_canary = (
        isinstance(value, dict)
        and isinstance(value.get("meta"), dict)
        and value["meta"].get("domain") == "canary"
        and isinstance(value.get("bot"), bool)
    )
    return "canary" if is_canary else "invalid"


def _mock_source(
    handler: Callable[[httpx.Request], httpx.Response],
    state: ConsumerState,
    sleep: Callable[[float], Any],
    **overrides: Any,
) -> LiveSource:
    """A source whose requests go to `handler` and whose waits go to `sleep`."""
    options: dict[str, Any] = {
        "url": "http://eventstreams.invalid/v2/stream/recentchange",
        "user_agent": AGENT,
        "state": state,
        "stall_timeout": 1.0,
        "connect_timeout": 1.0,
        "backoff_initial": 1.0,
        "backoff_max": 16.0,
        "forbidden_retry": 600.0,
        "transport": httpx.MockTransport(handler),
        "sleep": sleep,
    }
    options.update(overrides)
    return LiveSource(**options)


def _source(srv: EventStreamsServer, state: ConsumerState, **overrides: Any) -> LiveSource:
    options: dict[str, Any] = {
        "url": srv.url,
        "user_agent": AGENT,
        "state": state,
        "stall_timeout": STALL,
        "connect_timeout": 2.0,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        "forbidden_retry": 30.0,
    }
    options.update(overrides)
    return LiveSource(**options)


async def _until_delivered(
    events: AsyncIterator[RawEvent], srv: EventStreamsServer, seen: list[RawEvent]
) -> AsyncIterator[RawEvent]:
    """Pass events on until the server has delivered its last one and we have all it sent."""
    async with contextlib.aclosing(events) as source:  # type: ignore[type-var]
        async for item in source:
            seen.append(item)
            yield item
            if srv.finished.is_set() and len(seen) == len(srv.delivered):
                return


async def _ingest(
    srv: EventStreamsServer, source: LiveSource, state: ConsumerState
) -> tuple[MemoryStore, list[RawEvent]]:
    """Run the real pipeline on the live source until everything served has been consumed."""
    store = MemoryStore()
    pipeline = Pipeline(store, state=state, max_events=50, max_ms=20)
    seen: list[RawEvent] = []
    with anyio.fail_after(20):
        await pipeline.run(_until_delivered(source.events(None), srv, seen))
    return store, seen


@contextlib.asynccontextmanager
async def _consuming(
    source: LiveSource, last_id: str | None = None
) -> AsyncIterator[list[RawEvent]]:
    """Consume the source in the background; the list fills as events arrive."""
    seen: list[RawEvent] = []

    async def consume() -> None:
        async for item in source.events(last_id):
            seen.append(item)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        yield seen
        tg.cancel_scope.cancel()


async def _wait_for(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(10):
        # Polling, because the server may run in another thread where no anyio.Event reaches.
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.005)


def _assert_exact(
    srv: EventStreamsServer, store_stats: dict[str, Any], state: ConsumerState, n: int
) -> None:
    delivered = srv.delivered[:n]
    assert set(delivered) == set(range(len(srv.lines)))
    assert store_stats == expected_stats(srv.lines)
    kinds = [_kind(srv.lines[i]) for i in delivered]
    c = state.counters
    assert c.canaries == kinds.count("canary")
    assert c.invalid == kinds.count("invalid")
    assert c.counted == store_stats["total"]
    assert c.duplicates == n - c.counted - c.canaries - c.invalid


@pytest.mark.anyio
@pytest.mark.parametrize("data", ["recording", "generated"])
@pytest.mark.parametrize("id_format", ["offset", "timestamp"])
async def test_all_faults_give_exact_statistics(data: str, id_format: IdFormat) -> None:
    """With every fault at once, the counts equal an independent count of the served events."""
    lines = _lines(data)
    faults = Faults.everything(close_every=15 if data == "recording" else 150)
    async with EventStreamsServer(lines, id_format=id_format, faults=faults, seed=11) as srv:
        state = ConsumerState()
        store, seen = await _ingest(srv, _source(srv, state), state)
    _assert_exact(srv, (await store.snapshot()).to_dict(), state, len(seen))
    assert [position for _, position in seen] == [srv.ids[i] for i in srv.delivered[: len(seen)]]
    assert all(r.last_event_id == r.previous_id for r in srv.requests)
    assert all(r.user_agent == AGENT for r in srv.requests)
    assert state.reconnects == len(srv.requests) - 1
    assert srv.stalls
    assert all(stall < 1.0 for stall in srv.stalls)  # the client hung up, not the server
    if id_format == "offset":
        assert state.counters.duplicates == 0  # resuming by offset replays nothing
    else:
        assert state.counters.duplicates > 0  # resuming by timestamp replays some


@pytest.mark.anyio
async def test_threaded_server_serves_a_separate_client() -> None:
    """The server runs in its own thread and loop, as a separate process would use it."""
    lines = _lines("recording")
    with EventStreamsServer(lines, faults=Faults(close_every=10, line_ending="crlf")) as srv:
        state = ConsumerState()
        store, seen = await _ingest(srv, _source(srv, state), state)
    _assert_exact(srv, (await store.snapshot()).to_dict(), state, len(seen))


@pytest.mark.anyio
async def test_cut_events_are_neither_lost_nor_repeated() -> None:
    """Every connection ends mid-event, yet resuming by offset loses and repeats nothing."""
    lines = _lines("recording")
    faults = Faults(close_every=4, cut_mid_event=1.0, chunk_max=5, line_ending="crlf")
    async with EventStreamsServer(lines, faults=faults, seed=5) as srv:
        state = ConsumerState()
        store, seen = await _ingest(srv, _source(srv, state), state)
    assert len(seen) == len(lines)
    assert state.counters.duplicates == 0
    _assert_exact(srv, (await store.snapshot()).to_dict(), state, len(seen))


@pytest.mark.anyio
async def test_canaries_and_malformed_events_are_counted_apart() -> None:
    """Canaries and malformed events are counted in their own counters, exactly."""
    lines = _lines("recording")
    async with EventStreamsServer(lines) as srv:
        state = ConsumerState()
        store, _ = await _ingest(srv, _source(srv, state), state)
    assert (state.counters.counted, state.counters.canaries, state.counters.invalid) == (100, 2, 6)
    assert (await store.snapshot()).total == 100


@pytest.mark.anyio
async def test_last_event_id_is_sent_on_every_reconnect() -> None:
    """Each reconnect sends the id of the last event received, starting from the given one."""
    lines = list(_generated(3000, 7))[:60]
    async with EventStreamsServer(lines, faults=Faults(close_every=5), seed=2) as srv:
        source = _source(srv, ConsumerState())
        async with _consuming(source, last_id=srv.ids[9]) as seen:
            await _wait_for(srv.finished.is_set)
            await _wait_for(lambda: len(seen) == len(srv.delivered))
    assert srv.requests[0].last_event_id == srv.ids[9]
    assert srv.delivered[0] == 10
    assert len(srv.requests) > 3
    assert all(r.last_event_id == r.previous_id for r in srv.requests[1:])
    assert source.last_id == srv.ids[-1]


@pytest.mark.anyio
async def test_configured_user_agent_and_accept_are_sent() -> None:
    """Every request carries the configured User-Agent and asks for an event stream."""
    srv = EventStreamsServer(_recording()[:5], faults=Faults(when_done="hold"))
    async with srv, _consuming(_source(srv, ConsumerState())) as seen:
        await _wait_for(lambda: len(seen) == 5)
    (request,) = srv.requests
    assert request.user_agent == AGENT
    assert request.headers["accept"] == "text/event-stream"
    assert request.path == "/v2/stream/recentchange"


def _waits(into: list[float]) -> Callable[[float], Any]:
    """A sleep that records each wait and does not really wait."""

    async def sleep(delay: float) -> None:
        into.append(delay)
        await asyncio.sleep(0)

    return sleep


@pytest.mark.anyio
@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_seconds_is_honoured(status: int) -> None:
    """After a 429 or 503 with Retry-After: 7 the client waits 7 s before retrying."""
    faults = Faults(refuse={1: status}, retry_after="7", when_done="hold")
    waits: list[float] = []
    async with EventStreamsServer(_recording()[:3], faults=faults) as srv:
        source = _source(srv, ConsumerState(), sleep=_waits(waits))
        async with _consuming(source) as seen:
            await _wait_for(lambda: len(seen) == 3)
    first, second = srv.requests
    assert (first.status, second.status) == (status, 200)
    assert waits[0] == 7.0  # the back-off (at most 0.05 s here) is less: Retry-After rules


@pytest.mark.anyio
async def test_retry_after_http_date_is_honoured() -> None:
    """A Retry-After given as an HTTP-date makes the client wait until that time, by its clock."""
    now = 1_790_000_000.0
    date = email.utils.formatdate(now + 20, usegmt=True)  # under the cap (30 s here)
    faults = Faults(refuse={1: 503}, retry_after=lambda: date, when_done="hold")
    waits: list[float] = []
    async with EventStreamsServer(_recording()[:3], faults=faults) as srv:
        source = _source(srv, ConsumerState(), sleep=_waits(waits), clock=lambda: now)
        async with _consuming(source) as seen:
            await _wait_for(lambda: len(seen) == 3)
    assert [request.status for request in srv.requests] == [503, 200]
    assert waits[0] == 20.0


@pytest.mark.anyio
async def test_forbidden_user_agent_is_reported_and_retried_late(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 403 sets state.forbidden, logs an error naming the User-Agent, and waits to retry."""
    caplog.set_level(logging.WARNING, logger="wikipulse.sources.live")
    agent = "python-httpx/0.28.1"
    async with EventStreamsServer(_recording()[:3]) as srv:
        state = ConsumerState()
        source = _source(srv, state, user_agent=agent, forbidden_retry=0.3)
        async with _consuming(source):
            await _wait_for(lambda: len(srv.requests) == 2)
    assert state.forbidden
    assert state.last_error is not None
    assert "403" in state.last_error
    assert [r.status for r in srv.requests] == [403, 403]
    assert srv.requests[1].at - srv.requests[0].at >= 0.3
    record = next(r for r in caplog.records if r.name == "wikipulse.sources.live")
    assert record.levelno == logging.ERROR
    assert "User-Agent" in record.getMessage()
    assert agent in record.getMessage()


@pytest.mark.anyio
async def test_stall_causes_a_reconnect(caplog: pytest.LogCaptureFixture) -> None:
    """A connection silent for longer than the stall timeout is dropped and reopened."""
    caplog.set_level(logging.WARNING, logger="wikipulse.sources.live")
    faults = Faults(stall_connections=frozenset({1}), stall_after=4, stall_seconds=5.0)
    lines = _recording()[:10]
    async with EventStreamsServer(lines, faults=faults) as srv:
        state = ConsumerState()
        store, seen = await _ingest(srv, _source(srv, state), state)
    (stall,) = srv.stalls
    assert STALL <= stall < STALL + 0.5
    assert [r.last_event_id for r in srv.requests] == [None, srv.ids[3]]
    assert state.reconnects == 1
    assert len(seen) == 10
    assert any("stalled" in r.getMessage() for r in caplog.records)
    assert (await store.snapshot()).to_dict() == expected_stats(lines)


@pytest.mark.anyio
async def test_error_events_are_logged_not_yielded(caplog: pytest.LogCaptureFixture) -> None:
    """`event: error` events are logged as warnings and never reach the pipeline."""
    caplog.set_level(logging.WARNING, logger="wikipulse.sources.live")
    lines = _recording()[:10]
    async with EventStreamsServer(lines, faults=Faults(error_every=3)) as srv:
        state = ConsumerState()
        _, seen = await _ingest(srv, _source(srv, state), state)
    assert len(seen) == 10
    assert state.counters.counted == 10
    assert state.counters.invalid == 0
    warnings = [r for r in caplog.records if "error event" in r.getMessage()]
    assert len(warnings) == srv.errors_sent == 3


@pytest.mark.anyio
async def test_server_retry_field_is_the_least_reconnect_delay() -> None:
    """A `retry:` field from the server sets the least wait before reconnecting."""
    faults = Faults(close_every=2, retry_field=200)
    async with EventStreamsServer(_recording()[:6], faults=faults) as srv:
        state = ConsumerState()
        await _ingest(srv, _source(srv, state), state)
    gaps = [b.at - a.at for a, b in itertools.pairwise(srv.requests)]
    assert gaps
    assert all(gap >= 0.2 for gap in gaps)


@pytest.mark.anyio
async def test_non_event_stream_response_is_an_error() -> None:
    """A 200 that is not text/event-stream is an error, followed by a retry that works."""
    async with EventStreamsServer(_recording()[:4], faults=Faults(html=frozenset({1}))) as srv:
        state = ConsumerState()
        errors: list[str | None] = []
        source = _source(srv, state, sleep=_recording_sleep(errors, state))
        _, seen = await _ingest(srv, source, state)
    assert len(seen) == 4
    assert errors[0] is not None
    assert "text/html" in errors[0]


def _recording_sleep(into: list[str | None], state: ConsumerState) -> Callable[[float], Any]:
    async def sleep(delay: float) -> None:
        into.append(state.last_error)
        await anyio.lowlevel.checkpoint()

    return sleep


@pytest.mark.anyio
async def test_routine_close_reconnects_at_once_and_state_follows() -> None:
    """Clean ends after events reconnect without back-off; state tracks the connection."""
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    lines = _recording()[:30]
    faults = Faults(close_every=3, when_done="hold")
    async with EventStreamsServer(lines, faults=faults) as srv:
        state = ConsumerState()
        options = {"backoff_initial": 5.0, "backoff_max": 5.0, "stall_timeout": 5.0}
        source = _source(srv, state, sleep=sleep, **options)
        async with _consuming(source) as seen:
            await _wait_for(lambda: len(seen) == len(lines))
            assert state.last_event_at is not None
            assert abs(state.last_event_at - time.time()) < 5
        assert not state.connected
    assert set(delays) <= {0.0}  # only the yield to the event loop, no back-off
    assert state.reconnects == len(srv.requests) - 1 > 3
    assert state.last_error is None


@pytest.mark.anyio
async def test_connected_while_streaming() -> None:
    """state.connected is true while a stream is open and false once it is given up."""
    async with EventStreamsServer(_recording()[:2], faults=Faults(when_done="hold")) as srv:
        state = ConsumerState()
        async with _consuming(_source(srv, state, stall_timeout=5.0)) as seen:
            await _wait_for(lambda: len(seen) == 2)
            assert state.connected
    assert not state.connected


@pytest.mark.anyio
@pytest.mark.parametrize("failure", ["connect", "500"])
async def test_failures_back_off_exponentially_with_full_jitter(failure: str) -> None:
    """Repeated failures wait a random time under a ceiling that doubles up to the maximum."""
    delays: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if failure == "connect":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(500)

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 8:
            raise _Enough

    state = ConsumerState()
    source = _mock_source(handler, state, sleep, backoff_max=16.0, rng=random.Random(4))
    with pytest.raises(_Enough):
        async for _ in source.events(None):
            pass
    ceilings = [1, 2, 4, 8, 16, 16, 16, 16]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays[4:]) > 4  # the ceiling really grew
    assert state.reconnects == 7
    assert state.last_error is not None
    assert not state.connected


class _Enough(Exception):
    """Raised by a fake sleep to stop an endless source."""


@pytest.mark.anyio
@pytest.mark.parametrize("agent", [None, "", "python-httpx/0.28.1", "curl/8.5.0"])
async def test_fake_server_refuses_missing_and_library_agents(agent: str | None) -> None:
    """The fake server answers 403 to a missing or library-default User-Agent, like Wikimedia."""
    async with EventStreamsServer(_recording()[:1]) as srv:
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        header = b"" if agent is None else b"User-Agent: " + agent.encode() + b"\r\n"
        writer.write(b"GET /v2/stream/recentchange HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n")
        status_line = await reader.readline()
        writer.close()
        await writer.wait_closed()
    assert status_line.startswith(b"HTTP/1.1 403 ")
    assert srv.requests[0].user_agent == agent


def test_fake_server_resumes_like_eventstreams() -> None:
    """By offset the server resumes after the id; by timestamp at the first event at that time."""
    lines = _recording()[:40]
    by_offset = EventStreamsServer(lines, id_format="offset")
    assert by_offset.resume_index(by_offset.ids[4]) == 5
    assert by_offset.resume_index(None) == 0
    by_time = EventStreamsServer(lines, id_format="timestamp", seed=1)
    stamps = by_time.timestamps
    assert len(set(stamps)) < len(stamps)  # some events share a millisecond
    for i, ts in enumerate(stamps):
        start = by_time.resume_index(by_time.ids[i])
        assert stamps[start] == ts
        assert start == stamps.index(ts)  # the first event of that millisecond: a replay
    assert json.loads(by_time.ids[0])[1] == {
        "topic": "codfw.mediawiki.recentchange",
        "partition": 0,
        "offset": -1,
    }


@pytest.mark.anyio
async def test_repeated_retry_after_zero_still_backs_off() -> None:
    """A server that keeps answering 503 with Retry-After: 0 is met with a growing back-off."""
    requests = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal requests
        requests += 1
        return httpx.Response(503, headers={"Retry-After": "0"})

    delays: list[float] = []
    done = asyncio.Event()

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 12:
            done.set()
        await asyncio.sleep(0)

    source = _mock_source(handler, ConsumerState(), sleep, backoff_max=64.0, rng=random.Random(3))

    async def consume() -> None:
        async for _ in source.events(None):
            pass

    task = asyncio.create_task(consume())
    await asyncio.wait_for(done.wait(), 10)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert len(delays) >= 12
    assert requests == len(delays) or requests == len(delays) + 1
    assert sum(delays[6:]) > 10  # the ceiling has grown to 32s: not a hot loop
