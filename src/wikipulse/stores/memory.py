"""The in-memory store: fast, exact, and forgets everything when the process ends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wikipulse.stats import Batch, Stats
from wikipulse.stores import ResumePoint

if TYPE_CHECKING:
    from wikipulse.config import Settings

__all__ = ["MemoryStore"]


class MemoryStore:
    """Keep the statistics in process memory; also the fake store of the tests."""

    def __init__(self) -> None:
        self._total = 0
        self._bots = 0
        self._servers: dict[str, int] = {}
        self._users: set[str] = set()
        self._position: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> MemoryStore:
        """A new, empty store: it has no settings."""
        return cls()

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
        if batch.position is not None:
            self._position = batch.position

    async def snapshot(self) -> Stats:
        """Copy the current statistics."""
        return Stats(self._total, len(self._users), self._bots, dict(self._servers))

    async def resume_point(self) -> ResumePoint:
        """The position reached in this process (the window lives in the aggregator)."""
        return ResumePoint(self._position)

    async def close(self) -> None:
        """Nothing to release."""
