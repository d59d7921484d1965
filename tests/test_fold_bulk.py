"""A block folded in bulk gives exactly what `Aggregator.fold` gives on the same events.

The live path hands the pipeline one block per network read and tries `fold_block` first;
whatever the block holds (repeated ids inside it or across blocks, canaries, garbage, bad
UTF-8, fields of the wrong type, odd times), the batch, the counters, the dedup window and the
time-window rows must be those of the per-event fold, block after block.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.counting import expected_stats
from wikipulse.dedup import RecentIds
from wikipulse.fold_bulk import fold_block
from wikipulse.stats import Aggregator, Stats
from wikipulse.windows import MINUTE_CACHE


def _event(
    event_id: str,
    *,
    dt: str | None = "2024-05-01T12:00:05Z",
    domain: str = "x.org",
    server: Any = "a.org",
    bot: Any = False,
    user: Any = "u",
    kind: Any = "edit",
    title: Any = "T",
    length: Any = None,
) -> bytes:
    meta: dict[str, Any] = {"id": event_id, "domain": domain}
    if dt is not None:
        meta["dt"] = dt
    body: dict[str, Any] = {"meta": meta, "server_name": server, "bot": bot, "type": kind}
    for name, value in (("user", user), ("title", title), ("length", length)):
        if value is not None:
            body[name] = value
    return json.dumps(body, ensure_ascii=False).encode()


_TIMES = st.sampled_from(
    [
        "2024-05-01T12:00:05Z",
        "2024-05-01T12:00:59.999Z",
        "2024-05-01T12:01:00Z",
        "2024-05-01T13:59:00.5Z",
        "2024-05-01T12:00Z",
        "2024-05-01T14:00:30Z",
        "2024-05-01T14:00:00+02:00",  # not UTC: parsed whole, not by its first 16 characters
        "2024-05-01T12:00:99Z",  # unreadable, in a minute others have
        "2024-05-01T12:00xZ",
        "garbage",
        "",
        None,
    ]
)
_VALID = st.builds(
    _event,
    st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h"]),  # repeats, in and across blocks
    dt=_TIMES,
    server=st.sampled_from(["a.org", "b.org", "c.org"]),
    bot=st.booleans(),
    user=st.sampled_from(["u", "v", "", None, "ユーザー"]),
    kind=st.sampled_from(["edit", "new", "", None]),
    title=st.sampled_from(["T", "ページ", None]),
    length=st.sampled_from([None, {"new": 10}, {"old": 4, "new": 1}, {"old": None, "new": 3}, {}]),
)
_HOSTILE = st.one_of(
    st.builds(_event, st.sampled_from(["c1", "c2"]), domain=st.just("canary")),
    st.builds(_event, st.just("w"), bot=st.just("yes")),  # wrong type
    st.builds(_event, st.just("w"), server=st.just(5)),
    st.builds(_event, st.just("")),  # an empty id is malformed
    st.sampled_from([b"", b"   ", b"{oops", b"[]", b"null", b'{"meta": 1}']),
    st.sampled_from([b'{"meta":{"id":"z\xff"},"server_name":"a","bot":false}']),  # bad UTF-8
    st.binary(max_size=20),
)
_BLOCKS = st.lists(
    st.lists(st.one_of(_VALID, _VALID, _VALID, _HOSTILE), max_size=8), min_size=1, max_size=8
)


def _fold(blocks: list[list[bytes]], *, bulk: bool, capacity: int, windows: bool) -> Any:
    MINUTE_CACHE.clear()  # both runs start from the same cache: a minute is parsed once
    agg = Aggregator(RecentIds(capacity), windows=windows)
    bulked = 0
    for block in blocks:
        if bulk and fold_block(agg, block):
            bulked += 1
        else:
            agg.fold(block, blank_invalid=True)
    b, c, r = agg.batch, agg.counters, agg.recent
    return bulked, {
        "batch": (b.total, b.bots, b.by_server_name, b.users, b.event_ids, b.touched),
        "windows": b.windows.raw,
        "counters": (c.counted, c.duplicates, c.canaries, c.invalid, c.last_dt),
        "recent": (r._new, r._old),
    }


@settings(max_examples=300)
@given(_BLOCKS, st.sampled_from([2, 3, 5, 100]), st.booleans())
def test_blocks_folded_in_bulk_equal_the_per_event_fold(
    blocks: list[list[bytes]], capacity: int, windows: bool
) -> None:
    """Batch, window rows, counters and the dedup window's generations (small capacities
    rotate inside and across blocks) are those of `Aggregator.fold` on each block."""
    _, expected = _fold(blocks, bulk=False, capacity=capacity, windows=windows)
    _, got = _fold(blocks, bulk=True, capacity=capacity, windows=windows)
    assert got == expected


def test_clean_blocks_are_folded_in_bulk_and_counted_as_an_independent_count_says() -> None:
    """Three blocks of new, valid events (ids straddling blocks, times in two minutes, one
    new in the third block) are all folded in bulk; the totals equal the stdlib count."""
    events = [
        _event(f"id{i}", dt=f"2024-05-01T12:0{i // 10}:{i % 60:02}Z", bot=i % 3 == 0)
        for i in range(30)
    ]
    blocks = [events[0:7], events[7:19], events[19:30]]
    bulked, got = _fold(blocks, bulk=True, capacity=100, windows=True)
    assert bulked == 3
    expected = expected_stats(events)
    b = got["batch"]
    assert Stats(b[0], len(b[3]), b[1], b[2]).to_dict() == expected
    assert [row[0] for row in got["windows"]] == [1714564800 + 60 * (i // 10) for i in range(30)]


@pytest.mark.parametrize(
    "odd",
    [
        _event("id1"),  # repeats an id of the block
        _event("c", domain="canary"),
        b"{oops",
        b"",
        _event("w", bot="yes"),
        b'{"meta":{"id":"z"},"server_name":"a","bot":false,"title":"\xe3\x81"}',
    ],
)
def test_a_block_with_anything_odd_is_left_to_the_per_event_fold(odd: bytes) -> None:
    """A repeat, a canary, garbage, blank data, a wrong type or bad UTF-8 anywhere in the
    block: fold_block changes nothing and says so."""
    agg = Aggregator(RecentIds(100))
    assert fold_block(agg, [_event("id1"), _event("id2"), odd]) is False
    assert agg.batch.total == 0
    assert not agg.batch.touched
    assert len(agg.recent) == 0
    assert agg.batch.windows.raw == []


def test_an_id_already_in_the_dedup_window_sends_the_block_to_the_per_event_fold() -> None:
    """A replayed event (its id committed before) makes the block fall back; the per-event
    fold then counts the new one and drops the replay."""
    agg = Aggregator(RecentIds(100, ["old"]))
    block = [_event("old"), _event("new")]
    assert fold_block(agg, block) is False
    agg.fold(block, blank_invalid=True)
    assert (agg.counters.counted, agg.counters.duplicates) == (1, 1)


@pytest.mark.parametrize(
    "times",
    [
        ["2024-05-01T14:00:30Z", "2024-05-01T14:00:00+02:00"],  # a cached prefix, not UTC
        ["2024-05-01T12:00:99Z", "2024-05-01T12:00:05Z"],  # unreadable first, then its minute
        ["2024-05-01T12:00:05Z", "2024-05-01T12:00:99Z", None, ""],
    ],
)
def test_times_in_separate_blocks_land_in_the_minutes_the_per_event_fold_gives(
    times: list[str | None],
) -> None:
    """One event per block, in order: each lands in the same minute (or none) as one by one;
    a time with an offset is never read by its first 16 characters."""
    blocks = [[_event(f"id{i}", dt=dt)] for i, dt in enumerate(times)]
    _, expected = _fold(blocks, bulk=False, capacity=100, windows=True)
    bulked, got = _fold(blocks, bulk=True, capacity=100, windows=True)
    assert got == expected
    assert bulked == len(blocks)
    if times[1] == "2024-05-01T14:00:00+02:00":
        assert [row[0] for row in got["windows"]] == [1714572000, 1714564800]
