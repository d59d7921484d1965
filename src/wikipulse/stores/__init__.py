"""The StatsStore port, the factory that picks an adapter, and schema migration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from wikipulse.config import Settings
    from wikipulse.stats import Batch, Stats

__all__ = [
    "ResumePoint",
    "StatsStore",
    "StoreError",
    "StoreUnavailable",
    "make_store",
    "migrate",
]


class StoreError(RuntimeError):
    """Raised when a store cannot be used as configured; the message says what to do."""


class StoreUnavailable(StoreError):
    """Raised by a store that cannot reach its backend right now; the caller retries."""


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a restarted consumer picks up: the stream position and the recent event ids."""

    position: str | None = None
    recent_ids: list[str] = field(default_factory=list)


class StatsStore(Protocol):
    """Where aggregated statistics and the stream position live."""

    async def open(self) -> None:
        """Connect to the backend (creating the schema where the store does that itself)."""

    async def commit(self, batch: Batch) -> None:
        """Apply a batch of deltas together with the position it reaches."""

    async def snapshot(self) -> Stats:
        """Read a consistent snapshot of the statistics."""

    async def resume_point(self) -> ResumePoint:
        """Read the position to resume from and the event ids to deduplicate against."""

    async def close(self) -> None:
        """Release connections and files."""


def make_store(settings: Settings) -> StatsStore:
    """Build the store the settings name (not yet opened)."""
    # Imported here so that a deployment only loads the driver of the store it uses.
    if settings.store == "memory":
        from wikipulse.stores.memory import MemoryStore

        return MemoryStore()
    if settings.store == "sqlite":
        from wikipulse.stores.sqlite import SQLiteStore

        return SQLiteStore.from_settings(settings)
    if settings.store == "postgres":
        from wikipulse.stores.postgres import PostgresStore

        return PostgresStore.from_settings(settings)
    if settings.store == "cassandra":
        from wikipulse.stores.cassandra import CassandraStore

        return CassandraStore.from_settings(settings)
    raise ValueError(f"unknown store {settings.store!r}")  # settings validation prevents this


async def migrate(settings: Settings) -> None:
    """Create the schema of the configured store; running it again changes nothing."""
    if settings.store == "memory":
        return
    if settings.store == "sqlite":
        from wikipulse.stores.sqlite import SQLiteStore

        await SQLiteStore.from_settings(settings).migrate()
    elif settings.store == "postgres":
        from wikipulse.stores.postgres import PostgresStore

        await PostgresStore.from_settings(settings).migrate()
    elif settings.store == "cassandra":
        from wikipulse.stores.cassandra import CassandraStore

        await CassandraStore.from_settings(settings).migrate()
    else:
        raise ValueError(f"unknown store {settings.store!r}")
