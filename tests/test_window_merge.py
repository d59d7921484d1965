"""Window blobs summed and indexed in C (`wikipulse._merge`) equal the Python sums, exactly.

Every expected value here is computed by the Python path (`Acc`, `window_rank`,
`window_index.index_blobs`, `window_minutes.events_accs`), which the rest of the suite checks
against plain loops; the C results are decoded and compared as values (ties in a ranked list
may be ordered differently: nothing reads that order), and their bytes are compared with
msgspec's encoding of the decoded values, so they are the canonical msgpack msgspec writes.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wikipulse import window_minutes
from wikipulse.events import CANARY_DOMAIN, MAX_LENGTH, Length, RecentChange, decode_json_only
from wikipulse.replay import parallel
from wikipulse.stores import window_held, window_rank
from wikipulse.stores.window_held import Encoded, acc_of, merged
from wikipulse.window_blobs import DIMS, Acc, Counts, Pages, Totals, Users
from wikipulse.window_delta import WindowDelta, window_rows
from wikipulse.window_index import index_blobs, index_pages
from wikipulse.window_minutes import events_accs, recorded_minutes
from wikipulse.window_packing import RawWindowEvent
from wikipulse.windows import MINUTE_CACHE, minute_of

C: Any
try:
    from wikipulse import _merge as C
except ImportError:  # built without a C compiler
    C = None

needs_c = pytest.mark.skipif(C is None, reason="the C extension was not built here")

# Names that share prefixes (of 8 and 16 bytes: the index sorts on those first), hold NUL,
# are empty, or are not ASCII; wikis that are prefixes of each other.
_text = st.sampled_from(
    ["a", "ab", "b", "Bé", "c\x00d", "", "日本", "Страница 1", "Страница 2", "y" * 40, "y" * 41]
)
_wiki = st.sampled_from(["de", "d", "de.wikipedia.org", "é", "en.wikipedia.org"])


def _acc(users: dict[tuple[str, str], int], pages: dict[tuple[str, str], int]) -> Acc:
    """A bucket with these (wiki, user) and (wiki, title) counts, and rows to match."""
    acc = Acc()
    for (wiki, user), n in users.items():
        acc.users[user] = acc.users.get(user, 0) + n
        acc.members.setdefault(wiki, set()).add(user)
    for key, n in pages.items():
        acc.pages[key] = n
        row = acc.rows.setdefault(key[0], {}).setdefault("edit", [0, 0, 0, 0])
        row[0] += n
        acc.types.setdefault("edit", [0, 0, 0, 0])[0] += n
    return acc


_accs = st.lists(
    st.builds(
        _acc,
        st.dictionaries(st.tuples(_wiki, _text), st.integers(1, 400), max_size=15),
        st.dictionaries(st.tuples(_wiki, _text), st.integers(1, 400), max_size=15),
    ),
    min_size=1,
    max_size=6,
)


def _values(item: window_held.Held) -> tuple[Any, ...]:
    """What a bucket holds, as plain values (member sets by name, not by position)."""
    rows = dict(window_held.blob_rows(item))
    t = msgspec.msgpack.decode(rows["t"], type=Totals)
    c = msgspec.msgpack.decode(rows["c"], type=Counts)
    u = msgspec.msgpack.decode(rows["u"], type=Users)
    p = msgspec.msgpack.decode(rows["p"], type=Pages)
    assert u.n == sorted(u.n, reverse=True)
    assert p.n == sorted(p.n, reverse=True)
    assert msgspec.msgpack.encode(u) == rows["u"]
    assert msgspec.msgpack.encode(p) == rows["p"]
    members = {wiki: {u.names[i] for i in at} for wiki, at in u.members.items()}
    return (
        t.types,
        t.distinct,
        c.rows,
        c.distinct,
        dict(zip(u.names, u.n, strict=True)),
        members,
        dict(zip(map(tuple, p.keys), p.n, strict=True)),
    )


def _python_sum(accs: list[Acc]) -> Acc:
    total = Acc()
    for acc in accs:
        total.add(acc)
    return total


@needs_c
@settings(max_examples=300, deadline=None)
@given(accs=_accs, encoded=st.lists(st.booleans(), min_size=6, max_size=6))
def test_buckets_summed_from_blobs_equal_the_python_sum(
    accs: list[Acc], encoded: list[bool]
) -> None:
    """Any mix of blobs and `Acc`s sums in C to what Python sums, and leaves them as they
    were (`keep`: the writer sums a batch's minutes for a late part, then keeps them)."""
    expected = _values(_python_sum(accs))
    items: list[window_held.Held] = [
        Encoded(dict(window_rank.blobs(acc))) if as_blob else acc
        for acc, as_blob in zip(accs, encoded, strict=False)
    ]
    before = [_values(item) for item in items]
    if len(items) > 1 and any(isinstance(item, Encoded) for item in items):
        assert isinstance(merged(items, keep=True), Encoded)
    assert _values(merged(items, keep=True)) == expected
    assert [_values(item) for item in items] == before
    assert _values(acc_of(merged(items))) == expected


@needs_c
@settings(max_examples=300, deadline=None)
@given(accs=_accs, head=st.integers(0, 12))
def test_the_c_index_is_the_python_index_byte_for_byte(accs: list[Acc], head: int) -> None:
    """The index (head and tail) of a summed bucket is exactly `index_blobs`' of its keys in
    the blob's order, for users and pages: the tail's bytewise order, offsets and counts."""
    blob = merged([Encoded(dict(window_rank.blobs(acc))) for acc in accs], keep=True)
    rows = dict(window_held.blob_rows(blob))
    u = msgspec.msgpack.decode(rows["u"], type=Users)
    p = msgspec.msgpack.decode(rows["p"], type=Pages)
    assert C.index(rows["u"], False, head) == index_blobs(u.names, u.n, head)
    pages = [tuple(key) for key in p.keys]
    assert C.index(rows["p"], True, head) == index_blobs(pages, p.n, head)


@needs_c
def test_the_c_index_refuses_what_the_python_index_refuses() -> None:
    """A wiki holding NUL in the tail: no index (None) in both; in the head only: indexed."""
    acc = _acc({}, {("a", "x"): 3, ("b\x00c", "y"): 1})
    rows = dict(window_rank.blobs(acc))
    assert C.index(rows["p"], True, 0) is None
    assert index_blobs([("a", "x"), ("b\x00c", "y")], [3, 1], 0) is None
    assert C.index(rows["p"], True, 2) == index_blobs([("a", "x"), ("b\x00c", "y")], [3, 1], 2)
    with pytest.raises(ValueError, match="msgpack"):
        C.index(rows["p"][:-1], True, 0)
    blobs = (rows["t"], rows["c"], rows["u"], rows["p"])
    with pytest.raises(ValueError, match="msgpack"):
        C.merge([blobs, (rows["t"], rows["c"], rows["u"], rows["u"])])
    with pytest.raises(ValueError, match="msgpack"):
        C.merge([blobs, (rows["t"], rows["c"], rows["u"] + b"\x00", rows["p"])])
    with pytest.raises(ValueError, match="msgpack"):
        C.merge([blobs, (rows["t"], rows["p"], rows["u"], rows["p"])])
    with pytest.raises(TypeError, match="4 bytes"):
        C.merge([blobs[:3]])


_kind = st.sampled_from([None, "", "edit", "new", "log", "unknown", "categorize"])
_events = st.lists(
    st.tuples(
        st.sampled_from([0, 60, 120, -60, 2**40]),
        _wiki,
        _kind,
        st.booleans(),
        st.sampled_from([None, "", "a", "Bé", "c\x00d", "日本"]),
        st.sampled_from([None, "", "x", "Страница 1", "Страница 2"]),
        st.integers(-(2**40), 2**40) | st.just(0),
    ),
    max_size=60,
)


def _python_minutes(events: list[RawWindowEvent]) -> dict[int, list[tuple[str, bytes]]]:
    delta = WindowDelta()
    delta.raw = list(events)
    accs = events_accs(recorded_minutes(delta) or [])
    return {minute: window_rank.blobs(acc) for minute, acc in accs.items()}


@needs_c
@settings(max_examples=300, deadline=None)
@given(events=_events)
def test_minutes_summed_in_c_equal_the_python_sums(events: list[RawWindowEvent]) -> None:
    """A worker's recorded events summed per minute in C: the same minutes, oldest first,
    each with what Python sums (types with no type or an empty one counted as `unknown`,
    users and titles that are empty or missing left out, bytes added and removed)."""
    expected = _python_minutes(events)
    got = C.minutes(events)
    assert list(got) == sorted(expected)
    for minute, rows in got.items():
        assert [dim for dim, _ in rows] == list(DIMS)
        assert _values(Encoded(dict(rows))) == _values(Encoded(dict(expected[minute])))


def test_what_c_cannot_sum_is_left_to_python() -> None:
    """Bytes beyond 64 bits, a lone surrogate, a name that is no str: C refuses them, and the
    worker sums them in Python as it did before the extension (whose msgpack encoder refuses
    such sums and names in turn: the same error as without the extension)."""
    big = [(0, "de", "edit", False, "a", "x", 2**63 - 1)] * 3
    if C is not None:
        with pytest.raises(OverflowError):
            C.minutes(big)
        with pytest.raises(UnicodeEncodeError):
            C.minutes([(60, "de", "edit", False, "b\ud800", None, 5)])
        with pytest.raises(TypeError):
            C.minutes([(0, None, "edit", False, "a", "x", 1)])
    delta = WindowDelta()
    delta.raw = list(big)
    with pytest.raises(OverflowError, match="serialize"):
        parallel._summed(delta, [])
    with pytest.raises(OverflowError, match="serialize"):
        _python_minutes(big)
    fits = [(0, "de", "edit", False, "a", "x", 2**62)] * 3
    delta.raw = list(fits)
    (sums,) = parallel._summed(delta, []).minutes
    assert msgspec.msgpack.decode(dict(sums[0])["t"], type=Totals).types["edit"][2] == 3 * 2**62


# Decoded events: times in UTC (cached by minute), with an offset, unreadable (also within a
# minute read before), missing; lengths missing, partial or beyond 64 bits; canaries.
_dt = st.sampled_from(
    [
        None,
        "",
        "2026-11-01T12:00:05Z",
        "2026-11-01T12:00:59.5Z",
        "2026-11-01T12:01:00Z",
        "2026-11-01T12:00:99Z",
        "2026-11-01T13:00:00+01:00",
        "2026-11-01T12:02Z",
        "garbage",
        "Z",
    ]
)
_length = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "old": st.none() | st.integers(0, MAX_LENGTH),
        "new": st.none() | st.integers(0, MAX_LENGTH),
    },
)
_decoded = st.lists(
    st.fixed_dictionaries(
        {
            "meta": st.fixed_dictionaries(
                {"id": st.just("x")},
                optional={"domain": st.sampled_from(["canary", "de", None]), "dt": _dt},
            ),
            "server_name": _wiki,
            "bot": st.booleans(),
        },
        optional={
            "user": st.sampled_from([None, "", "a", "Bé", "日本"]),
            "type": _kind,
            "title": st.sampled_from([None, "", "x", "Страница 1"]),
            "length": _length,
        },
    ),
    max_size=40,
)


def _decoded_events(items: list[dict[str, Any]]) -> list[RecentChange]:
    return [decode_json_only(msgspec.json.encode(item)) for item in items]


@needs_c
@settings(max_examples=300, deadline=None)
@given(items=_decoded)
def test_decoded_events_summed_in_c_equal_the_rows_python_records(
    items: list[dict[str, Any]],
) -> None:
    """A worker's decoded events read in place by C (`decoded_minutes`): the same minutes and
    sums as the rows `window_delta.window_rows` records from them, canaries and events without
    a readable time left out, each starting from the same (empty) minute cache."""
    events = _decoded_events(items)
    MINUTE_CACHE.clear()
    expected = _python_minutes(window_rows(events))
    MINUTE_CACHE.clear()
    got = C.decoded_minutes(events, CANARY_DOMAIN, MINUTE_CACHE, minute_of)
    assert list(got) == sorted(expected)
    for minute, rows in got.items():
        assert _values(Encoded(dict(rows))) == _values(Encoded(dict(expected[minute])))


def test_decoded_events_c_refuses_are_summed_in_python() -> None:
    """Lengths beyond 64 bits, a lone surrogate in a name, an object that is no event: C
    refuses the decoded events, and the worker records their rows and sums them in Python
    with any recorded ones (whose msgpack encoder refuses what C did not fit: the same error
    as before the extension)."""
    line = {"meta": {"id": "x", "dt": "2026-11-01T12:00:05Z"}, "server_name": "de", "bot": False}
    # lengths past events.MAX_LENGTH do not decode: such events are made by hand
    (one,) = _decoded_events([{**line, "user": "a", "length": {"new": 1}}])
    assert one.length is not None
    big = [msgspec.structs.replace(one, length=msgspec.structs.replace(one.length, new=2**64))]
    lone = _decoded_events([{**line, "user": "a"}])
    lone = [msgspec.structs.replace(lone[0], user="b\ud800")]
    fits = [msgspec.structs.replace(one, length=Length(old=1, new=2**62))]
    recorded = (1793534400, "en", "edit", True, "c", "y", -3)
    if C is not None:
        with pytest.raises(OverflowError):
            C.decoded_minutes(big, CANARY_DOMAIN, MINUTE_CACHE, minute_of)
        with pytest.raises(UnicodeEncodeError):
            C.decoded_minutes(lone, CANARY_DOMAIN, MINUTE_CACHE, minute_of)
        with pytest.raises(TypeError):
            C.decoded_minutes([*fits, "not an event"], CANARY_DOMAIN, MINUTE_CACHE, minute_of)
    delta = WindowDelta()
    with pytest.raises(UnicodeEncodeError):  # as the rows recorded before the extension did
        parallel._summed(delta, list(lone))
    for decoded in (fits, big):
        delta = WindowDelta()
        delta.raw = [recorded]
        if decoded is big:  # the msgpack encoder refuses it in turn, as it refused the rows
            with pytest.raises(OverflowError, match="serialize"):
                parallel._summed(delta, list(decoded))
            continue
        summed = parallel._summed(delta, list(decoded))
        assert not summed.raw
        sums: dict[int, list[window_held.Held]] = {}
        for found in summed.minutes:
            for minute, rows in found.items():
                sums.setdefault(minute, []).append(Encoded(dict(rows)))
        (bucket,) = [merged(held) for held in sums.values()]
        acc = acc_of(bucket)
        assert sum(row[0] for row in acc.types.values()) == 2
        assert sorted(acc.users) == ["a", "c"]
        assert acc.types["unknown"][2] == 2**62 - 1  # no type; bytes added: new - old
        assert acc.types["edit"][3] == 3  # the recorded row's bytes removed


def test_the_merge_extension_is_built_in_ci() -> None:
    """CI builds the extension (gcc is there): the fast path is what the tests exercise."""
    if os.environ.get("CI") != "true" and C is None:
        pytest.skip("the C extension was not built here (no C compiler at install)")
    assert C is not None
    assert window_held.native()
    assert window_minutes._c_minutes is C.minutes
    assert window_minutes._c_decoded is C.decoded_minutes


@settings(max_examples=100, deadline=None)
@given(accs=_accs, encoded=st.lists(st.booleans(), min_size=6, max_size=6))
def test_without_the_extension_blobs_are_summed_in_python(
    accs: list[Acc], encoded: list[bool]
) -> None:
    """Installed without a C compiler, the writer decodes blobs and sums them in Python:
    the same bucket, and the same sealed rows as values."""
    expected = _values(_python_sum(accs))
    items: list[window_held.Held] = [
        Encoded(dict(window_rank.blobs(acc))) if as_blob else acc
        for acc, as_blob in zip(accs, encoded, strict=False)
    ]
    with pytest.MonkeyPatch.context() as patch:
        for name in ("_merge", "_index"):
            patch.setattr(window_held, name, None)
        assert not window_held.native()
        total = merged(items, keep=True)
        assert _values(total) == expected
        rows = window_held.sealed_rows(0, total)
    sealed = {dim: data for _, _, dim, data in rows}
    if "P" in sealed:  # pages kept in their index only, read back as a reader does
        assert "p" not in sealed
        sealed["p"] = index_pages(sealed["P"], sealed["Pt"])
    assert _values(Encoded({dim: sealed[dim] for dim in DIMS})) == expected


@pytest.mark.parametrize("native", [True, False])
def test_a_sealed_bucket_keeps_its_pages_in_the_index_only_when_it_has_one(native: bool) -> None:
    """Sealed, a bucket's pages are in its index only (head and tail: every page, its `p`
    blob made again from them equals the bucket's); a wiki name holding NUL makes no index,
    and the bucket keeps its `p` blob."""
    if native and C is None:
        pytest.skip("the C extension was not built here")
    for wiki, indexed in (("de", True), ("a\x00b", False)):
        acc = _acc({("de", "u1"): 2}, {(wiki, f"t{i}"): 1 + i % 3 for i in range(3000)})
        item: window_held.Held = Encoded(dict(window_rank.blobs(acc))) if native else acc
        with pytest.MonkeyPatch.context() as patch:
            if not native:
                for name in ("_merge", "_index"):
                    patch.setattr(window_held, name, None)
            rows = {dim: data for _, part, dim, data in window_held.sealed_rows(0, item)}
        assert ("p" in rows) is not indexed
        assert ("P" in rows and "Pt" in rows) is indexed
        if indexed:
            rows["p"] = index_pages(rows["P"], rows["Pt"])
        assert _values(Encoded({dim: rows[dim] for dim in DIMS})) == _values(acc)
