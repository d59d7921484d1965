"""Heads of a bucket's users and pages, and an exact top-N merge that reads tails only if needed.

A bucket's full `users` or `pages` blob holds every key of the bucket: at the live rate an hour
holds ~10^5 of them (4-6 MB), so a 24-hour top list that decodes and sums every key of 24 hours
costs seconds. Each bucket version therefore also stores a *head*: its `HEAD` busiest keys
(users summed over the wikis; pages as (wiki, title)) with their counts, and the *floor*, the
highest count of any key left out (0 when every key is in the head).

`merge` answers a top-N exactly from the heads in the common case, threshold style
(`window_topn.HeadsPlan`, which the SQL stores' indexes use too): a list's full blob (its
*tail*) is read only when it has a floor and some key that can still reach the top is missing
from its head; when a key in no head could reach it, every full blob is read, as before the
heads existed.
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import msgspec

from wikipulse.stores.cassandra.window_blob import Keys, decode_keys
from wikipulse.window_topn import HeadsPlan

__all__ = ["HEAD", "Head", "Key", "encode_head", "key_counts", "merge", "page_head", "user_head"]

#: Keys kept in a head: enough that the floors of 24 hours stay far below a top-100's counts.
HEAD = 1000

#: A top key: (user,) or (server_name, title), as the API's `TopItem`.
Key = tuple[str, ...]

_encode = msgspec.msgpack.Encoder().encode
_decoder = msgspec.msgpack.Decoder(tuple[int, list[tuple[str, ...]], list[int]])


def _head(counts: dict[Key, int], size: int | None = None) -> bytes:
    """The `size` (default `HEAD`) busiest keys with their counts, and the floor, as one blob."""
    if size is None:
        size = HEAD
    if len(counts) <= size:
        top = sorted(counts.items(), key=lambda kv: -kv[1])
        floor = 0
    else:
        picked = heapq.nlargest(size + 1, counts.items(), key=lambda kv: kv[1])
        top, floor = picked[:size], picked[size][1]
    return _encode((floor, [k for k, _ in top], [n for _, n in top]))


def key_counts(by: str, blob: bytes | None) -> dict[Key, int]:
    """Every key of a full users or pages blob with its count (users summed over wikis)."""
    out: dict[Key, int] = {}
    for server, keys in decode_keys(blob).items():
        if by == "user":
            for user, n in keys.items():
                key = (user,)
                out[key] = out.get(key, 0) + n
        else:
            for title, n in keys.items():
                out[(server, title)] = n
    return out


def user_head(users: Keys) -> bytes:
    """The head of a bucket's users (summed over the wikis)."""
    if len(users) == 1:
        (keys,) = users.values()
        return _head({(u,): n for u, n in keys.items()})
    counts: dict[Key, int] = {}
    for keys in users.values():
        for user, n in keys.items():
            key = (user,)
            counts[key] = counts.get(key, 0) + n
    return _head(counts)


def page_head(pages: Keys) -> bytes:
    """The head of a bucket's pages, keyed (wiki, title)."""
    return _head({(s, t): n for s, titles in pages.items() for t, n in titles.items()})


def encode_head(counts: dict[Key, int], size: int | None = None) -> bytes:
    """A head of some key counts, of `size` keys (tests use small ones)."""
    return _head(counts, size)


@dataclass(slots=True)
class Head:
    """One list of the merge: a bucket's head, and how to read its full blob when needed."""

    floor: int
    counts: dict[Key, int]
    full: Callable[[], Awaitable[dict[Key, int]]]

    @classmethod
    def decode(cls, blob: bytes, full: Callable[[], Awaitable[dict[Key, int]]]) -> Head:
        """A head back from its blob."""
        floor, keys, counts = _decoder.decode(blob)
        return cls(floor, dict(zip(map(tuple, keys), counts, strict=True)), full)


async def merge(
    exact: Iterable[dict[Key, int]],
    heads: Sequence[Head],
    limit: int,
    gather: Callable[[list[Awaitable[dict[Key, int]]]], Awaitable[list[dict[Key, int]]]],
) -> list[tuple[Key, int]]:
    """The `limit` keys of highest total count over every list, ties by key; exact.

    `exact` are lists known in full; `heads` may need their full blob, read through `gather`
    (concurrently) only when the heads cannot settle the answer (`HeadsPlan`).
    """
    known = list(exact)
    plan = HeadsPlan(
        [*known, *(h.counts for h in heads)], [0] * len(known) + [h.floor for h in heads], limit
    )
    needed = plan.needed()
    tails = await gather([heads[i - len(known)].full() for i in needed])
    full = dict(zip(needed, tails, strict=True))
    return plan.result(lambda i, key: full[i].get(key, 0), full.__getitem__)
