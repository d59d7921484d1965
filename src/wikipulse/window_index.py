"""Top-list indexes of sealed buckets, and exact top-N that decodes only their heads; pure.

A day's top pages merged ~50 lists holding every key of their bucket: at the live rate that is
millions of keys to decode for ten answers. A sealed 5-minute or hour bucket therefore also
keeps, per dimension users (`U`) and pages (`P`), an *index*: its `HEAD` busiest keys with their
counts (highest first), the largest count left out (`tail_max`), and the other keys as one
bytes string sorted bytewise with their counts, looked up by bisection without decoding them.

`top_ranked` is then exact from heads alone plus a few lookups: the heads' partial sums give a
lower bound per key and a floor (the `limit`-th of them); a key missing from some heads can add
at most those lists' `tail_max`, and a key in no head at most their sum. Only keys whose upper
bound reaches the floor are summed exactly (a lookup in each list whose head misses them); if a
key in no head could reach it, every tail is decoded (slow, still exact).
"""

from __future__ import annotations

import heapq
import sys
from array import array
from collections.abc import Callable, Hashable, Sequence
from itertools import accumulate
from operator import itemgetter, methodcaller
from typing import Any, Generic, TypeVar

import msgspec

from wikipulse.window_blobs import add_dict
from wikipulse.window_topn import best, top_items

__all__ = ["HEAD", "Ranked", "counts_of", "index_blob", "ranked_of", "top_ranked"]

#: Keys kept in an index's head.
HEAD = 1000
_K = TypeVar("_K", bound=Hashable)
_UTF8, _PASS = "utf-8", "surrogatepass"  # lone surrogates in a name must not fail a commit
#: Joins a page's wiki and title: unambiguous as long as no wiki name holds it.
_SEP = "\0"
_ENCODE = methodcaller("encode", _UTF8, _PASS)


class _Index(msgspec.Struct, array_like=True):
    keys: list[Any]
    n: list[int]
    tail_max: int
    tail: bytes
    offsets: bytes
    counts: bytes


class _RawCounts(msgspec.Struct, array_like=True):
    rows: dict[str, msgspec.Raw]
    distinct: dict[str, int]


_encode = msgspec.msgpack.Encoder().encode
_INDEX = msgspec.msgpack.Decoder(_Index)
_RAW_COUNTS = msgspec.msgpack.Decoder(_RawCounts)
_ROWS = msgspec.msgpack.Decoder(dict[str, list[int]])
_FIRST = itemgetter(0)


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


def index_blob(keys: Sequence[Any], n: Sequence[int], head: int | None = None) -> bytes | None:
    """The index of a bucket's users or pages (sorted by count, highest first) with a head of
    `head` keys (default `HEAD`); None when it cannot be made (a wiki name holding NUL, or
    tails over 4 GB: the bucket is then read whole)."""
    size = HEAD if head is None else head
    rest = keys[size:]
    if rest and not isinstance(rest[0], str):  # pages: (wiki, title), joined in C
        if any(_SEP in wiki for wiki in set(map(_FIRST, rest))):
            return None
        rest = list(map(_SEP.join, rest))
    unsorted = list(map(_ENCODE, rest))
    order = sorted(range(len(unsorted)), key=unsorted.__getitem__)  # all in C
    encoded = list(map(unsorted.__getitem__, order))
    offsets = [0, *accumulate(map(len, encoded))]
    if offsets[-1] >= 2**32:
        return None
    counts = _uints(list(map(n[size:].__getitem__, order)))
    tail_max = n[size] if rest else 0
    tail = b"".join(encoded)
    index = _Index(list(keys[:size]), list(n[:size]), tail_max, tail, _uints(offsets), counts)
    return _encode(index)


class Ranked(Generic[_K]):
    """One list for `top_ranked`: a head of keys and counts (highest first) and what is left
    out of it (nothing for a list read whole)."""

    __slots__ = ("counts", "keys", "n", "offsets", "pages", "tail", "tail_max")

    def __init__(
        self,
        keys: Sequence[_K],
        n: Sequence[int],
        tail_max: int = 0,
        tail: bytes = b"",
        offsets: Sequence[int] = (0,),
        counts: Sequence[int] = (),
        pages: bool = False,
    ) -> None:
        self.keys, self.n, self.tail_max = keys, n, tail_max
        self.tail, self.offsets, self.counts, self.pages = tail, offsets, counts, pages

    def lookup(self, key: _K) -> int:
        """The key's count in the tail (0 if it is not there), by bisection."""
        want = _key_bytes(key)
        tail, offsets = self.tail, self.offsets
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
        keys = [_key_of(tail[offsets[i] : offsets[i + 1]], pages) for i in range(len(self.counts))]
        return dict(zip(keys, map(int, self.counts), strict=True))


def ranked_of(data: bytes, pages: bool) -> Ranked[Any]:
    """An index blob as a list for `top_ranked`."""
    index = _INDEX.decode(data)
    keys = [tuple(key) for key in index.keys] if pages else index.keys
    offsets, counts = _unpack(index.offsets), _unpack(index.counts)
    return Ranked(keys, index.n, index.tail_max, index.tail, offsets, counts, pages)


def counts_of(data: bytes, server: str) -> tuple[dict[str, dict[str, list[int]]], dict[str, int]]:
    """One wiki's rows and distinct users from a `c` blob, decoding only that wiki's rows."""
    raw = _RAW_COUNTS.decode(data)
    found = raw.rows.get(server)
    rows = {} if found is None else {server: _ROWS.decode(found)}
    distinct = raw.distinct.get(server)
    return rows, ({} if distinct is None else {server: distinct})


def top_ranked(lists: Sequence[Ranked[_K]], limit: int) -> list[tuple[_K, int]]:
    """The exact `limit` busiest keys over the lists (see the module's docstring)."""
    if not any(r.tail_max for r in lists):
        return top_items([(r.keys, r.n) for r in lists], limit)
    heads = [dict(zip(r.keys, r.n, strict=True)) for r in lists]
    lower: dict[_K, int] = {}
    covered: dict[_K, int] = {}  # per key: the tail_max of the lists whose head holds it
    for r, head in zip(lists, heads, strict=True):
        add_dict(lower, head)
        if r.tail_max:
            add_dict(covered, dict.fromkeys(head, r.tail_max))
    unseen = sum(r.tail_max for r in lists)  # the most a key in no head can count
    floor = heapq.nlargest(limit, lower.values())[-1] if len(lower) >= limit else 0
    if unseen >= floor:
        return _everything(lists, heads, limit)
    get = covered.get
    need = floor - unseen
    lookups: list[tuple[Callable[[_K], int], dict[_K, int]]] = [
        (r.lookup, head) for r, head in zip(lists, heads, strict=True) if r.tail_max
    ]
    exact: dict[_K, int] = {}
    for key, n in lower.items():
        if n - get(key, 0) >= need:  # its upper bound reaches the floor
            for lookup, head in lookups:
                if key not in head:
                    n += lookup(key)
            exact[key] = n
    return best(exact, limit)


def _everything(
    lists: Sequence[Ranked[_K]], heads: list[dict[_K, int]], limit: int
) -> list[tuple[_K, int]]:
    totals: dict[_K, int] = {}
    for r, head in zip(lists, heads, strict=True):
        add_dict(totals, head)
        if r.tail_max:
            add_dict(totals, r.rest())
    return best(totals, limit)
