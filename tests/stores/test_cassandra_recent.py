"""The ring of recent-id slots: what each commit writes, and that the window is kept exactly."""

from __future__ import annotations

from typing import Any

from wikipulse.stores.cassandra.recent import RecentSlots, SlotState, beyond_window
from wikipulse.stores.cassandra.schema import SLOTS


def _rows(params: list[Any]) -> list[tuple[str, int, list[str]]]:
    """The (slot name, seq, ids) rows one commit writes, from its parameters."""
    return [(params[i + 1], params[i + 2], params[i + 3]) for i in range(0, len(params), 4)]


def test_commits_fill_a_slot_then_the_next_and_clear_what_left_the_window() -> None:
    """A window of 630 ids: slots of 10 (630 / 63); after 1,000 ids of 10-id commits the slots
    written hold exactly the newest 630, the older ones were overwritten by empty lists."""
    recent = RecentSlots(630)
    table: dict[str, tuple[int, list[str]]] = {}
    cleared_total = 0
    for seq in range(1, 101):
        ids = [f"e{seq}-{i}" for i in range(10)]
        params, cleared, state = recent.stage("me", seq, ids)
        rows = _rows(params)
        assert all(me == "me" for me in params[0::4])
        assert len(rows) == 1 + cleared
        for name, last, held in rows:
            table[name] = (last, held)
        recent.commit(state)
        cleared_total += cleared
    assert len(recent.state.ids) == 10
    assert recent.state.slot == 99 % SLOTS
    slots = sorted((last, int(name), held) for name, (last, held) in table.items())
    kept = [i for _, _, held in slots for i in held]
    every = [f"e{seq}-{i}" for seq in range(1, 101) for i in range(10)]
    assert kept == every[-630:]
    assert recent.newest(slots) == every[-630:]
    assert cleared_total == 100 - 63  # each commit past the 63rd left one old slot behind


def test_a_store_that_loads_the_slots_goes_on_where_they_end() -> None:
    """Adopted slots (as a load reads them) make the next commit continue the newest slot."""
    recent = RecentSlots(630)
    recent.adopt([(3, 0, ["a"] * 10), (5, 1, ["b"] * 4), (0, 2, [])])
    assert recent.state == SlotState(1, ["b"] * 4, {0: (3, 10), 1: (5, 4)})
    params, cleared, state = recent.stage("me", 6, ["c"])
    assert _rows(params) == [("0001", 6, ["b"] * 4 + ["c"])]
    assert cleared == 0
    assert state == SlotState(1, ["b"] * 4 + ["c"], {0: (3, 10), 1: (6, 5)})
    recent.adopt([])
    assert recent.state == SlotState()


def test_beyond_window_keeps_the_newest_slots_that_reach_the_window() -> None:
    filled = {0: (1, 10), 1: (2, 10), 2: (3, 10), 3: (4, 5)}
    assert beyond_window(filled, 15) == [0, 1]
    assert beyond_window(filled, 16) == [0]
    assert beyond_window(filled, 100) == []
