"""Recorded window events as a replay's batch holds them: ranges packed by workers, merged."""

from __future__ import annotations

import random

from wikipulse.window_delta import WindowDelta
from wikipulse.window_packing import RawWindowEvent


def recorded_events(seed: int, count: int = 3000) -> list[RawWindowEvent]:
    """Random recorded events over 7 minutes and 4 wikis: types none, empty and named, users
    and titles missing, repeated and not, bots, bytes added and removed."""
    rng = random.Random(seed)
    return [
        (
            1_800_000_000 + 60 * rng.randrange(7),
            f"w{rng.randrange(4)}.org",
            rng.choice(["edit", "new", "log", None, ""]),
            rng.random() < 0.3,
            rng.choice([f"u{rng.randrange(30)}", None, ""]),
            rng.choice([f"p{rng.randrange(50)}", None]),
            rng.randrange(-500, 500),
        )
        for _ in range(count)
    ]


def replay_batch(raw: list[RawWindowEvent]) -> WindowDelta:
    """The events as a replay's batch: three ranges packed apart, then a range refolded by the
    parent (its events as recorded, no type and "" side by side), all merged."""
    delta = WindowDelta()
    cut = len(raw) * 4 // 5
    step = cut // 3 + 1
    for start in range(0, cut, step):
        part = WindowDelta()
        part.raw = raw[start : min(start + step, cut)]
        delta.merge(part.pack())
    refolded = WindowDelta()
    refolded.raw = raw[cut:]
    delta.merge(refolded)
    return delta
