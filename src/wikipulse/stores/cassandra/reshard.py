"""Moving claims of the earlier `users` layout (256 shards) to the current one, on migrate.

The shard count is part of where a user's claim lives: a store that looked for a user in the
current layout's shard while an older version had claimed it in its own shard would count the
user again. The layouts therefore number their shards apart (0-255 then, `FIRST_SHARD` on
now) in the same table, and `wikipulse migrate` moves every old claim unchanged to its new
shard, then deletes the old partition (one partition tombstone each, not one per row). It is
an operator's step with every ingester stopped, like any schema change; run twice, the second
run finds nothing to move.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from wikipulse.stores.cassandra import driver
from wikipulse.stores.cassandra.schema import OLD_SHARDS, shard_of

__all__ = ["move_old_claims"]

log = logging.getLogger(__name__)

_CHUNK = 200  # inserts in flight at once while moving


async def move_old_claims(session: driver.CqlSession, keyspace: str) -> int:
    """Move the claims of the 256-shard layout to the current shards; return how many moved."""
    await driver.blocking(session.set_keyspace, keyspace)  # as `open` does next
    read = await driver.blocking(
        session.prepare, "SELECT name, ingester_id, epoch, seq FROM users WHERE shard = ?"
    )
    insert = await driver.blocking(
        session.prepare,
        "INSERT INTO users (shard, name, ingester_id, epoch, seq) VALUES (?, ?, ?, ?, ?)",
    )
    drop = await driver.blocking(session.prepare, "DELETE FROM users WHERE shard = ?")
    # Every old partition is looked at on each migrate (a fresh keyspace too): the first row
    # of each (pages of one row), side by side, not 256 full reads one after another; then
    # the non-empty ones are moved one partition at a time, so memory holds one at most.
    probe = await driver.blocking(session.prepare, "SELECT name FROM users WHERE shard = ?")
    probe.fetch_size = 1
    found = await asyncio.gather(
        *(_first_page(session.execute_async(probe, [old])) for old in range(OLD_SHARDS))
    )
    moved = 0
    for old in (n for n, any_row in enumerate(found) if any_row):
        rows = await driver.result(session.execute_async(read, [old]))
        for start in range(0, len(rows), _CHUNK):
            writes: list[Any] = [
                session.execute_async(
                    insert,
                    [shard_of(r["name"]), r["name"], r["ingester_id"], r["epoch"], r["seq"]],
                )
                for r in rows[start : start + _CHUNK]
            ]
            for write in writes:
                await driver.result(write)
        # Only once every row is written again: a migrate that dies half-way is run again.
        await driver.result(session.execute_async(drop, [old]))
        moved += len(rows)
    if moved:
        log.warning("moved %d user claims from the 256-shard layout to %s", moved, keyspace)
    return moved


async def _first_page(future: Any) -> bool:
    """Whether a query's first page holds a row (the rest is never fetched)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bool] = loop.create_future()

    def settle(rows: Any = None, exc: BaseException | None = None) -> None:
        if done.done():
            return
        if exc is not None:
            done.set_exception(driver.translate(exc))
        else:
            done.set_result(bool(rows))

    future.add_callbacks(
        lambda rows: loop.call_soon_threadsafe(settle, rows),
        lambda exc: loop.call_soon_threadsafe(settle, None, exc),
    )
    return await done
