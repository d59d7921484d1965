"""The aggregator counts exactly: each event id once, canaries and invalid events apart."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from tests.support.counting import expected_stats
from wikipulse.dedup import RecentIds
from wikipulse.stats import Aggregator, Outcome, Partial, Stats


def _event(i: str, user: str | None = "u", bot: bool = False, server: str = "s") -> bytes:
    body: dict[str, object] = {"meta": {"id": i, "domain": server}, "server_name": server}
    body["bot"] = bot
    if user is not None:
        body["user"] = user
    return json.dumps(body).encode()


def _snapshot(agg: Aggregator) -> dict[str, object]:
    b = agg.batch
    return Stats(b.total, len(b.users), b.bots, b.by_server_name).to_dict()


def test_outcomes_of_each_kind_of_event() -> None:
    """Counted, duplicate, canary and invalid events are told apart and counted."""
    agg = Aggregator(RecentIds(10))
    assert agg.add_raw(_event("a"), "p1") is Outcome.COUNTED
    assert agg.add_raw(_event("a"), "p2") is Outcome.DUPLICATE
    assert agg.add_raw(_event("c", server="canary"), "p3") is Outcome.CANARY
    assert agg.add_raw(b"{oops", "p4") is Outcome.INVALID
    c = agg.counters
    assert (c.counted, c.duplicates, c.canaries, c.invalid) == (1, 1, 1, 1)
    assert agg.batch.position == "p4"  # the position moves on whatever became of the event
    assert agg.batch.event_ids == ["a"]


def test_distinct_users_ignore_missing_and_empty_names() -> None:
    """Suppressed (absent) and empty user names are not users; temporary accounts are."""
    agg = Aggregator(RecentIds(10))
    for i, user in enumerate(["A", "A", None, "", "~2025-12345-67", "B"]):
        agg.add_raw(_event(str(i), user=user))
    assert agg.batch.users == {"A", "~2025-12345-67", "B"}
    assert agg.batch.total == 6


def test_window_forgets_the_oldest_ids_by_generation() -> None:
    """The window holds at least `capacity` ids and at most twice that, dropping the oldest."""
    window = RecentIds(2)
    assert [window.add(x) for x in "abc"] == [True] * 3
    assert window.add("a") is False  # a, b form the older generation, c the newer one
    assert window.add("d") is True  # c, d fill the newer generation: a, b are dropped
    assert len(window) == 2
    assert "a" not in window
    assert ("c" in window, "d" in window) == (True, True)
    assert window.add("a") is True  # forgotten, so counted again


@given(st.lists(st.integers(0, 60).map(str), max_size=200), st.integers(1, 7))
def test_bulk_and_one_by_one_windows_agree(ids: list[str], capacity: int) -> None:
    """Extending with new ids in bulk leaves the same window as adding them one at a time."""
    distinct = list(dict.fromkeys(ids))
    one, bulk = RecentIds(capacity), RecentIds(capacity)
    for event_id in distinct:
        one.add(event_id)
    bulk.extend_new(distinct)
    assert [x in one for x in distinct] == [x in bulk for x in distinct]
    assert len(one) == len(bulk) <= 2 * capacity
    assert len(one) >= min(capacity, len(distinct))


@given(
    st.lists(st.integers(0, 30).map(str), max_size=40),
    st.lists(st.lists(st.integers(0, 40).map(str), max_size=12), max_size=8),
    st.integers(1, 9),
)
def test_add_new_adds_distinct_new_ids_or_leaves_the_window_as_it_was(
    start: list[str], parts: list[list[str]], capacity: int
) -> None:
    """`add_new` answers whether the ids are distinct and none is in the window (checked here
    with plain sets); if so the window is that of adding them one by one, else unchanged."""
    window, reference = RecentIds(capacity, start), RecentIds(capacity, start)
    for ids in parts:
        before = (set(window._new), set(window._old))
        fresh = len(set(ids)) == len(ids) and not any(x in before[0] | before[1] for x in ids)
        assert window.add_new(ids) is fresh
        if fresh:
            assert all(reference.add(x) for x in ids)
        assert (window._new, window._old) == (reference._new, reference._old)


def test_take_starts_a_new_batch() -> None:
    """After take(), the next events fold into a fresh batch."""
    agg = Aggregator(RecentIds(10))
    agg.add_raw(_event("a", bot=True))
    first = agg.take()
    assert (first.total, first.bots, first.touched) == (1, 1, True)
    assert (agg.batch.total, agg.batch.touched) == (0, False)


def test_stats_body_shape() -> None:
    """The /stats body has exactly the five fields, with non_bots = total - bots."""
    body = Stats(10, 4, 3, {"b": 2, "a": 8}).to_dict()
    assert body == {
        "total": 10,
        "distinct_users": 4,
        "bots": 3,
        "non_bots": 7,
        "by_server_name": {"a": 8, "b": 2},
    }
    assert list(body["by_server_name"]) == ["a", "b"]  # busiest first


_events = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from("abcdefgh"),
            st.one_of(st.none(), st.sampled_from(["", "U1", "U2", "Ü3"])),
            st.booleans(),
            st.sampled_from(["x.org", "y.org", "canary"]),
        ).map(lambda t: _event(t[0], t[1], t[2], t[3])),
        st.sampled_from([b"garbage", b"[]", b'{"meta":{}}', b""]),
    ),
    max_size=60,
)


@given(_events)
def test_fold_and_add_raw_agree_with_an_independent_count(lines: list[bytes]) -> None:
    """Folding lines, adding them one by one, and the stdlib count give the same statistics."""
    folded = Aggregator(RecentIds(1000))
    folded.fold(lines)
    one_by_one = Aggregator(RecentIds(1000))
    for line in lines:
        if line:
            one_by_one.add_raw(line)
    assert _snapshot(folded) == _snapshot(one_by_one) == expected_stats(lines)
    assert folded.counters == one_by_one.counters


def _partial_of(lines: list[bytes]) -> Partial:
    """Fold lines apart, as a worker does, and hand over the part."""
    worker = Aggregator(RecentIds(1))
    worker.fold(lines, dedup=False)
    b, c = worker.batch, worker.counters
    ids = b.event_ids
    return Partial(
        b.total, b.bots, b.by_server_name, ids, sorted(b.users),
        c.canaries, c.invalid, worker.last_error, c.last_dt,
    )  # fmt: skip


def test_merging_parts_equals_folding_in_order() -> None:
    """Parts folded apart and merged give what folding every event here gives."""
    lines = [
        _event(str(i), user=f"u{i % 7}", bot=i % 3 == 0, server=f"s{i % 4}") for i in range(90)
    ]
    lines[40] = b"{broken"
    whole = Aggregator(RecentIds(1000))
    whole.fold(lines)
    merged = Aggregator(RecentIds(1000))
    for start in range(0, 90, 30):
        assert merged.merge(_partial_of(lines[start : start + 30]))
    assert _snapshot(merged) == _snapshot(whole)
    assert merged.batch.event_ids == whole.batch.event_ids
    assert (merged.counters.counted, merged.counters.invalid) == (89, 1)


def test_a_part_that_repeats_an_event_is_refused_whole() -> None:
    """A part sharing an id with the window, or repeating one, changes nothing."""
    agg = Aggregator(RecentIds(1000))
    agg.fold([_event("a"), _event("b")])
    before = (_snapshot(agg), agg.counters.counted, len(agg.recent))
    assert not agg.merge(_partial_of([_event("c"), _event("b")]))  # "b" is in the window
    assert not agg.merge(_partial_of([_event("d"), _event("d")]))  # repeated within the part
    assert (_snapshot(agg), agg.counters.counted, len(agg.recent)) == before


def test_without_windows_the_counts_are_the_same_and_no_window_is_kept() -> None:
    """An aggregator told to keep no windows counts exactly the same and folds no window data."""
    lines = [_event(str(i), user=f"u{i % 5}", bot=i % 4 == 0) for i in range(40)]
    lines = [
        line.replace(b'"meta": {', b'"meta": {"dt": "2026-11-01T12:00:00Z", ') for line in lines
    ]
    with_windows, without = Aggregator(RecentIds(100)), Aggregator(RecentIds(100), windows=False)
    with_windows.fold(lines)
    without.fold(lines)
    assert without.add_raw(_event("late"), "p") is Outcome.COUNTED
    with_windows.add_raw(_event("late"), "p")
    assert _snapshot(without) == _snapshot(with_windows)
    assert with_windows.batch.windows.raw  # the windows were folded where asked for
    assert not without.batch.windows.raw
