"""Top-list indexes of sealed buckets, and exact top-N that decodes only their heads; pure.

A day's top pages merged ~50 lists holding every key of their bucket: at the live rate that is
millions of keys to decode for ten answers. A sealed 5-minute or hour bucket therefore also
keeps, per dimension users and pages, an *index* in two rows: the *head* (`U`, `P`): its `HEAD`
busiest keys with their counts (highest first) and the largest count left out (`tail_max`);
the *tail* (`Ut`, `Pt`): the other keys as one bytes string sorted bytewise with their counts,
looked up by bisection without decoding them.

`TopPlan` is exact from heads alone plus a few lookups (the threshold pass is
`window_topn.HeadsPlan`, which Cassandra's heads use too): only keys whose upper bound reaches
the floor are summed exactly, by a lookup in each list whose head misses them, so only those
lists' tails are read at all (usually none: the busiest keys of a day are in the head of every
hour); if a key in no head could reach the floor, every tail is read and decoded (slow, still
exact).
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Hashable, Sequence
from itertools import accumulate
from operator import itemgetter, methodcaller
from typing import Any, Generic, TypeVar

import msgspec

from wikipulse.window_blobs import Pages, Users
from wikipulse.window_topn import HeadsPlan, top_items

__all__ = [
    "HEAD",
    "SLICE",
    "Ranked",
    "TopPlan",
    "counts_of",
    "index_blobs",
    "index_pages",
    "ranked_of",
    "top_ranked",
    "users_of",
]

#: Keys kept in an index's head.
HEAD = 1000
#: Keys handled per C call when an index is built (see `_sliced`).
SLICE = 16_384
_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")
_UTF8, _PASS = "utf-8", "surrogatepass"  # lone surrogates in a name must not fail a commit
#: Joins a page's wiki and title: unambiguous as long as no wiki name holds it.
_SEP = "\0"
_ENCODE = methodcaller("encode", _UTF8, _PASS)


class _Head(msgspec.Struct, array_like=True):
    keys: list[Any]
    n: list[int]
    tail_max: int


class _Tail(msgspec.Struct, array_like=True):
    keys: bytes
    offsets: bytes
    counts: bytes


class _RawUsers(msgspec.Struct, array_like=True):
    names: list[str]
    n: msgspec.Raw
    members: dict[str, msgspec.Raw]


class _RawCounts(msgspec.Struct, array_like=True):
    rows: dict[str, msgspec.Raw]
    distinct: dict[str, int]


_encode = msgspec.msgpack.Encoder().encode
_c_tail: Callable[[Sequence[Any], Sequence[int], int], tuple[bytes, bytes, bytes] | None] | None
try:  # the tail built in C (src/wikipulse/_index.c), optional like the UTF-8 check
    from wikipulse._index import tail as _c_tail
except ImportError:  # built without a C compiler
    _c_tail = None
_HEAD = msgspec.msgpack.Decoder(_Head)
_TAIL = msgspec.msgpack.Decoder(_Tail)
_RAW_COUNTS = msgspec.msgpack.Decoder(_RawCounts)
_RAW_USERS = msgspec.msgpack.Decoder(_RawUsers)
_INDICES = msgspec.msgpack.Decoder(list[int])
_ROWS = msgspec.msgpack.Decoder(dict[str, list[int]])
_FIRST = itemgetter(0)
_COUNT = itemgetter(1)


def _key_bytes(key: Any) -> bytes:
    """A user, or a (wiki, title) page joined by NUL, as UTF-8 bytes."""
    if isinstance(key, str):
        return key.encode(_UTF8, _PASS)
    return _SEP.join(key).encode(_UTF8, _PASS)


def _key_of(data: bytes, pages: bool) -> Any:
    text = data.decode(_UTF8, _PASS)
    return tuple(text.split(_SEP, 1)) if pages else text


def _uints(values: Sequence[int]) -> bytes:
    packed = array("I", values)
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


def _unpack(data: bytes) -> Sequence[int]:
    if sys.byteorder == "little":
        return memoryview(data).cast("I")
    packed = array("I")
    packed.frombytes(data)
    packed.byteswap()
    return packed


def _sliced(function: Callable[[Any], _V], items: Sequence[Any]) -> list[_V]:
    """`list(map(function, items))`, `SLICE` items per C call: between two calls Python can
    hand the GIL to the event loop (one call over an hour's 200,000 pages held it 20-45 ms)."""
    out: list[_V] = []
    for start in range(0, len(items), SLICE):
        out += map(function, items[start : start + SLICE])
    return out


def index_blobs(
    keys: Sequence[Any], n: Sequence[int], head: int | None = None
) -> tuple[bytes, bytes] | None:
    """The index (head, tail) of a bucket's users or pages (sorted by count, highest first)
    with a head of `head` keys (default `HEAD`); None when it cannot be made (a wiki name
    holding NUL, or a tail over 4 GB: the bucket is then read whole)."""
    size = HEAD if head is None else head
    tail = _tail(keys, n, size)
    if tail is None:
        return None
    tail_max = n[size] if len(keys) > size else 0
    return _encode(_Head(list(keys[:size]), list(n[:size]), tail_max)), _encode(_Tail(*tail))


def _tail(keys: Sequence[Any], n: Sequence[int], size: int) -> tuple[bytes, bytes, bytes] | None:
    """The keys past the head sorted bytewise, their offsets and counts: in C where built."""
    if _c_tail is not None:
        try:
            return _c_tail(keys, n, size)
        except UnicodeEncodeError:
            pass  # a lone surrogate in a name: encoded below with "surrogatepass"
    return python_tail(keys, n, size)


def python_tail(
    keys: Sequence[Any], n: Sequence[int], size: int
) -> tuple[bytes, bytes, bytes] | None:
    """`_tail` in Python: what runs without the C extension, and what the tests compare to."""
    rest = keys[size:]
    if rest and not isinstance(rest[0], str):  # pages: (wiki, title), joined in C
        if any(_SEP in wiki for wiki in set(_sliced(_FIRST, rest))):
            return None
        rest = _sliced(_SEP.join, rest)
    unsorted = _sliced(_ENCODE, rest)
    by_key = unsorted.__getitem__
    # One sort, in C (it holds the GIL: ~120 ms for an hour's pages; sorted runs merged by a
    # second sort took as long again, and a bucket sort by prefix in Python cost more CPU).
    order = sorted(range(len(unsorted)), key=by_key)
    encoded = _sliced(by_key, order)
    offsets = [0, *accumulate(_sliced(len, encoded))]
    if offsets[-1] >= 2**32:
        return None
    counts = _uints(_sliced(n[size:].__getitem__, order))
    return b"".join(encoded), _uints(offsets), counts


class Ranked(Generic[_K]):
    """One list for a top list: a head of keys and counts (highest first) and, for an index,
    the tail left out of it (`attach`); a list read whole has no tail (`tail_max` 0)."""

    __slots__ = ("counts", "keys", "n", "offsets", "pages", "tail", "tail_max")

    def __init__(
        self, keys: Sequence[_K], n: Sequence[int], tail_max: int = 0, pages: bool = False
    ) -> None:
        self.keys, self.n, self.tail_max, self.pages = keys, n, tail_max, pages
        self.tail: bytes | None = None
        self.offsets: Sequence[int] = (0,)
        self.counts: Sequence[int] = ()

    def attach(self, data: bytes) -> None:
        """Take the tail row of the index."""
        tail = _TAIL.decode(data)
        self.tail = tail.keys
        self.offsets, self.counts = _unpack(tail.offsets), _unpack(tail.counts)

    def lookup(self, key: _K) -> int:
        """The key's count in the tail (0 if it is not there), by bisection."""
        want = _key_bytes(key)
        tail, offsets = self.tail, self.offsets
        if tail is None:
            raise RuntimeError("the tail of this index was not read")
        lo, hi = 0, len(self.counts)
        while lo < hi:
            mid = (lo + hi) // 2
            if tail[offsets[mid] : offsets[mid + 1]] < want:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(self.counts) and tail[offsets[lo] : offsets[lo + 1]] == want:
            return int(self.counts[lo])
        return 0

    def rest(self) -> dict[_K, int]:
        """Every key of the tail with its count (decodes them all)."""
        tail, offsets, pages = self.tail, self.offsets, self.pages
        if tail is None:
            raise RuntimeError("the tail of this index was not read")
        keys = [_key_of(tail[offsets[i] : offsets[i + 1]], pages) for i in range(len(self.counts))]
        return dict(zip(keys, map(int, self.counts), strict=True))


def ranked_of(head: bytes, pages: bool) -> Ranked[Any]:
    """An index's head row as a list for `TopPlan` (its tail is attached when needed)."""
    index = _HEAD.decode(head)
    keys = [tuple(key) for key in index.keys] if pages else index.keys
    return Ranked(keys, index.n, index.tail_max, pages)


def index_pages(head: bytes, tail: bytes) -> bytes:
    """The `p` blob of a bucket whose pages are kept in their index only (a sealed bucket,
    see `stores.window_held.sealed_rows`): every page with its count, highest first."""
    ranked = ranked_of(head, pages=True)
    ranked.attach(tail)
    rest = sorted(ranked.rest().items(), key=_COUNT, reverse=True)  # stable: ties bytewise
    keys = [*ranked.keys, *(key for key, _ in rest)]
    return _encode(Pages(keys, [*ranked.n, *(n for _, n in rest)]))


def users_of(data: bytes, server: str | None) -> Users:
    """A `u` blob's users for a set union: their names, and which of them `server` saw if
    given, without decoding their counts or the other wikis' members."""
    raw = _RAW_USERS.decode(data)
    members = {}
    if server is not None and server in raw.members:
        members[server] = _INDICES.decode(raw.members[server])
    return Users(raw.names, [], members)


def counts_of(data: bytes, server: str) -> tuple[dict[str, dict[str, list[int]]], dict[str, int]]:
    """One wiki's rows and distinct users from a `c` blob, decoding only that wiki's rows."""
    raw = _RAW_COUNTS.decode(data)
    found = raw.rows.get(server)
    rows = {} if found is None else {server: _ROWS.decode(found)}
    distinct = raw.distinct.get(server)
    return rows, ({} if distinct is None else {server: distinct})


class TopPlan(Generic[_K]):
    """The exact top list of some lists, planned from their heads (`HeadsPlan`): `tails`
    says which lists' tails to attach, then `result` gives the answer."""

    def __init__(self, lists: Sequence[Ranked[_K]], limit: int) -> None:
        self.lists, self.limit = lists, limit
        # None when every list is at hand in full: a threshold pass over them answers.
        self.plan: HeadsPlan[_K] | None = None
        if any(r.tail_max for r in lists):
            heads = [dict(zip(r.keys, r.n, strict=True)) for r in lists]
            self.plan = HeadsPlan(heads, [r.tail_max for r in lists], limit)

    def tails(self) -> list[int]:
        """The positions of the lists whose tails the answer needs."""
        return [] if self.plan is None else self.plan.needed()

    def result(self) -> list[tuple[_K, int]]:
        """The answer (the tails from `tails` attached)."""
        lists, plan = self.lists, self.plan
        if plan is None:
            return top_items([(r.keys, r.n) for r in lists], self.limit)
        heads = plan.heads
        return plan.result(
            lambda i, key: lists[i].lookup(key), lambda i: {**heads[i], **lists[i].rest()}
        )


def top_ranked(lists: Sequence[Ranked[_K]], limit: int) -> list[tuple[_K, int]]:
    """The exact `limit` busiest keys over lists whose tails are all attached."""
    return TopPlan(lists, limit).result()
