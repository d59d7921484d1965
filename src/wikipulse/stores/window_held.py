"""The buckets the SQL stores' writer holds: summed in Python (`Acc`) or as stored blobs.

A replay's workers send each minute as the blobs of a stored part. Decoding them into dicts,
summing the dicts into 5-minute buckets and hours, ranking and encoding those again was most
of a replay's serial part (the writer's thread, py-spy: ~75% of it). So such a minute is held
as it came (`Encoded`), stored as it is, and buckets summed from blobs are summed by the C
extension `wikipulse._merge` on the blobs themselves, without a Python object per user,
page or wiki and without the GIL.
Live batches are summed from events into `Acc`s, as before; a bucket holding both is summed
in C once its `Acc`s are encoded. Without the extension (installed without a C compiler)
blobs are decoded and summed in Python: the same sums.

Ties in a ranked list keep the order in which the keys were met in either path; nothing reads
that order (top lists break ties by key).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import msgspec

from wikipulse.stores import window_rank
from wikipulse.stores.window_tables import INDEX_DIMS, TAIL_DIMS, PartRow
from wikipulse.window_blobs import (
    DIMS,
    Acc,
    Part,
    Totals,
    add_dict,
    add_row,
    decode_part,
    take_rows,
)
from wikipulse.window_delta import WindowDelta
from wikipulse.window_index import HEAD, index_blobs
from wikipulse.window_minutes import c_built, c_minutes, recorded_accs
from wikipulse.windows import MinuteBlobs

__all__ = [
    "Encoded",
    "Held",
    "Holding",
    "Pending",
    "acc_of",
    "batch_minutes",
    "blob_rows",
    "empty",
    "events",
    "merged",
    "native",
    "seal_later",
    "seal_now",
    "sealed_rows",
]

_Blobs = tuple[bytes, bytes, bytes, bytes]
_merge: Callable[[list[_Blobs]], _Blobs] | None
_index: Callable[[bytes, bool, int], tuple[bytes, bytes] | None] | None
try:  # built from src/wikipulse/_merge.c, optional like the other extensions
    from wikipulse._merge import index as _index
    from wikipulse._merge import merge as _merge
except ImportError:  # installed without a C compiler
    _merge = _index = None

_encode = msgspec.msgpack.Encoder().encode
_TOTALS = msgspec.msgpack.Decoder(Totals)


class Encoded:
    """A bucket held as its four stored blobs (`rows`: dimension -> bytes)."""

    __slots__ = ("rows",)

    def __init__(self, rows: dict[str, bytes]) -> None:
        self.rows = rows


Held = Acc | Encoded
#: A bucket's sum and sealed rows (none if it is empty).
Sealed = tuple[Held, list[PartRow]]


class Pending:
    """A coarse bucket being summed and sealed on the sealing thread (`seal_later`): its level
    and number, and its sum and rows to come."""

    __slots__ = ("bucket", "future", "g")

    def __init__(self, g: int, bucket: int, future: Future[Sealed]) -> None:
        self.g, self.bucket, self.future = g, bucket, future

    def result(self) -> Sealed:
        """The sum and rows (waiting for them if they are not made yet)."""
        return self.future.result()


#: What the writer's running sums hold of a bucket: a sum, or one still being made.
Holding = Held | Pending


def native() -> bool:
    """Whether blobs are summed in C (`wikipulse._merge` is built)."""
    return _merge is not None


def acc_of(item: Held) -> Acc:
    """The bucket as an `Acc`: the same one, or its blobs decoded into a new one."""
    if isinstance(item, Acc):
        return item
    part = Part()
    for dim, data in item.rows.items():
        decode_part(part, dim, data)
    acc = Acc()
    acc.add_part(part)
    return acc


def events(item: Held) -> int:
    """How many events the bucket holds."""
    types = item.types if isinstance(item, Acc) else _TOTALS.decode(item.rows["t"]).types
    return sum(row[0] for row in types.values())


def empty(item: Held) -> bool:
    """Whether the bucket holds no event."""
    return events(item) == 0 if isinstance(item, Encoded) else not item.types


def blob_rows(item: Held) -> list[tuple[str, bytes]]:
    """The bucket's four blobs, (dimension, bytes)."""
    if isinstance(item, Encoded):
        return [(dim, item.rows[dim]) for dim in DIMS]
    return window_rank.blobs(item)


def sealed_rows(bucket: int, item: Held) -> list[PartRow]:
    """A whole coarse bucket as part 0, with the top-list indexes of its users and pages. Its
    pages are kept in their index only (head and tail hold every page: readers that sum the
    bucket make its `p` blob from them, `window_tables.fetch_parts`), unless no index could
    be made; that is a third less to write and keep (an hour's pages are ~40% of its rows)."""
    if isinstance(item, Encoded) and _index is not None:
        blobs = item.rows
        indexes = {
            dim: _index(blobs[dim], is_pages, HEAD) for dim, is_pages in (("u", False), ("p", True))
        }
    else:
        structs = window_rank.structs(acc_of(item))
        _, _, users, pages = structs
        blobs = {dim: _encode(value) for dim, value in zip(DIMS, structs, strict=True)}
        indexes = {
            "u": index_blobs(users.names, users.n),
            "p": index_blobs(pages.keys, pages.n),
        }
    rows = [(bucket, 0, dim, blobs[dim]) for dim in DIMS if dim != "p" or indexes["p"] is None]
    for dim, index in indexes.items():
        if index is not None:
            rows.append((bucket, 0, INDEX_DIMS[dim], index[0]))
            rows.append((bucket, 0, TAIL_DIMS[dim], index[1]))
    return rows


def merged(held: Sequence[Holding], keep: bool = False) -> Held:
    """The sum of a bucket's items (waiting for those still summed on the sealing thread).
    With `keep` the items are left as they were; else `Acc`s may be taken over (the largest
    is added to in place)."""
    items = [item.result()[0] if isinstance(item, Pending) else item for item in held]
    if len(items) == 1:
        return items[0]
    if _merge is not None and any(isinstance(item, Encoded) for item in items):
        return _merged_blobs(items, _merge)
    if keep:
        total = Acc()
        for item in items:
            total.add(acc_of(item))
        return total
    accs = [acc_of(item) for item in items]
    total = max(accs, key=_size)
    for acc in accs:
        if acc is not total:
            _absorb(total, acc)
    return total


def _merged_blobs(items: list[Held], merge: Callable[[list[_Blobs]], _Blobs]) -> Encoded:
    """Sum in C: every item as its four blobs (an `Acc` is encoded first)."""
    blobs = [item.rows if isinstance(item, Encoded) else dict(blob_rows(item)) for item in items]
    summed = merge([(rows["t"], rows["c"], rows["u"], rows["p"]) for rows in blobs])
    return Encoded(dict(zip(DIMS, summed, strict=True)))


def _size(acc: Acc) -> int:
    return len(acc.pages) + len(acc.users)


def _absorb(total: Acc, acc: Acc) -> None:
    """Add `acc` to `total`, taking over its dicts, lists and sets where `total` has none
    (`Acc.add` copies them: it must leave a batch's acc as it was)."""
    for kind, row in acc.types.items():
        add_row(total.types, kind, row)
    take_rows(total.rows, acc.rows)
    add_dict(total.users, acc.users)
    members = total.members
    for server, names in acc.members.items():
        have = members.get(server)
        if have is None:
            members[server] = names
        else:
            have |= names
    add_dict(total.pages, acc.pages)


def seal_now(bucket: int, held: Sequence[Holding]) -> Sealed:
    """A closed coarse bucket's sum (its held items taken over) and its sealed rows."""
    item = merged(held)
    return item, [] if empty(item) else sealed_rows(bucket, item)


#: The one thread that seals buckets for `seal_later`, in the order asked (so a bucket summed
#: from buckets sealed there before only waits for results that are made).
_sealer: ThreadPoolExecutor | None = None


def seal_later(g: int, bucket: int, held: list[Holding]) -> Pending | None:
    """`seal_now` on the sealing thread, where the C extension sums the bucket (it holds no
    GIL, so the writer's thread goes on meanwhile); None where it would be summed in Python
    (the GIL would serialise the two threads anyway): the caller seals it now."""
    global _sealer
    if _merge is None or not any(isinstance(item, Encoded | Pending) for item in held):
        return None
    if _sealer is None:
        _sealer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wikipulse-seal")
    return Pending(g, bucket, _sealer.submit(seal_now, bucket, held))


def batch_minutes(delta: WindowDelta) -> dict[int, Held]:
    """A batch's windows per minute: its recorded events summed per minute (in C where built,
    as blobs: `wikipulse._merge.minutes`), and the minutes a replay worker summed held as
    their blobs (summed with the rest where a minute has both, or came from two workers).
    The delta is left as it was (a retried commit reads it again)."""
    items: dict[int, list[Held]]
    summed = _recorded_blobs(delta)
    if summed is None:
        items = {minute: [acc] for minute, acc in recorded_accs(delta).items()}
    else:
        items = {minute: [Encoded(dict(rows))] for minute, rows in summed.items()}
    for sums in delta.summed():
        for minute, rows in sums.items():
            items.setdefault(minute, []).append(Encoded(dict(rows)))
    return {minute: merged(held) for minute, held in items.items()}


def _recorded_blobs(delta: WindowDelta) -> MinuteBlobs | None:
    """The recorded events summed per minute in C; None where Python sums them (events
    summed into the maps already, or see `window_minutes.c_minutes`)."""
    if not c_built():  # not read twice: `recorded_accs` reads them for Python
        return None
    events = delta.recorded(but_sums=True)
    if events is None:
        return None
    if not events:
        return {}
    sums = c_minutes(events)
    return None if sums is None else sums[0]
