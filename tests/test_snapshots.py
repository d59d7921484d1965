"""`/stats` from the committed snapshot: body, ETag, 304, tokens, consistency and refreshing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.test_api import (
    KNOWN_EVENTS,
    KNOWN_STATS,
    FakeSource,
    _app,
    _claims,
    _event,
    _jwt,
    running,
)
from tests.test_api import _token as login
from wikipulse.feeds import RawEvent
from wikipulse.ingest import Pipeline
from wikipulse.snapshots import SnapshotCache, SnapshotRefresher, encode_stats, etag_matches
from wikipulse.stats import Batch, Stats
from wikipulse.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio


class CountingStore(MemoryStore):
    """A memory store that counts how often its snapshot is read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def snapshot(self) -> Stats:
        self.reads += 1
        return await super().snapshot()


class PacedSource:
    """Once `go` is set, yield events one at a time, letting other tasks run between them."""

    def __init__(self, items: list[RawEvent]) -> None:
        self._items = items
        self.go = asyncio.Event()

    async def events(self, last_id: str | None) -> AsyncIterator[RawEvent]:
        await self.go.wait()
        for item in self._items:
            await asyncio.sleep(0)
            yield item


def _pattern_event(i: int) -> RawEvent:
    return _event(f"id{i}", f"s{i % 3}.org", f"u{i % 7}", i % 2 == 1), f"p{i}"


def _pattern_stats(t: int) -> dict[str, Any]:
    """What /stats must say after exactly the first `t` pattern events are committed."""
    servers = {f"s{k}.org": len(range(k, t, 3)) for k in range(3)}
    ordered = sorted(((n, c) for n, c in servers.items() if c), key=lambda kv: (-kv[1], kv[0]))
    return {
        "total": t,
        "distinct_users": min(t, 7),
        "bots": t // 2,
        "non_bots": t - t // 2,
        "by_server_name": dict(ordered),
    }


def _total(cache: SnapshotCache) -> int | None:
    return None if cache.current is None else cache.current.stats.total


def _auth_header(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


async def test_body_equals_the_store_snapshot_after_the_commits_without_reading_the_store() -> None:
    """After the consumer's last commit /stats equals KNOWN_STATS and the store's snapshot; 20
    further requests read the store 0 more times."""
    store = CountingStore()
    app = _app(store=store, source=FakeSource(KNOWN_EVENTS, block=False))
    async with running(app) as client:
        await app.state.services.consumer_task
        token = await login(client)
        first = await client.get("/stats", headers=_auth_header(token))
        reads = store.reads
        for _ in range(20):
            again = await client.get("/stats", headers=_auth_header(token))
            assert again.content == first.content
        assert store.reads == reads
        snapshot = (await store.snapshot()).to_dict()
    assert first.status_code == 200
    assert first.json() == KNOWN_STATS == snapshot
    assert first.headers["content-type"] == "application/json"
    assert first.headers["etag"] == encode_stats(await store.snapshot()).etag
    assert first.headers["cache-control"] == "private, no-cache"


async def test_if_none_match_gives_304_without_a_body_and_a_stale_tag_gives_200() -> None:
    """The current tag (plain, weak, in a list, or `*`) gives 304 with the same ETag and an
    empty body; an old tag gives 200 with the body."""
    app = _app(source=FakeSource(KNOWN_EVENTS, block=False))
    async with running(app) as client:
        await app.state.services.consumer_task
        token = await login(client)
        # The first request goes through the route (the token is new), the rest the fast path.
        for _ in range(2):
            fresh = await client.get("/stats", headers=_auth_header(token))
            etag = fresh.headers["etag"]
            for tag in (etag, f"W/{etag}", f'"other", {etag}', "*"):
                response = await client.get(
                    "/stats", headers=_auth_header(token, **{"If-None-Match": tag})
                )
                assert response.status_code == 304
                assert response.content == b""
                assert response.headers["etag"] == etag
            stale = await client.get(
                "/stats", headers=_auth_header(token, **{"If-None-Match": '"other"'})
            )
            assert stale.status_code == 200
            assert stale.json() == KNOWN_STATS


async def test_route_and_fast_path_answer_the_same_bytes() -> None:
    """A new token's first answer (the route) and the next (the fast path) have the same
    status, body, ETag, content type and cache control."""
    app = _app(source=FakeSource(KNOWN_EVENTS, block=False))
    async with running(app) as client:
        await app.state.services.consumer_task
        token = _jwt(_claims())  # never seen: the first request verifies it in the route
        answers = [await client.get("/stats", headers=_auth_header(token)) for _ in range(2)]
    first, second = answers
    assert (first.status_code, first.content) == (second.status_code, second.content)
    for name in ("etag", "content-type", "cache-control", "content-length"):
        assert first.headers[name] == second.headers[name]


async def test_a_token_is_still_needed_while_the_snapshot_is_cached() -> None:
    """With the snapshot cached and a good token known, no token, a bad token or a forged
    one (with the known tag in If-None-Match) still get 401."""
    app = _app(source=FakeSource(KNOWN_EVENTS, block=False))
    async with running(app) as client:
        await app.state.services.consumer_task
        token = await login(client)
        etag = (await client.get("/stats", headers=_auth_header(token))).headers["etag"]
        for headers in (
            {"If-None-Match": etag},
            {"Authorization": "Bearer not-a-token", "If-None-Match": etag},
            {"Authorization": f"Bearer {token}x"},
            {"Authorization": f"Basic {token}"},
            {"Authorization": token},
        ):
            response = await client.get("/stats", headers=headers)
            assert response.status_code == 401, headers
            assert "etag" not in response.headers


async def test_etag_changes_when_and_only_when_the_statistics_change() -> None:
    """Publishing equal statistics keeps the tag (and the same object); any changed figure
    changes it; the tag is the blake2b of the body."""
    cache = SnapshotCache()
    first = cache.publish(Stats(1, 1, 0, {"a": 1}))
    assert cache.publish(Stats(1, 1, 0, {"a": 1})) is first
    tags = {first.etag}
    for changed in (
        Stats(2, 1, 0, {"a": 2}),
        Stats(2, 2, 0, {"a": 2}),
        Stats(2, 2, 1, {"a": 2}),
        Stats(2, 2, 1, {"a": 1, "b": 1}),
    ):
        tags.add(cache.publish(changed).etag)
    assert len(tags) == 5
    assert cache.current is not None
    assert (
        cache.current.body
        == json.dumps(Stats(2, 2, 1, {"a": 1, "b": 1}).to_dict(), separators=(",", ":")).encode()
    )


async def test_a_commit_that_changes_nothing_keeps_the_etag() -> None:
    """A batch of only a duplicate and a canary commits a new position but the same tag; a
    batch with a new event changes it."""
    store = MemoryStore()
    cache = SnapshotCache()
    await store.commit(Batch(total=1, by_server_name={"a": 1}, touched=True))
    before = await cache.load(store.snapshot)
    await store.commit(Batch(position="p9", touched=True))
    same = await cache.load(store.snapshot)
    await store.commit(Batch(total=1, by_server_name={"b": 1}, touched=True))
    after = await cache.load(store.snapshot)
    assert before is not None
    assert same is not None
    assert after is not None
    assert same.etag == before.etag
    assert after.etag != before.etag


def test_etag_matching_follows_weak_comparison() -> None:
    """`If-None-Match` matches the tag itself, its weak form, a list holding it and `*`;
    not another tag or the bare digest."""
    assert etag_matches('"abc"', '"abc"')
    assert etag_matches('W/"abc"', '"abc"')
    assert etag_matches('"x", "abc"', '"abc"')
    assert etag_matches("*", '"abc"')
    assert not etag_matches('"abd"', '"abc"')
    assert not etag_matches("abc", '"abc"')


async def test_readers_never_see_a_torn_snapshot() -> None:
    """While 60 events are committed in batches of 5, every /stats body read concurrently
    equals the statistics of a whole number of batches (the pattern's first 5k events)."""
    events = [_pattern_event(i) for i in range(60)]
    source = PacedSource(events)
    app = _app(source=source, batch_max_events=5, batch_max_ms=600_000)
    seen: list[dict[str, Any]] = []
    async with running(app) as client:
        token = await login(client)
        source.go.set()
        task = app.state.services.consumer_task
        for _ in range(10_000):  # bounded; ends when the source is drained and committed
            if task.done():
                break
            response = await client.get("/stats", headers=_auth_header(token))
            assert response.status_code == 200
            seen.append(response.json())
            await asyncio.sleep(0)  # an in-process request may never yield by itself
        final = (await client.get("/stats", headers=_auth_header(token))).json()
    totals = {body["total"] for body in seen}
    assert len(totals) > 3  # the reads really did interleave with the commits
    for body in seen:
        assert body["total"] % 5 == 0
        assert body == _pattern_stats(body["total"])
    assert final == _pattern_stats(60)


async def test_a_failed_read_drops_the_snapshot_and_the_next_request_gets_503() -> None:
    """After the store's snapshot fails, the cache holds nothing and /stats answers 503 rather
    than serving figures older than one batch."""

    class FlakyStore(MemoryStore):
        broken = False

        async def snapshot(self) -> Stats:
            if self.broken:
                raise ConnectionError("gone")
            return await super().snapshot()

    store = FlakyStore()
    app = _app(store=store, source=FakeSource(KNOWN_EVENTS, block=False))
    async with running(app) as client:
        await app.state.services.consumer_task
        token = await login(client)
        assert (await client.get("/stats", headers=_auth_header(token))).status_code == 200
        store.broken = True
        cache: SnapshotCache = app.state.services.snapshots
        with pytest.raises(ConnectionError):
            await cache.load(store.snapshot)
        assert cache.current is None
        response = await client.get("/stats", headers=_auth_header(token))
        assert response.status_code == 503
        store.broken = False
        recovered = await client.get("/stats", headers=_auth_header(token))
    assert recovered.status_code == 200
    assert recovered.json() == KNOWN_STATS


async def test_the_refresher_reads_a_shared_store_every_interval_without_a_pipeline() -> None:
    """A refresher over a store another process writes publishes each new state after one
    interval, and a failing read empties the cache until a read succeeds."""
    store = MemoryStore()
    cache = SnapshotCache()
    ticks: asyncio.Queue[float] = asyncio.Queue()
    proceed = asyncio.Event()
    broken = False

    async def read() -> Stats:
        if broken:
            raise ConnectionError("gone")
        return await store.snapshot()

    async def sleep(seconds: float) -> None:
        await ticks.put(seconds)
        await proceed.wait()
        proceed.clear()

    refresher = asyncio.create_task(SnapshotRefresher(cache, read, 0.5, sleep).run())
    try:
        assert await ticks.get() == 0.5
        assert _total(cache) == 0
        await store.commit(Batch(total=2, by_server_name={"a": 2}, touched=True))
        proceed.set()
        await ticks.get()
        assert _total(cache) == 2
        broken = True
        proceed.set()
        await ticks.get()
        assert cache.current is None
        broken = False
        proceed.set()
        await ticks.get()
        assert _total(cache) == 2
    finally:
        refresher.cancel()
        await asyncio.wait({refresher})


async def test_concurrent_misses_share_one_read() -> None:
    """Ten requests finding the cache empty cause one store read and all get its snapshot."""
    store = CountingStore()
    cache = SnapshotCache()
    results = await asyncio.gather(*(cache.refresh(store.snapshot) for _ in range(10)))
    assert store.reads == 1
    assert all(result is results[0] for result in results)


async def test_cancelling_the_publication_never_commits_a_batch_twice() -> None:
    """A flush cancelled while it publishes leaves nothing pending: flushing again commits
    nothing more, so the memory store (which does not deduplicate commits) holds total 1."""
    store = MemoryStore()
    entered = asyncio.Event()

    async def hang() -> None:
        entered.set()
        await asyncio.Event().wait()

    pipeline = Pipeline(store, published=hang)
    await pipeline.add(_pattern_event(0)[0], "p0")
    flush = asyncio.create_task(pipeline.flush())
    await entered.wait()
    flush.cancel()
    await asyncio.wait({flush})
    entered.clear()
    await pipeline.flush()
    assert (await store.snapshot()).total == 1
    assert not entered.is_set()  # nothing was left to commit, so nothing to publish
