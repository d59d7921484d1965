"""The pipeline waits out an unavailable store but stops on one that cannot take the batch."""

from __future__ import annotations

import json
import random

import pytest

from wikipulse.consumer import ConsumerState
from wikipulse.ingest import Committer, Pipeline
from wikipulse.retry import Backoff
from wikipulse.stats import Batch
from wikipulse.stores import StoreError, StoreUnavailable
from wikipulse.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio

EVENT = json.dumps({"meta": {"id": "e1"}, "server_name": "a.org", "bot": False}).encode()


class FlakyStore(MemoryStore):
    """A memory store whose first commits raise the given errors, one each."""

    def __init__(self, errors: list[Exception]) -> None:
        super().__init__()
        self.errors = errors
        self.attempts = 0

    async def commit(self, batch: Batch) -> None:
        """Fail while errors are left, then commit."""
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        await super().commit(batch)


async def test_an_outage_is_waited_out() -> None:
    """StoreUnavailable, however often, is retried until the commit succeeds."""
    store = FlakyStore([StoreUnavailable("down")] * 6)
    pipeline = Pipeline(store, retry_initial=0.001, retry_max=0.002)
    await pipeline.add(EVENT, "p1")
    await pipeline.flush()
    assert store.attempts == 7
    assert (await store.snapshot()).total == 1
    assert pipeline.state.store_ok is True


async def test_a_broken_store_stops_the_pipeline_at_once() -> None:
    """A StoreError that is not an outage (say, a wrong schema) is raised, not retried."""
    store = FlakyStore([StoreError("no such column: last_batch")])
    pipeline = Pipeline(store, retry_initial=0.001)
    await pipeline.add(EVENT, "p1")
    with pytest.raises(StoreError, match="last_batch"):
        await pipeline.flush()
    assert store.attempts == 1
    assert pipeline.state.store_ok is False
    assert pipeline.state.last_error == "store: no such column: last_batch"


async def test_an_unexpected_error_gets_a_few_retries_then_stops() -> None:
    """Another exception is retried three times, then raised."""
    store = FlakyStore([ValueError("bug")] * 10)
    pipeline = Pipeline(store, retry_initial=0.001, retry_max=0.002)
    await pipeline.add(EVENT, "p1")
    with pytest.raises(ValueError, match="bug"):
        await pipeline.flush()
    assert store.attempts == 4


async def test_an_unexpected_error_that_clears_loses_nothing() -> None:
    """An unexpected error that goes away within the retries loses no event."""
    store = FlakyStore([ValueError("glitch")] * 2)
    pipeline = Pipeline(store, retry_initial=0.001, retry_max=0.002)
    await pipeline.add(EVENT, "p1")
    await pipeline.flush()
    assert (await store.snapshot()).total == 1
    assert (await store.resume_point()).position == "p1"


async def test_outage_retries_wait_a_growing_jittered_delay() -> None:
    """Each retry of an outage waits up to twice as long as the one before, then resets."""
    waits: list[float] = []

    async def sleep(delay: float) -> None:
        waits.append(delay)

    store = FlakyStore([StoreUnavailable("down")] * 5)
    state = ConsumerState()
    committer = Committer(store, state, Backoff(1.0, 4.0, random.Random(1)), sleep=sleep)
    await committer.commit(Batch(total=0, touched=True, position="p"))
    ceilings = [1.0, 2.0, 4.0, 4.0, 4.0]
    assert len(waits) == 5
    assert all(0 <= wait <= ceiling for wait, ceiling in zip(waits, ceilings, strict=True))
    assert max(waits[2:]) > 1.0  # the ceiling really grew
    assert (state.store_ok, state.store_error) == (True, None)


async def test_a_reconnect_does_not_hide_a_failing_store() -> None:
    """The source clearing its own error leaves the store's error in /status."""
    state = ConsumerState()
    store = FlakyStore([StoreError("disk full")])
    pipeline = Pipeline(store, state=state)
    await pipeline.add(EVENT, "p1")
    with pytest.raises(StoreError):
        await pipeline.flush()
    state.source_error = None  # what a successful reconnect does
    assert state.last_error == "store: disk full"
    assert state.as_dict(0.0)["last_error"] == "store: disk full"
    state.stopped_error = "consumer stopped: StoreError: disk full"
    assert state.last_error == "consumer stopped: StoreError: disk full"


def test_backoff_rejects_nonsense_bounds() -> None:
    """A back-off whose maximum is below its initial delay is a programming error."""
    with pytest.raises(ValueError, match="initial"):
        Backoff(2.0, 1.0)
