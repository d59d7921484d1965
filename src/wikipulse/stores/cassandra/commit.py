"""One commit's conditional batch: the partition it leads to, its statement and its values; pure.

The batch is one statement of `schema.statement` named by its *shape*: `state` (the totals, the
position and `IF seq = ?`), then `+recent` (the event ids' slot, `+clear*N` slots cleared), then
`+win` (the window versions' newest minute, `+stale*N` sealed hours it makes stale), then
`@solo` or `@fenced` (the lease checked in the same Paxos round). The values follow that order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cassandra.query import UNSET_VALUE

from wikipulse.lease import Fence
from wikipulse.stats import Batch
from wikipulse.stores.cassandra.lease import lease_condition
from wikipulse.stores.cassandra.partition import Partition
from wikipulse.stores.cassandra.recent import RecentSlots, SlotState
from wikipulse.stores.cassandra.window_seal import stale_name
from wikipulse.stores.cassandra.windows import Staged

__all__ = ["CommitBatch", "commit_batch"]

#: How long past the window retention a stale mark outlives every hour row it judges.
_STALE_MARGIN = 2 * 3600


@dataclass(frozen=True, slots=True)
class CommitBatch:
    """What to execute, and what to keep once it applied."""

    after: Partition  # the ingester's partition once the batch applied
    shape: str  # the statement's name
    params: list[Any]
    slots: SlotState  # the recent-id slots to keep (`RecentSlots.commit`)


def commit_batch(
    me: str,
    state: Partition,
    batch: Batch,
    new_users: int,
    epoch: str,
    recent: RecentSlots,
    staged: Staged | None,
    retention: int,
    fence: Fence | None,
) -> CommitBatch:
    """The batch committing `batch` on top of `state` as the next `seq`, in epoch `epoch`."""
    seq = (state.seq or 0) + 1
    servers = {
        name: state.servers.get(name, 0) + count
        for name, count in sorted(batch.by_server_name.items())
    }
    position = batch.position if batch.position is not None else state.position
    after = Partition(
        seq=seq,
        token=batch.token,
        total=state.total + batch.total,
        bots=state.bots + batch.bots,
        users=state.users + new_users,
        position=position,
        servers=state.servers | servers,
        epochs=state.epochs,
    )
    params: list[Any] = [
        seq,
        batch.token,
        after.total,
        after.bots,
        after.users,
        UNSET_VALUE if position is None else position,
        servers,
        me,
        state.seq,
        me,
        epoch,
        seq,
    ]
    slots = recent.state
    shape = "state"
    if batch.event_ids and batch.position is not None:
        # The window protects a resume from the position; a batch without one (an NDJSON
        # replay) cannot be resumed from, so its ids are not kept (as in the SQL stores). In a
        # replay they were most of what went through Paxos: ~2 MB of ids a 60,000-event batch.
        ids, cleared, slots = recent.stage(me, seq, batch.event_ids)
        params += ids
        shape = f"state+recent+clear*{cleared}" if cleared else "state+recent"
    if staged is not None:
        shape += "+win"
        params += [me, staged.newest]
        if staged.stale:
            # Hour rows sealed before this commit no longer sum these hours' minutes.
            shape += f"+stale*{len(staged.stale)}"
            ttl = retention + _STALE_MARGIN
            for g, bucket in staged.stale:
                params += [me, stale_name(g, bucket), seq, ttl]
    # The lease is checked in the same Paxos round: right after `IF seq = ?`.
    params[9:9], check = lease_condition(fence)
    return CommitBatch(after, f"{shape}@{check}", params, slots)
