"""The writer's lease of every store that keeps one: a stale token's commit changes nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.stores.conftest import StoreKind
from tests.support.counting import expected_stats
from wikipulse.dedup import RecentIds
from wikipulse.lease import Fence, FencedStore, LeaseLost, LocalLease
from wikipulse.stats import Aggregator, Batch
from wikipulse.stores import ResumePoint, StatsStore

pytestmark = pytest.mark.anyio

LEASE = 1.0  # seconds: short, so that a test waits it out


def _batch(lines: list[bytes], start: int) -> Batch:
    """One batch of `lines`, each at its index (from `start`) as the stream position."""
    agg = Aggregator(RecentIds(1000))
    for offset, line in enumerate(lines):
        agg.add_raw(line, str(start + offset))
    return agg.take()


def _far() -> float:
    """A fence deadline far ahead: the store's own check, not the local one, must refuse."""
    return time.monotonic() + 3600


async def _state(store: StatsStore) -> tuple[dict[str, Any], ResumePoint]:
    return (await store.snapshot()).to_dict(), await store.resume_point()


@pytest.fixture
def lease_kind(kind: StoreKind) -> StoreKind:
    """The store kinds that keep a lease in their backend."""
    if kind.name == "memory":
        pytest.skip("the memory store is one process: its lease is LocalLease, tested below")
    if kind.name == "cassandra-fake":
        pytest.skip("the fake CQL has no TTL; the lease runs on the real node (cassandra)")
    return kind


async def test_a_stale_token_commits_nothing(lease_kind: StoreKind, events: list[bytes]) -> None:
    """Holder A loses the lease to B: A's next commit raises and leaves the store as it was."""
    a_store, b_store = lease_kind.make(), lease_kind.make()
    await a_store.open()
    await b_store.open()
    try:
        assert isinstance(a_store, FencedStore)
        assert isinstance(b_store, FencedStore)
        a_lease, b_lease = a_store.lease(), b_store.lease()
        token_a = await a_lease.acquire("a", LEASE)
        assert token_a is not None
        assert await b_lease.acquire("b", LEASE) is None  # held and live: no takeover
        info = await b_lease.info()
        assert (info.holder, info.token) == ("a", token_a)
        a_store.set_fence(Fence("a", token_a, _far()))
        await a_store.commit(_batch(events[:100], 0))
        # A stops renewing (paused, cut off); once it expired, B takes over with a new token.
        # (Cassandra's TTL counts whole seconds and is given one more: up to LEASE + 2 s.)
        waited = time.monotonic()
        while (await b_lease.info()).holder is not None:
            assert time.monotonic() - waited < LEASE + 2.5, "the lease did not expire"
            await asyncio.sleep(0.1)
        assert time.monotonic() - waited > LEASE - 0.5  # and it did not expire early
        token_b = await b_lease.acquire("b", 30)
        assert token_b == token_a + 1
        before = await _state(b_store)
        with pytest.raises(LeaseLost):
            await a_store.commit(_batch(events[100:200], 100))
        assert await _state(b_store) == before  # nothing of A's batch landed
        assert await a_lease.renew("a", token_a, LEASE) is False
        # A writer without a fence (serve, replay) does not write under a live holder either.
        a_store.set_fence(None)
        with pytest.raises(LeaseLost):
            await a_store.commit(_batch(events[100:200], 100))
        assert await _state(b_store) == before
        # B's term opens the store afresh (as `wikipulse ingest` does), resumes from what A
        # committed and goes on.
        term = lease_kind.make()
        await term.open()
        try:
            assert isinstance(term, FencedStore)
            term.set_fence(Fence("b", token_b, _far()))
            assert (await term.resume_point()).position == "99"
            await term.commit(_batch(events[100:200], 100))
            assert (await term.snapshot()).to_dict() == expected_stats(events[:200])
        finally:
            await term.close()
        assert await b_lease.renew("b", token_b, 30) is True
        await b_lease.release("b", token_b)
        assert (await a_lease.info()).holder is None
    finally:
        await a_store.close()
        await b_store.close()


async def test_an_expired_fence_refuses_without_asking_the_store(
    lease_kind: StoreKind, events: list[bytes]
) -> None:
    """Fail closed: once the local deadline passed, the commit is refused at once."""
    store = lease_kind.make()
    await store.open()
    try:
        assert isinstance(store, FencedStore)
        token = await store.lease().acquire("a", 30)
        assert token is not None
        store.set_fence(Fence("a", token, time.monotonic() - 0.001))
        before = await _state(store)
        with pytest.raises(LeaseLost):
            await store.commit(_batch(events[:50], 0))
        assert await _state(store) == before
    finally:
        await store.close()


async def test_local_lease_is_always_held() -> None:
    """The memory store's lease: granted to whoever asks, a new token each time."""
    lease = LocalLease()
    assert await lease.acquire("a", 1) == 1
    assert await lease.renew("a", 1, 1) is True
    assert await lease.acquire("b", 1) == 2
    assert await lease.renew("a", 1, 1) is False
    assert (await lease.info()).holder == "b"
