"""Background pruning of time windows, shared by the SQL stores.

After each commit a store tells the pruner the newest minute it has written. Once event time
has moved on by `every` seconds since the last pruning, a background task deletes what ended
more than the retention period before the newest event, a bounded chunk per transaction, so
commits are never held up behind one large delete.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["WindowPruner"]

log = logging.getLogger(__name__)

#: Rows deleted per table (or blob dimension) and granularity in one pruning transaction:
#: the SQL stores' rows are whole buckets, up to a few megabytes each.
CHUNK_ROWS = 200


class WindowPruner:
    """Prune a store's windows behind its newest event time, in the background."""

    def __init__(
        self,
        delete_chunk: Callable[[int, int], Awaitable[int]],
        retention_seconds: int,
        every: int = 300,
    ) -> None:
        self._delete_chunk = delete_chunk
        self._retention = retention_seconds
        self._every = every
        self._newest: int | None = None
        self._pruned_at: int | None = None
        self._task: asyncio.Task[int] | None = None

    def note(self, newest: int | None) -> None:
        """A commit wrote windows up to minute `newest`; start pruning if it is time."""
        if newest is None or (self._newest is not None and newest <= self._newest):
            return
        self._newest = newest
        if self._pruned_at is not None and newest - self._pruned_at < self._every:
            return
        if self._task is None or self._task.done():
            self._pruned_at = newest
            self._task = asyncio.get_running_loop().create_task(
                self._guarded(), name="wikipulse-window-prune"
            )

    async def _guarded(self) -> int:
        try:
            return await self.prune()
        except Exception as exc:  # pruning is retried at the next mark; commits go on
            log.warning("pruning time windows failed: %s", exc)
            self._pruned_at = None
            return 0

    async def prune(self) -> int:
        """Delete everything older than the retention period now; return how many rows."""
        if self._newest is None:
            return 0
        cutoff = self._newest - self._retention
        total = 0
        while True:
            deleted = await self._delete_chunk(cutoff, CHUNK_ROWS)
            total += deleted
            if deleted == 0:
                return total

    async def close(self) -> None:
        """Stop a pruning in progress (what it deleted stays deleted)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
