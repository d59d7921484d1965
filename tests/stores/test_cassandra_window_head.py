"""The exact top-N merge over bucket heads (pure): equal to summing every key, whatever the data."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from hypothesis import given, settings
from hypothesis import strategies as st

from wikipulse.stores.cassandra.window_head import Head, Key, encode_head, merge

_keys = st.sampled_from([(f"k{i}",) for i in range(30)])
_lists = st.lists(st.dictionaries(_keys, st.integers(1, 40), max_size=25), max_size=8)


async def _gather(work: list[Awaitable[dict[Key, int]]]) -> list[dict[Key, int]]:
    return list(await asyncio.gather(*work))


def _brute(lists: list[dict[Key, int]], limit: int) -> list[tuple[Key, int]]:
    """The answer by a plain loop over every key of every list."""
    totals: dict[Key, int] = {}
    for counts in lists:
        for key, n in counts.items():
            totals[key] = totals.get(key, 0) + n
    return sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]


def _heads(lists: list[dict[Key, int]], size: int, reads: list[int]) -> list[Head]:
    def full(counts: dict[Key, int]) -> Awaitable[dict[Key, int]]:
        async def read() -> dict[Key, int]:
            reads.append(1)
            return counts

        return read()

    return [
        Head.decode(encode_head(c, size), lambda c=c: full(c))  # type: ignore[misc]
        for c in lists
    ]


@settings(max_examples=300, deadline=None)
@given(_lists, _lists, st.integers(1, 3), st.integers(1, 8))
def test_merge_equals_the_sum_of_every_key(
    exact: list[dict[Key, int]], headed: list[dict[Key, int]], size: int, limit: int
) -> None:
    """Heads of a few keys, full lists and any limit: the merge gives the brute-force answer."""
    reads: list[int] = []
    heads = _heads(headed, size, reads)
    got = asyncio.run(merge(exact, heads, limit, _gather))
    assert got == _brute(exact + headed, limit)


def test_a_clear_head_reads_no_tail() -> None:
    """When the heads settle the answer (a key far ahead), no full blob is read."""
    hot = {("bot",): 1000, **{(f"u{i}",): 1 for i in range(50)}}
    reads: list[int] = []
    heads = _heads([hot] * 24, 5, reads)
    got = asyncio.run(merge([], heads, 1, _gather))
    assert got == [(("bot",), 24_000)]
    assert reads == []


def test_a_key_left_out_of_every_head_can_win_a_tie() -> None:
    """A key no head shows, whose count ties the leader's, comes first when its key sorts first."""
    reads: list[int] = []
    heads = _heads([{("b",): 5, ("a",): 5}], 1, reads)  # the head shows b only, floor 5
    assert asyncio.run(merge([], heads, 1, _gather)) == [(("a",), 5)]
