"""What a source hands to the pipeline: events single or per read, lines, or folded ranges.

No asyncio and no I/O here: `replay` imports this before it forks its decoding workers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from wikipulse.stats import Partial

__all__ = ["Events", "Feed", "Folded", "Lines", "RawEvent"]

#: One event as a live source delivers it: its JSON bytes and the stream position after it.
RawEvent = tuple[bytes, str | None]


@dataclass(frozen=True, slots=True)
class Events:
    """Consecutive live events from one network read: each one's JSON and stream position.

    The live source yields one of these per chunk it reads, so the pipeline folds a chunk's
    events in one call instead of being resumed once per event.
    """

    data: list[bytes]
    positions: list[str | None]

    def pairs(self) -> list[RawEvent]:
        """The events one by one, as (data, position)."""
        return list(zip(self.data, self.positions, strict=True))


@dataclass(frozen=True, slots=True)
class Lines:
    """NDJSON lines of a file, which carry no stream position."""

    lines: list[bytes]


@dataclass(frozen=True, slots=True)
class Folded:
    """Deltas a worker folded from part of a file, and how to read that part again.

    The worker folded as if the part held no repeated event; if the pipeline finds one (the
    part repeats an id, or shares one with the dedup window) it folds `lines()` itself.
    """

    partial: Partial
    lines: Callable[[], list[bytes]]


#: Anything a source may yield to `Pipeline.run`.
Feed = RawEvent | Events | Lines | Folded
