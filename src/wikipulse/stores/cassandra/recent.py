"""The dedup window's recent event ids, kept in one ingester's partition as a ring of slots.

A commit appends its event ids to the slot being filled (a row of the `state` partition, its
ids a frozen list written whole), so a restart reloads the newest `window` ids with the state
it read at SERIAL. A slot that holds its share (`window / (SLOTS - 1)`) leaves the next
commit to the next slot; slots that hold only ids older than the newest `window` are cleared
by an empty list, a cell overwrite, so the partition writes no tombstone. Everything here only
says what a commit writes and what to keep once it committed: the commit itself is the store's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from wikipulse.stores.cassandra.schema import SLOTS

__all__ = ["RecentSlots", "SlotState", "beyond_window"]


@dataclass(frozen=True)
class SlotState:
    """The slot being filled, its ids, and per slot holding ids: (last seq, how many)."""

    slot: int = 0
    ids: list[str] = field(default_factory=list)
    filled: dict[int, tuple[int, int]] = field(default_factory=dict)


def beyond_window(filled: dict[int, tuple[int, int]], window: int) -> list[int]:
    """The slots holding only ids older than the newest `window` ids."""
    kept = 0
    beyond = []
    for slot, (_, count) in sorted(filled.items(), key=lambda item: -item[1][0]):
        if kept >= window:
            beyond.append(slot)
        kept += count
    return sorted(beyond)


class RecentSlots:
    """Where a commit's event ids go, for a dedup window of `window` ids."""

    def __init__(self, window: int) -> None:
        self._window = window
        # K - 1 full slots hold the whole window; the K-th is the one being filled.
        self._cap = max(1, math.ceil(window / (SLOTS - 1)))
        self.state = SlotState()

    def adopt(self, slots: list[tuple[int, int, list[str]]]) -> None:
        """Take the slots a load read back: (last seq, slot number, ids), oldest first."""
        filled = {slot: (last, len(ids)) for last, slot, ids in slots if ids}
        if filled:
            _, slot, ids = max(s for s in slots if s[2])
            self.state = SlotState(slot, ids, filled)
        else:
            self.state = SlotState()

    def newest(self, slots: list[tuple[int, int, list[str]]]) -> list[str]:
        """The newest `window` ids of the slots a load read back (oldest first)."""
        ids = [i for _, _, held in slots for i in held]
        return ids[-self._window :]

    def stage(self, me: str, seq: int, event_ids: list[str]) -> tuple[list[Any], int, SlotState]:
        """The commit's parameters for the slots (its ids, then each cleared slot), how many
        slots it clears, and the state to `commit` once the commit applied."""
        now = self.state
        slot, ids = now.slot, now.ids
        if len(ids) >= self._cap:
            slot, ids = (slot + 1) % SLOTS, []
        ids = [*ids, *event_ids][-self._window :]
        params: list[Any] = [me, f"{slot:04d}", seq, ids]
        filled = now.filled | {slot: (seq, len(ids))}
        cleared = beyond_window(filled, self._window)
        for old in cleared:
            # An empty list overwrites the slot's cell: no tombstone, unlike a delete.
            params += [me, f"{old:04d}", 0, []]
            del filled[old]
        return params, len(cleared), SlotState(slot, ids, filled)

    def commit(self, state: SlotState) -> None:
        """The commit that `stage` gave `state` for applied."""
        self.state = state
