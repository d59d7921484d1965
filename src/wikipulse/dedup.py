"""The exact deduplication window: the ids of the most recent events, kept in bounded memory."""

from __future__ import annotations

from collections.abc import Collection, Iterable

__all__ = ["RecentIds"]


class RecentIds:
    """Recent event ids, for dropping replayed events: at least the last `capacity` of them.

    Two generations of at most `capacity` ids each: when the newer one fills up it becomes
    the older and the old one is dropped whole, so remembering an id is one set insertion
    with no eviction per id, and memory stays bounded by twice the capacity. The rotation
    depends only on the sequence of ids, so adding them one at a time or in bulk leaves the
    same window.
    """

    __slots__ = ("_capacity", "_new", "_old")

    def __init__(self, capacity: int, ids: Iterable[str] = ()) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._new: set[str] = set()
        self._old: set[str] = set()
        for event_id in ids:
            self.add(event_id)

    def add(self, event_id: str) -> bool:
        """Remember an id; return False if it was already in the window."""
        if event_id in self._new or event_id in self._old:
            return False
        self._new.add(event_id)
        if len(self._new) >= self._capacity:
            self._rotate()
        return True

    def _rotate(self) -> None:
        self._old, self._new = self._new, set()

    def isdisjoint(self, event_ids: Collection[str]) -> bool:
        """Whether none of these ids is in the window."""
        return self._new.isdisjoint(event_ids) and self._old.isdisjoint(event_ids)

    def extend_new(self, event_ids: list[str]) -> None:
        """Remember ids known to be distinct and absent from the window, oldest first."""
        done = 0
        while done < len(event_ids):
            # Add up to the id that fills the newer generation, exactly where `add` rotates.
            piece = event_ids[done : done + self._capacity - len(self._new)]
            self._new.update(piece)
            done += len(piece)
            if len(self._new) >= self._capacity:
                self._rotate()

    def add_new(self, event_ids: list[str]) -> bool:
        """Remember these ids if they are distinct and none is in the window, and return True;
        else leave the window as it was and return False.

        A replay's parent checks every range's ids this way, so its workers need not find
        their repeats themselves (a set of every id of a range, ~5% of a worker's time): the
        insertion that the window needs anyway shows them, and is undone exactly, since none
        of the ids was in the window before it.
        """
        if not self.isdisjoint(event_ids):
            return False
        new = self._new
        if len(new) + len(event_ids) >= self._capacity:  # rotates: check apart (rare)
            if len(set(event_ids)) != len(event_ids):
                return False
            self.extend_new(event_ids)
            return True
        before = len(new)
        new.update(event_ids)
        if len(new) - before == len(event_ids):
            return True
        new.difference_update(event_ids)
        return False

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._new or event_id in self._old

    def __len__(self) -> int:
        return len(self._new) + len(self._old)
