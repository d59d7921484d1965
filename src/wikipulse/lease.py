"""The writer's lease: one ingester of a stream commits, fenced by a token that grows.

Several `wikipulse ingest` processes of one stream elect their writer through the store
itself. The lease is a record in the store (a row in SQLite and PostgreSQL, static columns
of the ingester's partition in Cassandra) holding the holder's id, an expiry and a *fencing
token*, a number that grows by one with every new holder. The holder renews it well before
it expires; a standby polls and takes it once it has expired.

The token alone makes failover safe: every commit of a holder carries its `Fence` and the
store checks it *in the commit's own transaction* (or conditional batch), so a holder that
lost the lease -- paused by SIGSTOP, cut off from the network, stalled in a long GC -- has
its next commit refused and nothing of it lands. The holder also fails closed on its own
clock: once its lease may have expired (`Fence.deadline`, measured from *before* the last
successful renewal was sent) it refuses to commit without asking the store.

A store without a lease (the memory store: one process, nobody to share with) is given a
`LocalLease`, which is trivially always held.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from wikipulse.stores import StatsStore, StoreError

__all__ = [
    "Fence",
    "FencedStore",
    "Lease",
    "LeaseInfo",
    "LeaseLost",
    "LocalLease",
    "check_fence",
    "judge",
]


class LeaseLost(StoreError):
    """A commit was refused because this process no longer holds the writer's lease."""


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """Who holds the lease as the store sees it now: None when nobody (or it expired)."""

    holder: str | None
    #: The token of the newest holder (0 if there never was one).
    token: int


@dataclass(frozen=True, slots=True)
class Fence:
    """What a holder's commits carry: its id, its token, and when its lease may expire.

    `deadline` is on `time.monotonic()`; after it the store refuses to commit without even
    asking the backend (the backend's own check refuses it too once the lease is taken).
    """

    holder: str
    token: int
    deadline: float


def check_fence(fence: Fence | None) -> None:
    """Refuse a commit locally if its lease may have expired (fail closed)."""
    if fence is not None and time.monotonic() >= fence.deadline:
        raise LeaseLost(
            f"the writer's lease (token {fence.token}) may have expired before this commit; "
            "not committing"
        )


def judge(fence: Fence | None, holder: str | None, token: int, live: bool) -> None:
    """The SQL stores' verdict on a commit, from the lease row read in its transaction.

    With a fence, the row must name its holder and token and be live (not expired); without
    one (`serve`, a replay), nobody may hold a live lease: a lone writer does not write under
    an ingester fleet. Raises `LeaseLost` when the commit may not write.
    """
    if fence is None:
        if holder is not None and live:
            raise LeaseLost(
                f"ingester {holder!r} holds the writer's lease (token {token}); "
                "this process does not write while it does"
            )
        return
    if holder != fence.holder or token != fence.token or not live:
        raise LeaseLost(
            f"commit refused: the writer's lease is now token {token} held by {holder!r} "
            f"({'live' if live else 'expired'}), this process has token {fence.token}"
        )


class Lease(Protocol):
    """The writer's lease of one stream, kept in the store."""

    async def acquire(self, holder: str, seconds: float) -> int | None:
        """Take the lease if it is free or expired: the new (grown) token, else None."""

    async def renew(self, holder: str, token: int, seconds: float) -> bool:
        """Extend the lease if `holder` still holds it with `token` and it has not expired."""

    async def release(self, holder: str, token: int) -> None:
        """Let the lease expire now, if still held, so that a standby takes over at once."""

    async def info(self) -> LeaseInfo:
        """The current holder (None if free or expired) and the newest token."""


@runtime_checkable
class FencedStore(StatsStore, Protocol):
    """A store that keeps the lease and checks every commit against a `Fence`."""

    def lease(self) -> Lease:
        """The lease kept in this store's backend (uses this store's connections)."""
        ...

    def set_fence(self, fence: Fence | None) -> None:
        """Check every later commit against `fence` (None: refuse while anyone holds it)."""
        ...


class LocalLease:
    """The lease of a store only this process uses: always held, by whoever asks."""

    def __init__(self) -> None:
        self._holder: str | None = None
        self._token = 0

    async def acquire(self, holder: str, seconds: float) -> int | None:
        """Always granted, with a new token."""
        self._holder = holder
        self._token += 1
        return self._token

    async def renew(self, holder: str, token: int, seconds: float) -> bool:
        """Always held by the last one that acquired it."""
        return holder == self._holder and token == self._token

    async def release(self, holder: str, token: int) -> None:
        """Forget the holder."""
        if holder == self._holder and token == self._token:
            self._holder = None

    async def info(self) -> LeaseInfo:
        """The last one that acquired it."""
        return LeaseInfo(self._holder, self._token)
