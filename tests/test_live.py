"""`/stats/live`: the fan-out's rules in one event loop, then the endpoint over a real socket."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.served import PASSWORD, QueueSource, make_app, serving
from wikipulse.broadcast import EXPIRED, KEEPALIVE, CommitObservers, LiveFeed

pytestmark = pytest.mark.anyio


class Numbers:
    """A stats provider whose answer the test sets; counts how often it is read."""

    def __init__(self) -> None:
        self.total = 0
        self.reads = 0
        self.fail = False

    async def __call__(self) -> dict[str, Any]:
        self.reads += 1
        if self.fail:
            raise ConnectionError("store down")
        return {"total": self.total}


def _stats(message: bytes) -> dict[str, Any]:
    head, _, rest = message.partition(b"\n")
    assert head == b"event: stats"
    body: dict[str, Any] = json.loads(rest.partition(b"\n")[0].removeprefix(b"data: "))
    return body


def _feed(numbers: Numbers, interval: float = 0.01, keepalive: float = 5.0) -> LiveFeed:
    feed = LiveFeed(min_interval=interval, keepalive=keepalive)
    feed.stats = numbers
    return feed


async def _next(stream: AsyncIterator[bytes]) -> bytes:
    return await asyncio.wait_for(anext(stream), 2.0)


async def test_a_client_gets_the_current_statistics_at_once_then_each_change() -> None:
    """The first message is the snapshot; a commit that changes it sends a new one."""
    numbers = Numbers()
    numbers.total = 7
    feed = _feed(numbers)
    stream = feed.messages()
    assert _stats(await _next(stream)) == {"total": 7}
    numbers.total = 9
    feed.commit_succeeded(0.001)
    assert _stats(await _next(stream)) == {"total": 9}
    await stream.aclose()
    await feed.aclose()
    assert feed.clients == 0


async def test_a_commit_that_changed_nothing_sends_nothing() -> None:
    """Equal statistics after a commit are not sent again; the stream stays quiet."""
    numbers = Numbers()
    feed = _feed(numbers, keepalive=0.3)
    stream = feed.messages()
    await _next(stream)
    feed.commit_succeeded(0.001)
    assert await _next(stream) == KEEPALIVE  # silence, then the comment line
    assert numbers.reads == 2
    await stream.aclose()
    await feed.aclose()


async def test_many_commits_within_the_interval_are_published_once_or_twice() -> None:
    """A burst of commits is read and sent at most once per interval, never once per commit."""
    numbers = Numbers()
    feed = _feed(numbers, interval=0.3)
    stream = feed.messages()
    await _next(stream)
    started = time.monotonic()
    for n in range(1, 101):
        numbers.total = n
        feed.commit_succeeded(0.001)
        await asyncio.sleep(0)
    last = _stats(await _next(stream))
    if last != {"total": 100}:  # the burst straddled a publication: one more follows
        last = _stats(await _next(stream))
    assert last == {"total": 100}
    assert time.monotonic() - started >= 0.25  # the interval was kept between publications
    assert numbers.reads <= 3
    await stream.aclose()
    await feed.aclose()


async def test_a_slow_client_skips_to_the_newest_message() -> None:
    """A client that stops reading misses the intermediate messages, none are queued for it."""
    numbers = Numbers()
    feed = _feed(numbers)
    slow, fast = feed.messages(), feed.messages()
    await _next(slow)
    await _next(fast)
    received = []
    for n in range(1, 21):
        numbers.total = n
        feed.commit_succeeded(0.001)
        received.append(_stats(await _next(fast))["total"])
    assert received == list(range(1, 21))
    assert _stats(await _next(slow)) == {"total": 20}  # straight to the newest
    assert feed.published == 21
    await slow.aclose()
    await fast.aclose()
    await feed.aclose()


async def test_idle_streams_get_a_comment_and_end_when_the_token_expires() -> None:
    """Silence brings a `:` comment line; the token's expiry brings `event: expired`, then EOF."""
    feed = _feed(Numbers(), keepalive=0.1)
    stream = feed.messages(expires_at=time.time() + 0.35)
    await _next(stream)
    assert await _next(stream) == KEEPALIVE
    rest = [message async for message in stream]
    assert rest[-1] == EXPIRED
    assert set(rest[:-1]) <= {KEEPALIVE}
    await feed.aclose()


async def test_a_failing_read_keeps_the_last_message_and_is_tried_again() -> None:
    """While the store cannot answer nothing is sent; the next commit's read publishes again."""
    numbers = Numbers()
    feed = _feed(numbers)
    stream = feed.messages()
    await _next(stream)
    numbers.fail = True
    numbers.total = 5
    feed.commit_succeeded(0.001)
    pending = asyncio.ensure_future(_next(stream))
    await asyncio.sleep(0.1)
    assert not pending.done()
    numbers.fail = False
    feed.commit_succeeded(0.001)
    assert _stats(await pending) == {"total": 5}
    await stream.aclose()
    await feed.aclose()


async def test_the_bucket_provider_adds_a_bucket_event_and_close_ends_streams() -> None:
    """With a bucket provider each message holds `event: bucket` too; `close` ends every stream."""
    feed = _feed(Numbers())

    async def bucket() -> dict[str, Any]:
        return {"start": "2024-05-01T12:00:00Z", "total": 3}

    feed.bucket = bucket
    stream = feed.messages()
    message = await _next(stream)
    assert message.endswith(b'event: bucket\ndata: {"start":"2024-05-01T12:00:00Z","total":3}\n\n')
    feed.close()
    assert [m async for m in stream] == []


async def test_a_failing_bucket_provider_leaves_the_statistics_going_out() -> None:
    """When the newest minute cannot be read, the message holds the statistics alone."""
    feed = _feed(Numbers())

    async def bucket() -> dict[str, Any]:
        raise ConnectionError("windows unavailable")

    feed.bucket = bucket
    stream = feed.messages()
    message = await _next(stream)
    assert _stats(message) == {"total": 0}
    assert b"event: bucket" not in message
    await stream.aclose()
    await feed.aclose()


def test_commit_observers_tell_every_observer() -> None:
    """The fan-in of observers calls each one, successes and failures alike."""
    calls: list[str] = []

    class Recorder:
        """Notes each call with its name."""

        def __init__(self, name: str) -> None:
            self.name = name

        def commit_succeeded(self, seconds: float) -> None:
            """Note a success."""
            calls.append(f"{self.name} ok {seconds}")

        def commit_failed(self, seconds: float) -> None:
            """Note a failure."""
            calls.append(f"{self.name} failed {seconds}")

    both = CommitObservers(Recorder("a"), Recorder("b"))
    both.commit_succeeded(1.0)
    both.commit_failed(2.0)
    assert calls == ["a ok 1.0", "b ok 1.0", "a failed 2.0", "b failed 2.0"]


def _event(n: int, bot: bool) -> bytes:
    return json.dumps(
        {
            "meta": {"id": f"id-{n}", "domain": "x", "dt": "2024-05-01T12:00:00Z"},
            "server_name": "en.wikipedia.org",
            "user": f"user-{n}",
            "bot": bot,
            "type": "edit",
        }
    ).encode()


def _read_message(lines: Any) -> tuple[str, dict[str, Any]]:
    name, data = "", ""
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif not line and name:
            return name, json.loads(data)
    raise AssertionError("the stream ended")


@pytest.mark.timeout(60)
def test_the_endpoint_needs_a_token_and_streams_what_stats_says() -> None:
    """Over HTTP: 401 without a token; with one, SSE headers and `/stats`, then its changes."""
    source = QueueSource()
    with serving(make_app(source)) as base, httpx.Client(base_url=base, timeout=10) as http:
        refused = http.get("/stats/live")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        login = http.post("/login", json={"username": "alice", "password": PASSWORD})
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        with http.stream("GET", "/stats/live", headers=auth) as live:
            assert live.status_code == 200
            assert live.headers["content-type"].startswith("text/event-stream")
            assert live.headers["cache-control"] == "no-store"
            lines = live.iter_lines()
            assert _read_message(lines) == ("stats", http.get("/stats", headers=auth).json())
            source.feed([_event(1, False), _event(2, True)])
            name, body = _read_message(lines)
            while body["total"] < 2:
                name, body = _read_message(lines)
            assert (name, body) == ("stats", http.get("/stats", headers=auth).json())
            assert (body["bots"], body["non_bots"], body["distinct_users"]) == (1, 1, 2)
            metrics = http.get("/metrics").text
            assert "\nwikipulse_live_clients 1.0\n" in metrics
            assert "\nwikipulse_live_messages_published_total 2.0\n" in metrics


@pytest.mark.timeout(60)
def test_the_bucket_event_is_the_newest_minute_of_the_store_windows() -> None:
    """With a store that keeps windows, `event: bucket` is the last bucket of /stats/timeseries."""
    source = QueueSource()
    with serving(make_app(source)) as base, httpx.Client(base_url=base, timeout=10) as http:
        login = http.post("/login", json={"username": "alice", "password": PASSWORD})
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        source.feed([_event(n, n % 3 == 0) for n in range(1, 8)])
        with http.stream("GET", "/stats/live", headers=auth) as live:
            lines = live.iter_lines()
            name, body = _read_message(lines)
            while name != "bucket" or body["total"] < 7:
                name, body = _read_message(lines)
        series = http.get("/stats/timeseries", headers=auth).json()
    assert body == series["buckets"][-1]
    assert (body["start"], body["total"], body["bots"], body["by_type"]) == (
        "2024-05-01T12:00:00Z",
        7,
        2,
        {"edit": 7},
    )
