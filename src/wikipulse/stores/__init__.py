"""The StatsStore port, the factory that picks an adapter, and schema migration."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from wikipulse.config import Settings
    from wikipulse.stats import Batch, Stats

__all__ = [
    "STORES",
    "ConfigurableStore",
    "ResumePoint",
    "StatsStore",
    "StoreError",
    "StoreSpec",
    "StoreUnavailable",
    "make_store",
    "migrate",
    "store_class",
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


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """One kind of store: its name and where its adapter lives (imported only when used)."""

    name: str
    module: str
    cls: str
    summary: str
    #: Whether its windows are written by `window_writer`, which also takes the per-minute
    #: sums a replay worker can make (`WindowDelta.minutes`), sparing the parent that work.
    minute_sums: bool = False


#: Every kind of store, in one place: `make_store`, `migrate`, `--store` and the settings read
#: it. Adding a store touches this table and its adapter module, nothing else.
STORES: dict[str, StoreSpec] = {
    spec.name: spec
    for spec in (
        StoreSpec(
            "memory", "wikipulse.stores.memory", "MemoryStore", "in process, forgotten at exit"
        ),
        StoreSpec(
            "sqlite", "wikipulse.stores.sqlite", "SQLiteStore", "one file (the default)", True
        ),
        StoreSpec("postgres", "wikipulse.stores.postgres", "PostgresStore", "PostgreSQL", True),
        StoreSpec(
            "cassandra", "wikipulse.stores.cassandra", "CassandraStore", "Cassandra/ScyllaDB"
        ),
    )
}


class ConfigurableStore(StatsStore, Protocol):
    """A store class as the registry knows it: built from settings, able to migrate."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ConfigurableStore:
        """Build a store from the service settings (not yet opened)."""
        ...

    async def migrate(self) -> None:
        """Create the schema; running it again changes nothing."""


def store_class(name: str) -> type[ConfigurableStore]:
    """The adapter class of a store kind, importing its module (and driver) only now."""
    try:
        spec = STORES[name]
    except KeyError:
        raise StoreError(f"unknown store {name!r}; choose one of {', '.join(STORES)}") from None
    found: type[ConfigurableStore] = getattr(importlib.import_module(spec.module), spec.cls)
    return found


def make_store(settings: Settings) -> StatsStore:
    """Build the store the settings name (not yet opened)."""
    return store_class(settings.store).from_settings(settings)


async def migrate(settings: Settings) -> None:
    """Create the schema of the configured store; running it again changes nothing."""
    await store_class(settings.store).from_settings(settings).migrate()
