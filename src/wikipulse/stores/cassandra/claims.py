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
from typing import Any

__all__ = ["Claims", "Execute", "Verdict"]

Execute = Callable[[str, Sequence[Any]], Awaitable[list[dict[str, Any]]]]

_IN_FLIGHT = 128  # concurrent claims per batch, to bound the load on the cluster
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
        execute: Execute,
        refresh: Callable[[], Awaitable[dict[str, int]]],
    ) -> int:
        """Claim the users no commit has counted yet; return how many this batch counts.

        `refresh` reads the committed epochs again: an epoch this process does not know may
        belong to another process of the same ingester that committed since it loaded them.
        """
        limit = asyncio.Semaphore(_IN_FLIGHT)
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

        async def one(name: str) -> int:
            async with limit:
                # No read first: a claim that fails returns the row that holds the name.
                row = (await execute("claim", [name, self.me, self.epoch, seq]))[0]
                if row["[applied]"]:
                    return 1
                found = await verdict(row)
                while found is Verdict.ORPHAN:
                    was = [row["ingester_id"], row["epoch"], row["seq"]]
                    row = (await execute("reclaim", [self.me, self.epoch, seq, name, *was]))[0]
                    if row["[applied]"]:
                        return 1
                    found = await verdict(row)
                return int(found is Verdict.MINE)

        todo = sorted(name for name in names if name not in self._known)
        return sum(await asyncio.gather(*(one(name) for name in todo)))
