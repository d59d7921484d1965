"""The in-memory store: fast, exact, and forgets everything when the process ends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wikipulse.stats import Batch, Stats
from wikipulse.stores import ResumePoint
from wikipulse.stores.memory_windows import MemoryWindows
from wikipulse.window_query import SeriesQuery, SeriesRows, TopItem, TopQuery

if TYPE_CHECKING:
    from wikipulse.config import Settings

__all__ = ["MemoryStore"]

#: How long time windows are kept by default, behind the newest event time seen.
DEFAULT_RETENTION_HOURS = 48.0


class MemoryStore:
    """Keep the statistics in process memory; also the fake store of the tests."""

    def __init__(self, *, window_retention_hours: float = DEFAULT_RETENTION_HOURS) -> None:
        self._total = 0
        self._bots = 0
        self._servers: dict[str, int] = {}
        self._users: set[str] = set()
        self._position: str | None = None
        self._windows = MemoryWindows(int(window_retention_hours * 3600))

    @classmethod
    def from_settings(cls, settings: Settings) -> MemoryStore:
        """A new, empty store keeping windows for `window_retention_hours`."""
        return cls(window_retention_hours=settings.window_retention_hours)

    async def migrate(self) -> None:
        """Nothing to create."""

    async def open(self) -> None:
        """Nothing to connect to."""

    async def commit(self, batch: Batch) -> None:
        """Add the batch's deltas; nothing awaits in between, so readers never see half."""
        self._total += batch.total
        self._bots += batch.bots
        servers = self._servers
        for name, count in batch.by_server_name.items():
            servers[name] = servers.get(name, 0) + count
        self._users |= batch.users
        self._windows.add(batch.windows, batch.total)
        if batch.position is not None:
            self._position = batch.position

    async def snapshot(self) -> Stats:
        """Copy the current statistics."""
        return Stats(self._total, len(self._users), self._bots, dict(self._servers))

    async def resume_point(self) -> ResumePoint:
        """The position reached in this process (the window lives in the aggregator)."""
        return ResumePoint(self._position)

    async def window_span(self) -> tuple[int, int] | None:
        """The oldest and newest minute kept."""
        return self._windows.span()

    async def window_series(self, query: SeriesQuery) -> SeriesRows:
        """The rows of a timeseries."""
        return self._windows.series(query)

    async def window_top(self, query: TopQuery) -> list[TopItem]:
        """The busiest keys of the window."""
        return self._windows.top(query)

    async def prune_windows(self) -> int:
        """Drop windows older than the retention period."""
        return self._windows.prune()

    async def close(self) -> None:
        """Nothing to release."""
