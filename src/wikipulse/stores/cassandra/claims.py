"""Exact distinct users across ingesters: one claim row per user, taken by lightweight transaction.

A claim names the (ingester, epoch, seq) of the commit that counts the user. An epoch is one run
of a process (renewed when a batch is abandoned); the ingester's partition records, per epoch,
the last seq committed in it, so a claim of this ingester whose seq never committed in its epoch
is an *orphan* -- claimed, then the process died or gave the batch up -- and is taken over.
"""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from wikipulse.stores.cassandra.schema import CLAIMS_PER_BATCH, USER_SHARDS, shard_of

__all__ = ["Claims", "Runner", "Verdict"]


class Runner(Protocol):
    """What claims run their statements with (the store's `statements.Cql`)."""

    async def execute(self, name: str, params: Sequence[Any], /) -> list[dict[str, Any]]:
        """Run a prepared statement by name with its values."""

    async def execute_rows(
        self, name: str, rows: Sequence[Sequence[Any]], /
    ) -> list[dict[str, Any]]:
        """Run a prepared single-row statement over many rows of one partition, as one batch."""


_IN_FLIGHT = USER_SHARDS  # claim batches in flight at once (every shard), bounding the load
_REMEMBERED = 200_000  # users known to be counted, skipped without a round trip


class Verdict(enum.Enum):
    """Whose an existing claim is, and so whether the batch in hand counts the user."""

    MINE = "mine"  # this very attempt's claim: count it
    COUNTED = "counted"  # a committed batch, or another ingester, counts it
    ORPHAN = "orphan"  # ours, from a batch that never committed: take it over and count it


class Claims:
    """Claim a batch's users for one ingester and say how many of them are new."""

    def __init__(self, ingester_id: str, remembered: int = _REMEMBERED) -> None:
        self.me = ingester_id
        self.epoch = ""
        #: epoch -> last seq committed in it, as this process knows it.
        self.epochs: dict[str, int] = {}
        self._known: OrderedDict[str, None] = OrderedDict()
        self._remembered = remembered
        self.new_epoch()

    def new_epoch(self) -> None:
        """Start a new epoch: claims made under the old one and not committed become orphans."""
        self.epoch = uuid.uuid4().hex

    def classify(self, claim: Mapping[str, Any], seq: int) -> Verdict:
        """Whose is an existing claim: this attempt's, a committed one, or our orphan."""
        if claim["ingester_id"] != self.me:
            return Verdict.COUNTED  # the other ingester counts it, now or when it replays
        if claim["epoch"] == self.epoch and claim["seq"] == seq:
            return Verdict.MINE
        done = self.epochs.get(claim["epoch"])
        return Verdict.COUNTED if done is not None and claim["seq"] <= done else Verdict.ORPHAN

    def committed(self, seq: int, names: Iterable[str]) -> None:
        """Record that `seq` committed in this epoch, counting (or having counted) `names`."""
        self.epochs[self.epoch] = seq
        known = self._known
        for name in names:
            known[name] = None
            known.move_to_end(name)
        while len(known) > self._remembered:
            known.popitem(last=False)

    async def claim(
        self,
        names: Iterable[str],
        seq: int,
        cql: Runner,
        refresh: Callable[[], Awaitable[dict[str, int]]],
    ) -> int:
        """Claim the users no commit has counted yet; return how many this batch counts.

        `refresh` reads the committed epochs again: an epoch this process does not know may
        belong to another process of the same ingester that committed since it loaded them.
        """
        rereads: dict[str, asyncio.Task[None]] = {}  # one read per unknown epoch met

        async def reread() -> None:
            self.epochs.update(await refresh())

        async def verdict(row: Mapping[str, Any]) -> Verdict:
            found = self.classify(row, seq)
            epoch = row["epoch"]
            if found is Verdict.ORPHAN and epoch not in self.epochs:
                if epoch not in rereads:
                    rereads[epoch] = asyncio.ensure_future(reread())
                await rereads[epoch]
                found = self.classify(row, seq)
            return found

        async def shard(number: int, todo: list[str]) -> int:
            counted = 0
            for start in range(0, len(todo), CLAIMS_PER_BATCH):
                group = todo[start : start + CLAIMS_PER_BATCH]
                counted += await self._claim_group(number, group, seq, cql, verdict)
            return counted

        shards: dict[int, list[str]] = {}
        for name in sorted(set(names)):
            if name not in self._known:
                shards.setdefault(shard_of(name), []).append(name)
        limit = asyncio.Semaphore(_IN_FLIGHT)

        async def limited(number: int, todo: list[str]) -> int:
            async with limit:
                return await shard(number, todo)

        return sum(await asyncio.gather(*(limited(n, t) for n, t in shards.items())))

    async def _claim_group(
        self,
        shard: int,
        names: list[str],
        seq: int,
        cql: Runner,
        verdict: Callable[[Mapping[str, Any]], Awaitable[Verdict]],
    ) -> int:
        """Claim some users of one shard by conditional batches; return how many count here."""
        me, epoch = self.me, self.epoch
        counted = 0
        # No read first: most users of a batch are new, and a batch that does not apply
        # writes nothing -- then one SERIAL read says which claims exist and whose they are.
        insert: list[str] = names
        reclaim: list[Mapping[str, Any]] = []
        while insert or reclaim:
            left: list[str] = []
            if insert:
                rows = [(shard, n, me, epoch, seq) for n in insert]
                if (await cql.execute_rows("claim", rows))[0]["[applied]"]:
                    counted += len(insert)
                else:
                    left += insert
            if reclaim:
                taken = [
                    [
                        me,
                        epoch,
                        seq,
                        shard,
                        old["name"],
                        old["ingester_id"],
                        old["epoch"],
                        old["seq"],
                    ]
                    for old in reclaim
                ]
                if (await cql.execute_rows("reclaim", taken))[0]["[applied]"]:
                    counted += len(reclaim)
                else:
                    left += [old["name"] for old in reclaim]
            if not left:
                break
            # Someone holds at least one of these names: see whose each claim is.
            claims = {row["name"]: row for row in await cql.execute("claims", [shard, left])}
            insert, reclaim = [], []
            for name in left:
                held = claims.get(name)
                if held is None:
                    insert.append(name)
                    continue
                found = await verdict(held)
                if found is Verdict.MINE:
                    counted += 1
                elif found is Verdict.ORPHAN:
                    reclaim.append(held)
        return counted
