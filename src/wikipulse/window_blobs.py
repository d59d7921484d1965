"""Time-window buckets as compact blobs, and exact top-N over many of them; pure, no I/O.

The SQL stores keep one row per (granularity, bucket, dimension) whose value is a msgpack blob
(msgspec) of everything the bucket holds for that dimension, instead of a row per key:

- `t` (`Totals`): all wikis, per event type `[events, bots, bytes_added, bytes_removed]`, and
  the exact number of distinct users of the bucket;
- `c` (`Counts`): the same per wiki, and the distinct users per wiki;
- `u` (`Users`): every user with their count, highest first, and which users each wiki saw
  (so distinct users stay exact when buckets are merged);
- `p` (`Pages`): every (wiki, title) with its count, highest first.

`Acc` is a bucket being summed in Python dicts: from a batch's `WindowDelta`, from stored
blobs, or both (a commit's read-modify-write, the roll-up of a closed hour). The sorted key
lists are merged into top lists by `window_topn`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, TypeVar

import msgspec

__all__ = [
    "DIMS",
    "Acc",
    "Counts",
    "Pages",
    "Part",
    "Totals",
    "Users",
    "add_dict",
    "add_row",
    "decode_part",
    "take_rows",
]

#: The dimensions stored per bucket: totals, per-wiki counts, users, pages.
DIMS = ("t", "c", "u", "p")
_K = TypeVar("_K", bound=Hashable)


class Totals(msgspec.Struct, array_like=True):
    """All wikis: type -> [events, bots, added, removed], and distinct users."""

    types: dict[str, list[int]]
    distinct: int


class Counts(msgspec.Struct, array_like=True):
    """Per wiki: wiki -> type -> [events, bots, added, removed], and wiki -> distinct users."""

    rows: dict[str, dict[str, list[int]]]
    distinct: dict[str, int]


class Users(msgspec.Struct, array_like=True):
    """Users and counts, highest count first; wiki -> indices into `names` of its users."""

    names: list[str]
    n: list[int]
    members: dict[str, list[int]]


class Pages(msgspec.Struct, array_like=True):
    """(wiki, title) and counts, highest count first."""

    keys: list[tuple[str, str]]
    n: list[int]


_DECODERS: dict[str, Any] = {
    "t": msgspec.msgpack.Decoder(Totals),
    "c": msgspec.msgpack.Decoder(Counts),
    "u": msgspec.msgpack.Decoder(Users),
    "p": msgspec.msgpack.Decoder(Pages),
}
_encode = msgspec.msgpack.Encoder().encode
_SECOND = itemgetter(1)


@dataclass(slots=True)
class Part:
    """The decoded blobs of one stored bucket (only the dimensions that were read)."""

    totals: Totals | None = None
    counts: Counts | None = None
    users: Users | None = None
    pages: Pages | None = None


def decode_part(part: Part, dim: str, data: bytes) -> None:
    """Decode one stored blob into its place in `part`."""
    value = _DECODERS[dim].decode(data)
    if dim == "t":
        part.totals = value
    elif dim == "c":
        part.counts = value
    elif dim == "u":
        part.users = value
    else:
        part.pages = value


def add_row(table: dict[_K, list[int]], key: _K, row: Sequence[int]) -> None:
    """Add `[events, bots, added, removed]` to the row of `key` (a copy if it is new)."""
    have = table.get(key)
    if have is None:
        table[key] = list(row)
    else:
        have[0] += row[0]
        have[1] += row[1]
        have[2] += row[2]
        have[3] += row[3]


def take_rows(
    rows: dict[str, dict[str, list[int]]], other: dict[str, dict[str, list[int]]]
) -> None:
    """Add per-wiki rows to `rows`, taking over `other`'s dict of a wiki `rows` lacks (so
    `other` must not be used after)."""
    for server, kinds in other.items():
        mine = rows.get(server)
        if mine is None:
            rows[server] = kinds
        else:
            for kind, row in kinds.items():
                add_row(mine, kind, row)


def _add_keys(table: dict[_K, int], pairs: Iterable[tuple[_K, int]]) -> None:
    get = table.get
    for key, n in pairs:
        table[key] = get(key, 0) + n


def add_dict(table: dict[_K, int], other: dict[_K, int]) -> None:
    """Add `other` to `table` (mostly in C: Python touches only the keys both hold)."""
    if not table:
        table.update(other)
        return
    both = list(filter(table.__contains__, other))
    if both:
        summed = {key: table[key] + other[key] for key in both}
        table.update(other)
        table.update(summed)
    else:
        table.update(other)


class Acc:
    """One bucket being summed: plain dicts, merged from deltas and blobs, encoded at the end."""

    __slots__ = ("members", "pages", "rows", "types", "users")

    def __init__(self) -> None:
        self.types: dict[str, list[int]] = {}
        self.rows: dict[str, dict[str, list[int]]] = {}
        self.users: dict[str, int] = {}
        self.members: dict[str, set[str]] = {}
        self.pages: dict[tuple[str, str], int] = {}

    def add_part(self, part: Part) -> None:
        """Add a stored bucket's blobs, taking them over (a part is decoded for one use);
        distinct users are recounted from `users`."""
        if part.totals is not None:
            for kind, row in part.totals.types.items():
                add_row(self.types, kind, row)
        if part.counts is not None:
            take_rows(self.rows, part.counts.rows)
        if part.users is not None:
            users = part.users
            add_dict(self.users, dict(zip(users.names, users.n, strict=True)))
            name = users.names.__getitem__
            members = self.members
            for server, indices in users.members.items():
                have = members.get(server)
                if have is None:
                    members[server] = set(map(name, indices))
                else:
                    have.update(map(name, indices))
        if part.pages is not None:
            add_dict(self.pages, dict(zip(part.pages.keys, part.pages.n, strict=True)))

    def add(self, other: Acc) -> None:
        """Add another bucket (built from a delta) to this one."""
        for kind, row in other.types.items():
            add_row(self.types, kind, row)
        for server, kinds in other.rows.items():
            mine = self.rows.setdefault(server, {})
            for kind, row in kinds.items():
                add_row(mine, kind, row)
        add_dict(self.users, other.users)
        for server, names in other.members.items():
            self.members.setdefault(server, set()).update(names)
        add_dict(self.pages, other.pages)

    def structs(self) -> tuple[Totals, Counts, Users, Pages]:
        """The bucket as its four blob values, users and pages sorted by count."""
        ranked = sorted(self.users.items(), key=_SECOND, reverse=True)
        names = [name for name, _ in ranked]
        index = {name: i for i, name in enumerate(names)}
        members = {s: list(map(index.__getitem__, us)) for s, us in self.members.items()}
        pages = sorted(self.pages.items(), key=_SECOND, reverse=True)
        distinct = {server: len(names) for server, names in self.members.items()}
        return (
            Totals(self.types, len(names)),
            Counts(self.rows, distinct),
            Users(names, [n for _, n in ranked], members),
            Pages([key for key, _ in pages], [n for _, n in pages]),
        )

    def blobs(self) -> list[tuple[str, bytes]]:
        """The four encoded blobs of the bucket: (dimension, bytes)."""
        return list(zip(DIMS, map(_encode, self.structs()), strict=True))
