"""The writer's bucket-sorted blob values equal `Acc.structs` byte for byte."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tests.support.generated import generate
from wikipulse.dedup import RecentIds
from wikipulse.stats import Aggregator
from wikipulse.stores.window_rank import blobs, ranked, structs
from wikipulse.window_blobs import Acc
from wikipulse.window_minutes import minute_accs


def test_ranked_is_the_stable_sort_by_count() -> None:
    """Highest count first, ties in the dict's order, on random counts with many ties."""
    rng = random.Random(3)
    for size in (0, 1, 2, 50, 5000):
        counts = {
            f"k{rng.randrange(10**6)}": rng.choice((1, 1, 1, 2, 3, 7, 40)) for _ in range(size)
        }
        expected = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
        assert ranked(counts) == ([k for k, _ in expected], [n for _, n in expected])


def test_structs_and_blobs_equal_the_accs_own(tmp_path: Path) -> None:
    """Every minute of two generated hours, and the hours summed, encode to the same bytes."""
    lines = generate(tmp_path, 6000, seed=12, canaries=0, page_skew=4, rate=1.0)
    aggregator = Aggregator(RecentIds(10_000), windows=True)
    for index, line in enumerate(lines.read_bytes().splitlines()):
        aggregator.add_raw(line, str(index))
    minutes = minute_accs(aggregator.take().windows)
    hours: dict[int, Acc] = {}
    for minute, acc in minutes.items():
        hours.setdefault(minute - minute % 3600, Acc()).add(acc)
    assert len(minutes) > 90
    assert len(hours) == 2
    for acc in [*minutes.values(), *hours.values()]:
        assert structs(acc) == acc.structs()
        assert blobs(acc) == acc.blobs()


@pytest.mark.parametrize("pages", [False, True])
def test_index_built_in_slices_is_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch, pages: bool
) -> None:
    """An index built a few keys per C call equals the one built in a single call, for users
    and for pages, with non-ASCII keys."""
    from wikipulse import window_index

    rng = random.Random(5 + pages)
    names = {f"{rng.choice('aäé日z~')}{rng.randrange(10**5)}" for _ in range(3000)}
    keys: list[Any] = sorted(names)
    rng.shuffle(keys)
    if pages:
        keys = [(f"w{rng.randrange(7)}.org", name) for name in keys]
    counts = sorted((rng.choice((1, 1, 2, 5, 9)) for _ in keys), reverse=True)
    whole = window_index.index_blobs(keys, counts, 50)
    monkeypatch.setattr(window_index, "SLICE", 37)
    assert window_index.index_blobs(keys, counts, 50) == whole
    assert whole is not None
