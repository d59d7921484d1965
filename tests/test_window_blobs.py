"""The blob buckets and the threshold top-N, checked against plain sums."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tests.support.recorded import recorded_events, replay_batch
from wikipulse.window_blobs import Acc, Part, decode_part
from wikipulse.window_delta import WindowDelta
from wikipulse.window_minutes import delta_accs, minute_accs
from wikipulse.window_topn import best, top_items, top_of_tables


def _lists(seed: int, lists: int, keys: int, skew: float) -> list[tuple[list[str], list[int]]]:
    """Random (keys, counts) lists, highest count first, keys drawn with a heavy head."""
    rng = random.Random(seed)
    out = []
    for _ in range(lists):
        counts = Counter(f"k{int(rng.paretovariate(skew) * 10)}" for _ in range(keys))
        ranked = counts.most_common()
        out.append(([k for k, _ in ranked], [n for _, n in ranked]))
    return out


def _plain_top(lists: list[tuple[list[str], list[int]]], limit: int) -> list[tuple[str, int]]:
    totals: Counter[str] = Counter()
    for keys, counts in lists:
        for key, n in zip(keys, counts, strict=True):
            totals[key] += n
    return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]


@pytest.mark.parametrize(
    ("seed", "lists", "keys", "skew"),
    [(1, 30, 3000, 1.2), (2, 50, 2000, 0.8), (3, 5, 40000, 1.5), (4, 60, 500, 3.0)],
)
@pytest.mark.parametrize("limit", [1, 10, 100])
def test_threshold_top_equals_the_plain_sum(
    seed: int, lists: int, keys: int, skew: float, limit: int
) -> None:
    """Large lists (the threshold path) and small ones give the plain sum's top, ties by key."""
    data = _lists(seed, lists, keys, skew)
    assert top_items(data, limit) == _plain_top(data, limit)


@pytest.mark.parametrize(
    ("seed", "lists", "keys", "skew"),
    [
        (1, 30, 3000, 1.2),
        (2, 50, 2000, 0.8),
        (3, 5, 40000, 1.5),
        (4, 60, 500, 3.0),
        (5, 48, 4000, 2.5),
    ],
)
@pytest.mark.parametrize("limit", [1, 10, 100])
def test_deepening_top_of_tables_equals_the_plain_sum(
    seed: int, lists: int, keys: int, skew: float, limit: int
) -> None:
    """The threshold pass with tables (the memory store's) gives the plain sum's top."""
    data = _lists(seed, lists, keys, skew)
    tables = [dict(zip(k, n, strict=True)) for k, n in data]
    assert top_of_tables(data, tables, limit) == _plain_top(data, limit)


def test_deepening_top_of_tables_with_ties_at_the_bound() -> None:
    """Keys outside the candidates that tie the last one's sum still win by key order: a key
    seen deep in every list ("a") ties the head keys and must be found."""
    head = [f"h{i:03d}" for i in range(40)]
    data = []
    for j in range(40):
        # each list: its own head key 5 times, "a" 4 times, then 700 distinct keys once
        keys = [head[j], "a", *(f"z{j:02d}-{i:04d}" for i in range(700))]
        data.append((keys, [5, 4, *([1] * 700)]))
    tables = [dict(zip(k, n, strict=True)) for k, n in data]
    assert (
        top_of_tables(data, tables, 3)
        == _plain_top(data, 3)
        == [("a", 160), ("h000", 5), ("h001", 5)]
    )
    # a key below the first depth everywhere ("a", 1 in each of 40 lists) ties the best head
    # key (40 in one list) exactly at the bound, and wins by key order
    data = []
    for j in range(40):
        tail = [f"z{j:02d}-{i:04d}" for i in range(1000)]
        tail[500] = "a"
        data.append(([f"h{j:03d}", *tail], [40, *([1] * 1000)]))
    tables = [dict(zip(k, n, strict=True)) for k, n in data]
    assert top_of_tables(data, tables, 1) == _plain_top(data, 1) == [("a", 40)]
    everything_once = [
        ([f"u{i:05d}" for i in range(j, j + 3000)], [1] * 3000) for j in range(0, 30000, 1000)
    ]
    tables = [dict(zip(k, n, strict=True)) for k, n in everything_once]
    assert top_of_tables(everything_once, tables, 10) == _plain_top(everything_once, 10)


def test_threshold_top_with_every_count_tied() -> None:
    """Equal counts everywhere: the order falls to the keys."""
    data = [([f"u{i:05d}" for i in range(j, j + 3000)], [1] * 3000) for j in range(0, 30000, 1000)]
    assert top_items(data, 10) == _plain_top(data, 10)
    assert best({"b": 2, "a": 2, "c": 1}, 2) == [("a", 2), ("b", 2)]


def _delta() -> WindowDelta:
    delta = WindowDelta()
    # (minute, server, type, bot, user, title, diff)
    delta.raw += [
        (120, "a.org", "edit", False, "ann", "P", 5),
        (120, "b.org", "edit", True, "ann", "P", -3),
        (180, "a.org", "new", False, "bob", "Q", 7),
        (180, "a.org", "edit", False, "", "", 0),
    ]
    return delta


def test_buckets_round_trip_and_merge_with_exact_distinct_users() -> None:
    """A bucket encoded, decoded and merged with another counts users once per bucket."""
    minutes = delta_accs(_delta(), 60)
    assert sorted(minutes) == [120, 180]
    five = delta_accs(_delta(), 300)[0]
    part = Part()
    for dim, data in five.blobs():
        decode_part(part, dim, data)
    assert part.totals is not None
    assert part.counts is not None
    assert part.totals.types == {"edit": [3, 1, 5, 3], "new": [1, 0, 7, 0]}
    assert part.totals.distinct == 2  # ann, bob; the empty user is not counted
    assert part.counts.distinct == {"a.org": 2, "b.org": 1}
    merged = Acc()
    merged.add_part(part)
    merged.add(delta_accs(_delta(), 300)[0])
    again = Part()
    for dim, data in merged.blobs():
        decode_part(again, dim, data)
    assert again.totals is not None
    assert again.users is not None
    assert again.pages is not None
    assert again.totals.types["edit"] == [6, 2, 10, 6]
    assert again.totals.distinct == 2
    assert dict(zip(again.users.names, again.users.n, strict=True)) == {"ann": 4, "bob": 2}
    assert again.users.n == sorted(again.users.n, reverse=True)
    assert dict(zip(again.pages.keys, again.pages.n, strict=True)) == {
        ("a.org", "P"): 2,
        ("b.org", "P"): 2,
        ("a.org", "Q"): 2,
    }


def test_threshold_top_finds_a_key_never_at_the_head_of_any_list() -> None:
    """A key steady in every list beats the spikes that top each list alone."""
    data = []
    for i in range(50):
        keys = [f"spike{i}", "steady"] + [f"filler{i}-{j}" for j in range(600)]
        data.append((keys, [100, 5] + [1] * 600))
    top = top_items(data, 3)
    assert top == _plain_top(data, 3)
    assert top[0] == ("steady", 250)


def _acc_state(accs: dict[int, Acc]) -> dict[int, tuple[object, ...]]:
    return {m: (a.types, a.rows, a.users, a.members, a.pages) for m, a in accs.items()}


def test_minute_accs_of_merged_packed_ranges_equal_the_summed_maps_walked() -> None:
    """A replay's batch (ranges packed by workers, merged, a refolded range's raw events beside
    them) gives the same per-minute buckets read straight from the events as from its maps;
    a delta that is summed already takes the maps' way."""
    raw = recorded_events(5)
    direct = minute_accs(replay_batch(raw))
    walked = delta_accs(replay_batch(raw).compact(), 60)
    assert _acc_state(direct) == _acc_state(walked)
    live = WindowDelta()  # a live batch: recorded events only, no type and "" side by side
    live.raw = list(raw)
    assert _acc_state(minute_accs(live)) == _acc_state(walked)
    assert len(direct) == 7
    summed = replay_batch(raw)
    summed.compact()
    assert _acc_state(minute_accs(summed)) == _acc_state(walked)
