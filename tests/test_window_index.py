"""Top-list indexes: exact top-N from heads and tail lookups equals summing every key."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wikipulse import window_index
from wikipulse.window_blobs import Acc
from wikipulse.window_index import (
    Ranked,
    TopPlan,
    counts_of,
    index_blobs,
    ranked_of,
    top_ranked,
    users_of,
)

_names = st.sampled_from(["a", "b", "Bé", "c\x00d", "zz", "日本", "", "y" * 40])
_pages = st.tuples(st.sampled_from(["en.wikipedia.org", "de", "x\x00"]), _names)


def _sorted(counts: Counter[Any]) -> tuple[list[Any], list[int]]:
    """Keys and counts, highest first (as a bucket's blob holds them)."""
    items = sorted(counts.items(), key=lambda kv: -kv[1])
    return [k for k, _ in items], [n for _, n in items]


def _expected(buckets: list[Counter[Any]], limit: int) -> list[tuple[Any, int]]:
    """The answer by brute force: every key summed, highest first, ties by key."""
    total: Counter[Any] = Counter()
    for bucket in buckets:
        total.update(bucket)
    return sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.dictionaries(st.one_of(_names, _pages.map(str)), st.integers(1, 30), max_size=12),
            st.integers(0, 6),
            st.booleans(),
        ),
        min_size=1,
        max_size=8,
    ),
    st.integers(1, 5),
)
def test_top_from_heads_equals_summing_everything(
    buckets: list[tuple[dict[str, int], int, bool]], limit: int
) -> None:
    """Indexed lists with small heads, mixed with lists read whole, give the exact answer,
    with only the tails the plan asks for read (a lookup in another one would raise)."""
    lists: list[Ranked[Any]] = []
    tails: list[bytes | None] = []
    for counts, head, indexed in buckets:
        keys, n = _sorted(Counter(counts))
        blobs = index_blobs(keys, n, head) if indexed else None
        if blobs is not None:
            lists.append(ranked_of(blobs[0], pages=False))
            tails.append(blobs[1])
        else:
            lists.append(Ranked(keys, n))
            tails.append(None)
    plan = TopPlan(lists, limit)
    for i in plan.tails():
        tail = tails[i]
        assert tail is not None
        lists[i].attach(tail)
    assert plan.result() == _expected([Counter(c) for c, _, _ in buckets], limit)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(_pages, st.integers(1, 9), max_size=15), min_size=1, max_size=6))
def test_page_indexes_give_exact_tops_and_lookups(
    buckets: list[dict[tuple[str, str], int]],
) -> None:
    """(wiki, title) keys survive the index, a key looked up in a tail gives its count there
    (0 when absent), and a bucket whose tail has a wiki name holding NUL gets no index."""
    lists: list[Ranked[Any]] = []
    for counts in buckets:
        keys, n = _sorted(Counter(counts))
        blobs = index_blobs(keys, n, 1)
        if any("\x00" in wiki for wiki, _ in keys[1:]):
            assert blobs is None
            lists.append(Ranked(keys, n))  # read whole, as the stores then do
            continue
        assert blobs is not None
        ranked = ranked_of(blobs[0], pages=True)
        ranked.attach(blobs[1])
        for key, count in zip(keys[1:], n[1:], strict=True):
            assert ranked.lookup(key) == count
        assert ranked.lookup(("nowhere", "x")) == 0
        assert ranked.rest() == dict(zip(keys[1:], n[1:], strict=True))
        lists.append(ranked)
    assert top_ranked(lists, 3) == _expected([Counter(c) for c in buckets], 3)


def test_one_wiki_of_a_counts_blob_equals_decoding_it_whole() -> None:
    """`counts_of` gives one wiki's rows and distinct users as the whole blob holds them."""
    acc = Acc()
    acc.rows = {"a": {"edit": [3, 1, 10, 2]}, "b": {"new": [1, 0, 5, 0], "log": [2, 2, 0, 0]}}
    acc.members = {"a": {"u1", "u2"}, "b": {"u3"}}
    acc.users = {"u1": 1, "u2": 2, "u3": 3}
    blobs = dict(acc.blobs())
    assert counts_of(blobs["c"], "b") == (
        {"b": {"new": [1, 0, 5, 0], "log": [2, 2, 0, 0]}},
        {"b": 1},
    )
    assert counts_of(blobs["c"], "nowhere") == ({}, {})


def test_users_for_a_union_equal_the_whole_blobs_users() -> None:
    """`users_of` gives the names, and one wiki's members, as the whole blob holds them."""
    acc = Acc()
    acc.users = {"u1": 1, "u2": 5, "u3": 3}
    acc.members = {"a": {"u1", "u2"}, "b": {"u3", "u2"}}
    blobs = dict(acc.blobs())
    users = users_of(blobs["u"], "b")
    assert users.names == ["u2", "u3", "u1"]
    assert sorted(users.names[i] for i in users.members["b"]) == ["u2", "u3"]
    assert list(users.members) == ["b"]
    assert users_of(blobs["u"], None).members == {}
    assert users_of(blobs["u"], "nowhere").members == {}


try:
    from wikipulse import _index as C
except ImportError:  # built without a C compiler
    C = None  # type: ignore[assignment]

_any_text = st.text(st.characters(codec="utf-8"), max_size=6) | _names
_any_wiki = st.sampled_from(["de", "en.wikipedia.org", "d", "é"])


@settings(max_examples=400, deadline=None)
@given(
    keys=st.lists(_any_text, unique=True, max_size=40)
    | st.lists(
        st.tuples(st.sampled_from(["de", "en.wikipedia.org", "d", "é"]), _any_text),
        unique=True,
        max_size=40,
    ),
    start=st.integers(0, 45),
    data=st.data(),
)
def test_the_c_tail_is_the_python_tail(keys: list[Any], start: int, data: st.DataObject) -> None:
    """The tail built in C is byte for byte the Python one: order, offsets, counts."""
    if C is None:
        pytest.skip("the C extension was not built here")
    n = data.draw(st.lists(st.integers(0, 2**32 - 1), min_size=len(keys), max_size=len(keys)))
    assert C.tail(keys, n, start) == window_index.python_tail(keys, n, start)


def test_the_c_tail_refuses_what_the_python_tail_cannot_index() -> None:
    """A wiki holding NUL: no index (None) in both; a lone surrogate: the Python tail is
    used (C refuses strict UTF-8 for it); a count over 32 bits fails in both."""
    if C is None:
        pytest.skip("the C extension was not built here")
    nul = [("a", "x"), ("b\x00c", "y")]
    assert C.tail(nul, [2, 1], 0) is None
    assert window_index.python_tail(nul, [2, 1], 0) is None
    assert C.tail(nul, [2, 1], 2) == window_index.python_tail(nul, [2, 1], 2)  # not in the tail
    lone = ["a", "b\ud800", "c"]
    with pytest.raises(UnicodeEncodeError):
        C.tail(lone, [3, 2, 1], 0)
    head, tail = index_blobs(lone, [3, 2, 1], 1) or (b"", b"")
    ranked = ranked_of(head, False)
    ranked.attach(tail)
    assert ranked.lookup("b\ud800") == 2
    assert ranked.lookup("c") == 1
    with pytest.raises(OverflowError):
        C.tail(["a"], [2**32], 0)
    with pytest.raises(OverflowError):
        window_index.python_tail(["a"], [2**32], 0)


def test_the_index_extension_is_built_in_ci() -> None:
    """CI builds the extension (gcc is there): the fast path is what the tests exercise."""
    if os.environ.get("CI") != "true" and C is None:
        pytest.skip("the C extension was not built here (no C compiler at install)")
    assert C is not None
    assert window_index._c_tail is C.tail
