"""The writer's lease in PostgreSQL: one row, checked inside every commit's transaction.

`wp_lease` holds the holder's id, the fencing token and the expiry, all on the server's
clock (`clock_timestamp()`), so ingesters on machines with different clocks agree on it.
Taking the lease grows the token; renewing keeps it. A commit locks the row `FOR SHARE` and
checks it in its own transaction, so a takeover (an `UPDATE` of the row) waits for a commit
that already passed its check, and a commit after a takeover sees the new token and raises
`LeaseLost`, rolling back everything it wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from wikipulse.lease import Fence, LeaseInfo, LeaseLost, judge

__all__ = ["LEASE_DDL", "PostgresLease", "check_in_transaction"]

LEASE_DDL = """
CREATE TABLE IF NOT EXISTS wp_lease (
    id smallint PRIMARY KEY CHECK (id = 1),
    holder text,
    token bigint NOT NULL DEFAULT 0,
    expires_at timestamptz
);
INSERT INTO wp_lease (id) VALUES (1) ON CONFLICT DO NOTHING;
"""
_ACQUIRE = (
    "UPDATE wp_lease SET holder = $1, token = token + 1, "
    "expires_at = clock_timestamp() + make_interval(secs => $2) "
    "WHERE id = 1 AND (holder IS NULL OR expires_at IS NULL OR expires_at <= clock_timestamp()) "
    "RETURNING token"
)
_RENEW = (
    "UPDATE wp_lease SET expires_at = clock_timestamp() + make_interval(secs => $3) "
    "WHERE id = 1 AND holder = $1 AND token = $2 AND expires_at > clock_timestamp() "
    "RETURNING token"
)
_RELEASE = (
    "UPDATE wp_lease SET expires_at = clock_timestamp() WHERE id = 1 AND holder = $1 AND token = $2"
)
_INFO = (
    "SELECT CASE WHEN expires_at > clock_timestamp() THEN holder END, token "
    "FROM wp_lease WHERE id = 1"
)
_CHECK = "SELECT holder, token, expires_at > clock_timestamp() FROM wp_lease WHERE id = 1 FOR SHARE"

Connect = Callable[[], AbstractAsyncContextManager[Any]]


async def check_in_transaction(conn: Any, fence: Fence | None) -> None:
    """Inside a commit's transaction: raise `LeaseLost` unless this commit may write.

    With a fence, the row must name its holder and token and not have expired. Without one
    (`serve`, a replay), nobody may hold an unexpired lease: a lone writer must not write
    under an ingester fleet.
    """
    row = await conn.fetchrow(_CHECK)
    if row is None:  # a schema from before the lease: nothing to check against
        if fence is None:
            return
        raise LeaseLost("PostgreSQL has no wp_lease row; run `wikipulse migrate`")
    holder, token, live = row[0], row[1], bool(row[2])
    judge(fence, holder, token, live)


class PostgresLease:
    """The `Lease` port on a PostgreSQL store's connection pool."""

    def __init__(self, connection: Connect) -> None:
        self._connection = connection

    async def acquire(self, holder: str, seconds: float) -> int | None:
        """Take the lease if free or expired; the new token, else None."""
        async with self._connection() as conn:
            token = await conn.fetchval(_ACQUIRE, holder, float(seconds))
        return None if token is None else int(token)

    async def renew(self, holder: str, token: int, seconds: float) -> bool:
        """Extend the lease if still held with this token and not expired."""
        async with self._connection() as conn:
            found = await conn.fetchval(_RENEW, holder, token, float(seconds))
        return found is not None

    async def release(self, holder: str, token: int) -> None:
        """Expire the lease now if still held with this token."""
        async with self._connection() as conn:
            await conn.execute(_RELEASE, holder, token)

    async def info(self) -> LeaseInfo:
        """The live holder (None if free or expired) and the newest token."""
        async with self._connection() as conn:
            row = await conn.fetchrow(_INFO)
        return LeaseInfo(None, 0) if row is None else LeaseInfo(row[0], int(row[1]))
