"""The writer's lease in Cassandra: two static cells of the ingester's partition, by Paxos.

The lease lives in the partition it guards (`ingesters`, one per `WIKIPULSE_INGESTER_ID`):
`lease_holder`, written with a TTL of the lease period, so that a holder that stops renewing
simply disappears, and `lease_token`, written without a TTL, so that the fencing token never
goes back. Taking the lease is one conditional batch (`IF lease_holder = null AND
lease_token = <the token read>`) that sets the holder with its TTL and the token plus one;
renewing rewrites the holder with a fresh TTL `IF lease_holder = me AND lease_token = mine`.

A holder's commit is the store's single-partition conditional batch with two more conditions
(`IF seq = ? AND lease_holder = ? AND lease_token = ?`, see `fenced` in `schema.py`), so Paxos
orders it against every takeover: after a takeover, or once the holder's TTL ran out, its
commit does not apply and the store raises `LeaseLost`. Expiry is the servers' clock (TTL);
ingesters need not agree on time.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from wikipulse.lease import Fence, LeaseInfo, LeaseLost

__all__ = ["LEASE_COLUMNS", "CassandraLease", "add_lease_columns", "lease_condition", "refusal"]

#: Static columns of `ingesters` (added to older tables by `wikipulse migrate`).
LEASE_COLUMNS = {"lease_holder": "text", "lease_token": "bigint"}

_STATEMENTS = {
    "lease_read": "SELECT lease_holder, lease_token FROM ingesters WHERE ingester_id = ? LIMIT 1",
    "lease_take": "BEGIN BATCH "
    "UPDATE ingesters USING TTL ? SET lease_holder = ? WHERE ingester_id = ? "
    "IF lease_holder = null AND lease_token = ?; "
    "UPDATE ingesters SET lease_token = ? WHERE ingester_id = ?; "
    "APPLY BATCH",
    "lease_renew": "UPDATE ingesters USING TTL ? SET lease_holder = ? WHERE ingester_id = ? "
    "IF lease_holder = ? AND lease_token = ?",
    "lease_release": "UPDATE ingesters SET lease_holder = null WHERE ingester_id = ? "
    "IF lease_holder = ? AND lease_token = ?",
}

Execute = Callable[[str, str, Sequence[Any], bool], Awaitable[list[dict[str, Any]]]]


def statement(name: str) -> str | None:
    """The CQL of a lease statement by name, or None if `name` is not one."""
    return _STATEMENTS.get(name)


def lease_condition(fence: Fence | None) -> tuple[list[Any], str]:
    """The commit batch's extra condition values and its statement suffix (`schema.statement`).

    With a fence, holder and token must be the committer's (`@fenced`); without one, nobody
    may hold the lease (`@solo`: a lone `serve` does not write under an ingester fleet).
    """
    if fence is not None:
        return [fence.holder, fence.token], "fenced"
    return [None], "solo"


def refusal(fence: Fence | None, found: dict[str, Any], partition: str) -> LeaseLost | None:
    """Why a commit batch that did not apply was refused by the lease, or None if it was not.

    `found` is the row Cassandra returns with `[applied] = false`: the conditions' columns.
    """
    holder = found.get("lease_holder")
    if fence is None and holder is not None:
        return LeaseLost(
            f"ingester {holder!r} holds the writer's lease of {partition!r}; this process "
            "does not write while it does"
        )
    if fence is not None and (holder, found.get("lease_token")) != (fence.holder, fence.token):
        return LeaseLost(
            f"Cassandra: commit refused: the writer's lease of {partition!r} is no longer "
            f"token {fence.token} of {fence.holder!r} (now {holder!r})"
        )
    return None


async def add_lease_columns(session: Any, keyspace: str) -> None:
    """Add columns newer than a table (the lease's; the window heads) to it (else: no change)."""
    from wikipulse.stores.cassandra import driver
    from wikipulse.stores.cassandra.window_cql import HEAD_COLUMNS

    adds = [
        f"ALTER TABLE {keyspace}.ingesters ADD {column} {kind} STATIC"
        for column, kind in LEASE_COLUMNS.items()
    ]
    # The heads of the window buckets (`window_head.py`), likewise added to an older table.
    adds += [f"ALTER TABLE {keyspace}.window_versions ADD {c} blob" for c in HEAD_COLUMNS]
    for add in adds:
        with contextlib.suppress(Exception):  # already there: nothing to do
            await driver.ddl(session, add)


def _ttl(seconds: float) -> int:
    # TTLs count whole seconds from the second the write lands in: `ceil(seconds)` alone can
    # expire up to a second early. One more second errs the other way, which is the safe
    # one: the holder's own deadline (exact, monotonic) stops its commits first.
    return math.ceil(seconds) + 1


class CassandraLease:
    """The `Lease` port on the store's session; `execute(name, cql, params, serial)` runs one."""

    def __init__(self, execute: Execute, ingester_id: str) -> None:
        self._execute = execute
        self._partition = ingester_id

    async def _read(self) -> tuple[str | None, int | None]:
        rows = await self._execute("lease_read", _STATEMENTS["lease_read"], [self._partition], True)
        if not rows:
            return None, None
        return rows[0].get("lease_holder"), rows[0].get("lease_token")

    async def acquire(self, holder: str, seconds: float) -> int | None:
        """Take the lease if nobody holds it (expired by TTL); the new token, else None."""
        current, token = await self._read()
        if current is not None:
            return None
        grown = (token or 0) + 1
        params = [_ttl(seconds), holder, self._partition, token, grown, self._partition]
        rows = await self._execute("lease_take", _STATEMENTS["lease_take"], params, False)
        return grown if rows and rows[0].get("[applied]") else None

    async def renew(self, holder: str, token: int, seconds: float) -> bool:
        """Rewrite the holder with a fresh TTL if it is still this holder with this token."""
        params = [_ttl(seconds), holder, self._partition, holder, token]
        rows = await self._execute("lease_renew", _STATEMENTS["lease_renew"], params, False)
        return bool(rows and rows[0].get("[applied]"))

    async def release(self, holder: str, token: int) -> None:
        """Remove the holder now if it is still this one, so a standby takes over at once."""
        params = [self._partition, holder, token]
        await self._execute("lease_release", _STATEMENTS["lease_release"], params, False)

    async def info(self) -> LeaseInfo:
        """The live holder (None when its TTL ran out) and the newest token."""
        holder, token = await self._read()
        return LeaseInfo(holder, token or 0)
