"""Live events folded per network read give exactly what folding them one by one gives."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from wikipulse.consumer import ConsumerState
from wikipulse.feeds import Events, Feed, RawEvent
from wikipulse.ingest import Pipeline
from wikipulse.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio


def _event(i: int, *, event_id: str | None = None, domain: str = "x") -> bytes:
    return json.dumps(
        {
            "meta": {
                "id": event_id or f"id{i}",
                "domain": domain,
                "dt": f"2024-05-01T12:00:{i % 60:02}Z",
            },
            "server_name": f"s{i % 4}.org",
            "bot": i % 3 == 0,
            "user": f"u{i % 5}" if i % 7 else None,
        }
    ).encode()


def _events() -> list[RawEvent]:
    """30 events: repeats, a canary, malformed and blank data, and some without a position."""
    items: list[RawEvent] = []
    for i in range(30):
        if i == 5:
            data = _event(i, event_id="id2")  # a repeat
        elif i == 9:
            data = _event(i, domain="canary")
        elif i == 13:
            data = b"not json"
        elif i == 17:
            data = b""  # `data:` with nothing: invalid one by one, so invalid in bulk too
        elif i == 21:
            data = b"   "
        else:
            data = _event(i)
        items.append((data, None if i % 6 == 4 else f"p{i}"))
    return items


async def _feed(items: list[Feed]) -> AsyncIterator[Feed]:
    for item in items:
        yield item


async def _run(items: list[Feed], max_events: int) -> dict[str, Any]:
    store = MemoryStore()
    state = ConsumerState()
    pipeline = Pipeline(store, max_events=max_events, state=state)
    await pipeline.run(_feed(items))
    c = state.counters
    return {
        "stats": (await store.snapshot()).to_dict(),
        "position": (await store.resume_point()).position,
        "counters": (c.counted, c.duplicates, c.canaries, c.invalid),
    }


@pytest.mark.parametrize("read_size", [1, 4, 7, 30])
@pytest.mark.parametrize("max_events", [3, 1000])
async def test_events_per_read_equal_events_one_by_one(read_size: int, max_events: int) -> None:
    """Stats, stored position and the counted/duplicate/canary/invalid counters are equal to
    those of the same 30 events fed one at a time: (25, 1, 1, 3) and position "p29"."""
    items = _events()
    reads: list[Feed] = [
        Events([d for d, _ in items[i : i + read_size]], [p for _, p in items[i : i + read_size]])
        for i in range(0, len(items), read_size)
    ]
    one_by_one = await _run(list(items), max_events)
    bulk = await _run(reads, max_events)
    assert bulk == one_by_one
    assert bulk["counters"] == (25, 1, 1, 3)
    assert bulk["position"] == "p29"
