"""One ingester's partition of the `state` table as the store reads it back.

Kept apart from `store.py`: parsing the rows of one SERIAL read (totals, epochs, the newest
window minute, the recent-id slots, see `recent.py`) is a pure function of those rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wikipulse.stores.cassandra import driver

__all__ = ["Partition", "parse"]


@dataclass
class Partition:
    """One ingester's partition as read back: its totals, epochs and window slots."""

    seq: int | None = None
    token: str | None = None
    total: int = 0
    bots: int = 0
    users: int = 0
    position: str | None = None
    servers: dict[str, int] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)
    #: (seq of the last commit that wrote it, slot number, its ids), oldest first.
    slots: list[tuple[int, int, list[str]]] = field(default_factory=list)
    #: The newest minute of event time committed to the time windows (see `windows.py`).
    window_newest: int | None = None


def parse(rows: driver.Rows) -> Partition:
    """The partition the rows of one read describe (slots oldest first)."""
    part = Partition()
    for row in rows:
        if part.seq is None and row.get("seq") is not None:
            part.seq, part.token = row["seq"], row["batch_token"]
            part.total, part.bots = row["total"] or 0, row["bots"] or 0
            part.users, part.position = row["distinct_users"] or 0, row["position"]
            part.servers = dict(row["by_server"] or {})
        if row.get("kind") == "epoch":
            part.epochs[row["name"]] = row["last_seq"]
        elif row.get("kind") == "window":
            part.window_newest = row["last_seq"]
        elif row.get("kind") == "recent":
            part.slots.append((row["last_seq"], int(row["name"]), list(row["ids"] or ())))
    part.slots.sort()
    return part
