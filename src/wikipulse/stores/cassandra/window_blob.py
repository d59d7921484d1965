"""The contents of one time-window bucket of one ingester, and their msgpack blobs; pure.

The Cassandra store writes every bucket (a minute or an hour) as a *whole value*, never as an
increment (increments are not idempotent), so the writer keeps a bucket's full contents and
adds each batch's delta to a copy. A bucket holds three maps, each keyed by server name first
(the name is then stored once per blob, not once per key):

- `counts`: server -> type -> [events, bots, bytes_added, bytes_removed];
- `users`: server -> user -> events;
- `pages`: server -> title -> events.

Each map is its own blob column, so a timeseries never decodes the pages; `totals` (the counts
summed over the wikis, by type) lets a timeseries of all wikis skip the per-wiki counts, and
`users_n` (the distinct users of the bucket over all wikis) one of a single ingester skip the
users.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from wikipulse.window_blobs import add_row
from wikipulse.window_delta import WindowDelta
from wikipulse.window_minutes import minute_rows, recorded_minutes, server_keys
from wikipulse.windows import KeyCounts, RowCounts

__all__ = ["Content", "Counts", "Keys", "decode_counts", "decode_keys", "split_delta", "total"]

#: server -> type -> [events, bots, bytes_added, bytes_removed].
Counts = dict[str, dict[str, list[int]]]
#: server -> user or title -> events.
Keys = dict[str, dict[str, int]]

_encode = msgspec.msgpack.Encoder().encode
_counts_decoder = msgspec.msgpack.Decoder(Counts)
_keys_decoder = msgspec.msgpack.Decoder(Keys)


def decode_counts(blob: bytes | None) -> Counts:
    """A counts blob back as its map (an absent blob is empty)."""
    return _counts_decoder.decode(blob) if blob else {}


def decode_keys(blob: bytes | None) -> Keys:
    """A users or pages blob back as its map (an absent blob is empty)."""
    return _keys_decoder.decode(blob) if blob else {}


@dataclass(slots=True)
class Content:
    """One bucket's full contents; `add` returns a new value and leaves this one alone."""

    counts: Counts = field(default_factory=dict)
    users: Keys = field(default_factory=dict)
    pages: Keys = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def plus(self, other: Content) -> Content:
        """This bucket with another's counts added; only the servers touched are copied."""
        out = Content(dict(self.counts), dict(self.users), dict(self.pages))
        out.absorb(other, owned=set())
        return out

    def absorb(self, other: Content, owned: set[tuple[int, str]]) -> None:
        """Add another bucket into this one in place.

        `owned` names the (map, server) entries this value already holds private copies of;
        the others are shared with the value this one was copied from, so they are copied
        before their first change (and then recorded in `owned`).
        """
        counts = self.counts
        for server, kinds in other.counts.items():
            mine = counts.get(server)
            if (0, server) not in owned:
                mine = {k: list(v) for k, v in (mine or {}).items()}
                counts[server] = mine
                owned.add((0, server))
            assert mine is not None
            for kind, row in kinds.items():
                add_row(mine, kind, row)
        _absorb(self.users, other.users, owned, 1)
        _absorb(self.pages, other.pages, owned, 2)

    def users_n(self) -> int:
        """Distinct users of the bucket, over every wiki."""
        if len(self.users) == 1:
            return len(next(iter(self.users.values())))
        return len({user for names in self.users.values() for user in names})

    def totals(self) -> bytes:
        """The counts summed over every wiki, by type, as a counts blob of one server `""`."""
        sums: dict[str, list[int]] = {}
        for kinds in self.counts.values():
            for kind, row in kinds.items():
                have = sums.get(kind)
                if have is None:
                    sums[kind] = list(row)
                else:
                    for i in range(4):
                        have[i] += row[i]
        return _encode({"": sums})

    def encode(self) -> tuple[bytes, bytes, bytes]:
        """The three blobs: counts, users, pages."""
        return _encode(self.counts), _encode(self.users), _encode(self.pages)

    @classmethod
    def decode(cls, counts: bytes | None, users: bytes | None, pages: bytes | None) -> Content:
        """A bucket back from its blobs."""
        return cls(decode_counts(counts), decode_keys(users), decode_keys(pages))


def _absorb(mine: Keys, theirs: Keys, owned: set[tuple[int, str]], which: int) -> None:
    for server, keys in theirs.items():
        have = mine.get(server)
        if (which, server) not in owned:
            have = dict(have) if have else {}
            mine[server] = have
            owned.add((which, server))
        assert have is not None
        get = have.get
        for key, n in keys.items():
            have[key] = get(key, 0) + n


def _content(into: dict[int, Content], bucket: int) -> Content:
    content = into.get(bucket)
    if content is None:
        content = into[bucket] = Content()
    return content


def _group_rows(rows: RowCounts, into: dict[int, Content]) -> None:
    targets: dict[tuple[int, str], dict[str, list[int]]] = {}
    for (bucket, server, kind), row in rows.items():
        target = targets.get((bucket, server))
        if target is None:
            target = targets[(bucket, server)] = {}
            _content(into, bucket).counts[server] = target
        target[kind] = list(row)


def _group_keys(keys: KeyCounts, into: dict[int, Content], users: bool) -> None:
    # One dict lookup per key: the hot part of a commit's window work in a replay.
    targets: dict[tuple[int, str], dict[str, int]] = {}
    for (bucket, server, key), n in keys.items():
        target = targets.get((bucket, server))
        if target is None:
            target = targets[(bucket, server)] = {}
            content = _content(into, bucket)
            (content.users if users else content.pages)[server] = target
        target[key] = n


def split_delta(delta: WindowDelta) -> dict[int, Content]:
    """A batch's delta as contents per minute (hours are summed from them when needed):
    counted per minute from its recorded events where none is summed yet, else from its maps."""
    recorded = recorded_minutes(delta)
    if recorded is not None:
        return {
            minute: Content(
                minute_rows(events), server_keys(events, True), server_keys(events, False)
            )
            for minute, events in recorded
        }
    delta.compact()
    minutes: dict[int, Content] = {}
    _group_rows(delta.counts, minutes)
    _group_keys(delta.users, minutes, users=True)
    _group_keys(delta.pages, minutes, users=False)
    return minutes


def total(contents: Iterable[Content]) -> Content:
    """The sum of some buckets (an hour from its minutes)."""
    out = Content()
    owned: set[tuple[int, str]] = set()
    for content in contents:
        out.absorb(content, owned)
    return out
