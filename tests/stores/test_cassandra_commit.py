"""One commit's conditional batch: its statement fits its values, and the partition it leads to."""

from __future__ import annotations

import pytest
from cassandra.query import UNSET_VALUE

from wikipulse.lease import Fence
from wikipulse.stats import Batch
from wikipulse.stores.cassandra.commit import commit_batch
from wikipulse.stores.cassandra.partition import Partition
from wikipulse.stores.cassandra.recent import RecentSlots
from wikipulse.stores.cassandra.schema import statement
from wikipulse.stores.cassandra.window_seal import stale_name
from wikipulse.stores.cassandra.windows import Staged

_STATE = Partition(
    seq=4,
    token="t4",
    total=100,
    bots=10,
    users=30,
    position="p4",
    servers={"a.org": 60, "b.org": 40},
    epochs={"e1": 4},
)


def _batch(ids: int, position: str | None = "p5") -> Batch:
    batch = Batch(total=7, bots=2, by_server_name={"b.org": 3, "c.org": 4}, position=position)
    batch.event_ids = [f"id{i}" for i in range(ids)]
    return batch


def _staged(stale: list[tuple[int, int]]) -> Staged:
    return Staged(buckets={}, newest=1_700_000_040, stale=stale, closing=[])


@pytest.mark.parametrize(
    ("ids", "staged", "fence", "shape"),
    [
        (0, None, None, "state@solo"),
        (3, None, None, "state+recent@solo"),
        (3, _staged([]), Fence("me-host", 9, 0.0), "state+recent+win@fenced"),
        (3, _staged([(3600, 1_699_999_200), (300, 1_700_000_000)]), None,
         "state+recent+win+stale*2@solo"),
        (0, _staged([(3600, 1_699_999_200)]), Fence("h", 1, 0.0), "state+win+stale*1@fenced"),
    ],
)  # fmt: skip
def test_the_statement_of_each_shape_takes_exactly_its_values(
    ids: int, staged: Staged | None, fence: Fence | None, shape: str
) -> None:
    out = commit_batch("me", _STATE, _batch(ids), 5, "e2", RecentSlots(630), staged, 3600, fence)
    assert out.shape == shape
    assert statement(out.shape).count("?") == len(out.params)
    # the totals first, then the condition: `IF seq = ?` on the seq read, then the lease's
    assert out.params[:5] == [5, out.after.token, 107, 12, 35]
    assert out.params[8] == 4
    lease = [fence.holder, fence.token] if fence else [None]
    assert out.params[9 : 9 + len(lease)] == lease


def test_the_partition_after_it_sums_the_batch_into_the_state() -> None:
    out = commit_batch("me", _STATE, _batch(2), 3, "e2", RecentSlots(630), None, 3600, None)
    after = out.after
    assert (after.seq, after.total, after.bots, after.users) == (5, 107, 12, 33)
    assert after.servers == {"a.org": 60, "b.org": 43, "c.org": 4}
    assert after.position == "p5"
    assert out.params[6] == {"b.org": 43, "c.org": 4}  # only the wikis the batch touched
    assert out.slots.ids == ["id0", "id1"]


def test_a_batch_without_a_position_keeps_the_stored_one_and_binds_nothing_new() -> None:
    out = commit_batch("me", _STATE, _batch(0, None), 0, "e2", RecentSlots(630), None, 3600, None)
    assert out.after.position == "p4"
    assert out.params[5] == "p4"
    first = Partition()
    out = commit_batch("me", first, _batch(0, None), 0, "e", RecentSlots(630), None, 3600, None)
    assert out.params[5] is UNSET_VALUE  # no null cell (a tombstone) for a missing position
    assert out.params[0] == 1
    assert out.params[8] is None  # no commit before: `IF seq = null`


def test_a_stale_mark_names_its_bucket_and_outlives_the_rows_it_judges() -> None:
    staged = _staged([(3600, 1_699_999_200)])
    out = commit_batch("me", _STATE, _batch(0), 0, "e2", RecentSlots(630), staged, 3600, None)
    assert out.params[-6:-4] == ["me", 1_700_000_040]  # the newest minute, then the mark
    assert out.params[-4:] == ["me", stale_name(3600, 1_699_999_200), 5, 3600 + 2 * 3600]


def test_a_batch_without_a_position_keeps_no_ids() -> None:
    """A replay's batch (NDJSON, no stream position) cannot be resumed from: no slot written."""
    recent = RecentSlots(630)
    out = commit_batch("me", _STATE, _batch(50, None), 0, "e2", recent, None, 3600, None)
    assert out.shape == "state@solo"
    assert out.slots is recent.state
