"""The Cassandra store's prepared statements, by name, each prepared once.

Most are prepared when the store opens; a commit batch of a new shape (more recent-id slots
cleared, stale marks) or a lease statement is prepared on first use, and a statement being
prepared is awaited by every caller that needs it rather than prepared again on another worker
thread. (Claims are no text batches: one prepared row statement, batched by `driver.row_batch`.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from wikipulse.stores.cassandra import driver

__all__ = ["Cql", "Statements"]

#: Statements prepared on first use, at DEBUG beside the commit timings (a commit that meets
#: a new shape waits for its preparation).
timing_log = logging.getLogger("wikipulse.stores.cassandra.store.timing")


class Statements:
    """Prepared statements of one session by name; `cql_of` names those prepared on first use."""

    def __init__(self, cql_of: Callable[[str], str]) -> None:
        self._cql_of = cql_of
        self._prepared: dict[str, Any] = {}
        self._pending: dict[str, asyncio.Future[Any]] = {}

    async def _prepare(self, session: driver.CqlSession, name: str) -> Any:
        started = time.perf_counter()
        prepared = await driver.blocking(session.prepare, self._cql_of(name))
        if timing_log.isEnabledFor(logging.DEBUG):
            ms = (time.perf_counter() - started) * 1000
            timing_log.debug("prepared %s in %.1f ms", name, ms)
        return prepared

    def __contains__(self, name: str) -> bool:
        return name in self._prepared

    async def prepare_all(
        self, session: driver.CqlSession, cql: Mapping[str, str], serial: Iterable[str], level: Any
    ) -> None:
        """Prepare every statement of `cql`; those named in `serial` read at `level` (SERIAL)."""
        for name, text in cql.items():
            self._prepared[name] = await driver.blocking(session.prepare, text)
        for name in serial:
            self._prepared[name].consistency_level = level

    async def add(self, session: driver.CqlSession, name: str, cql: str, level: Any = None) -> None:
        """Prepare `cql` as `name` unless it is already (at consistency `level` if given)."""
        if name in self._prepared:
            return
        prepared = await driver.blocking(session.prepare, cql)
        if level is not None:
            prepared.consistency_level = level
        self._prepared[name] = prepared

    async def get(self, session: driver.CqlSession, name: str) -> Any:
        """The prepared statement `name`, prepared now (once, however many ask) if need be."""
        prepared = self._prepared.get(name)
        if prepared is not None:
            return prepared
        pending = self._pending.get(name)
        if pending is None:
            pending = asyncio.ensure_future(self._prepare(session, name))
            self._pending[name] = pending
        try:
            prepared = await asyncio.shield(pending)
        finally:
            if pending.done():
                self._pending.pop(name, None)
        self._prepared[name] = prepared
        return prepared


class Cql:
    """The store's session, once open, and its prepared statements: statements run by name."""

    def __init__(self, statements: Statements) -> None:
        self.statements = statements
        self.session: driver.CqlSession | None = None

    async def _prepared(self, name: str) -> tuple[driver.CqlSession, Any]:
        session = self.session
        if session is None:
            raise RuntimeError("the Cassandra store is not open")
        return session, await self.statements.get(session, name)

    async def prepare_once(self, name: str, cql: str, level: Any = None) -> None:
        """Prepare `cql` as `name` if the store is open and it is not yet (at consistency
        `level` if given): statements other modules bring, such as the lease's."""
        if self.session is not None:
            await self.statements.add(self.session, name, cql, level)

    async def execute(self, name: str, params: Sequence[Any]) -> driver.Rows:
        """Run the statement `name` with `params`."""
        session, prepared = await self._prepared(name)
        return await driver.execute(session, prepared, params)

    async def execute_rows(self, name: str, rows: Sequence[Sequence[Any]]) -> driver.Rows:
        """Run a single-row statement over many rows of one partition, as one batch."""
        session, prepared = await self._prepared(name)
        return await driver.execute(session, driver.row_batch(prepared, rows))
