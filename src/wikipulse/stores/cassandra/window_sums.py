"""Summing Cassandra window rows for a reader: one wiki's part of a blob, counts, top keys.

Pure functions of decoded or raw blobs, kept apart from `window_read.py` (which decides which
rows to read): nothing here does I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from wikipulse.stores.cassandra.window_blob import decode_counts, decode_keys
from wikipulse.window_blobs import add_dict
from wikipulse.window_query import TopItem

__all__ = ["add_counts", "add_top", "busiest", "one_wiki_counts", "one_wiki_users"]

#: A users blob with each wiki's map left undecoded: one wiki's users are then decoded alone
#: (msgspec skips the others in C), not every wiki's of every bucket.
_by_wiki = msgspec.msgpack.Decoder(dict[str, msgspec.Raw])
_users = msgspec.msgpack.Decoder(dict[str, int])


def one_wiki_users(blob: bytes | None, server: str) -> Iterable[str]:
    """The user names of one wiki in a users blob."""
    if not blob:
        return ()
    raw = _by_wiki.decode(blob).get(server)
    return _users.decode(raw) if raw is not None else ()


_kinds = msgspec.msgpack.Decoder(dict[str, list[int]])


def one_wiki_counts(blob: bytes | None, server: str) -> dict[str, dict[str, list[int]]]:
    """One wiki's counts by type in a counts blob, the other wikis left undecoded."""
    raw = _by_wiki.decode(blob).get(server) if blob else None
    return {server: _kinds.decode(raw)} if raw is not None else {}


def add_counts(
    into: dict[tuple[int, str], list[int]],
    start: int,
    counts: Mapping[str, Any],
    server: str | None,
) -> None:
    for name, kinds in counts.items():
        if server is not None and name != server:
            continue
        for kind, row in kinds.items():
            have = into.setdefault((start, kind), [0, 0, 0, 0])
            for i in range(4):
                have[i] += row[i]


def add_top(totals: dict[str, dict[str, int]], by: str, blob: bytes | None) -> None:
    """Add one bucket's counts of servers, users or pages to the running totals."""
    if by == "server_name":
        mine = totals.setdefault("", {})
        for name, kinds in decode_counts(blob).items():
            mine[name] = mine.get(name, 0) + sum(row[0] for row in kinds.values())
        return
    for name, keys in decode_keys(blob).items():
        add_dict(totals.setdefault("" if by == "user" else name, {}), keys)


def busiest(totals: dict[str, dict[str, int]], by: str, limit: int) -> list[TopItem]:
    """The `limit` highest counts, ties by key: only keys at or above the limit-th count are
    sorted, so a window of a million keys costs one pass over the counts, not a sort."""
    counts = [n for keys in totals.values() for n in keys.values()]
    if not counts:
        return []
    floor = heapq.nlargest(limit, counts)[-1]
    items: list[TopItem] = []
    for server, keys in totals.items():
        for key, n in keys.items():
            if n >= floor:
                items.append(((server, key) if by == "page" else (key,), n))
    items.sort(key=lambda kv: (-kv[1], kv[0]))
    return items[:limit]
