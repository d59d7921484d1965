"""`wikipulse ingest`: several consumers of one stream, one writer, elected by the store's lease.

Each ingester runs an `Elector`. A standby polls the lease (`lease.py`) every poll interval
(a batch interval, at most a quarter of the lease). Once it wins the lease it starts a *term*:
it opens the store afresh -- so it resumes from the position and dedup window the last holder
committed, not from anything it remembered -- fences the store with its token, and consumes.
The holder renews the lease every third of `WIKIPULSE_LEASE_SECONDS`. If a renewal fails, or
the lease may have expired before one succeeded, the term ends at once: the fence is revoked
first (commits are refused from then on, without asking the store), the consumer is cancelled
and its uncommitted batch dropped (the next holder reads those events again), and the process
goes back to standby. A commit refused by the store (`LeaseLost`: someone else holds a newer
token) ends the term the same way.

On a graceful stop the holder commits its last batch, then releases the lease, so a standby
takes over without waiting for the lease to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from wikipulse.bootstrap import EventSource, make_pipeline, source_feed
from wikipulse.consumer import ConsumerState
from wikipulse.ingest import CommitObserver
from wikipulse.lease import Fence, FencedStore, Lease, LeaseLost, LocalLease
from wikipulse.metrics import SampledCollector
from wikipulse.stores import StatsStore

if TYPE_CHECKING:
    from wikipulse.config import Settings

__all__ = ["Elector", "LeaseCollector", "holder_id"]

log = logging.getLogger(__name__)

#: How long a stopping holder waits for its last batch to be committed.
STOP_GRACE_SECONDS = 10.0


def holder_id() -> str:
    """This process's name in the lease: host, pid and a random part (pids get reused)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Elector:
    """Stand by, win the lease, consume while holding it; fail closed when it may be lost."""

    def __init__(
        self,
        settings: Settings,
        state: ConsumerState,
        make_store: Callable[[], StatsStore],
        make_source: Callable[[ConsumerState], EventSource],
        observer: CommitObserver | None = None,
        me: str | None = None,
    ) -> None:
        self._settings = settings
        self._state = state
        self._make_store = make_store
        self._make_source = make_source
        self._observer = observer
        self.me = me or holder_id()
        self.lease_seconds = settings.lease_seconds
        self.poll_seconds = min(settings.lease_seconds / 4, max(0.05, settings.batch_max_ms / 1000))
        self.renew_seconds = settings.lease_seconds / 3
        #: What /status shows: whether this process holds it, who does, with which token.
        self.held = False
        self.holder: str | None = None
        self.token = 0
        self.terms = 0
        self.refused_commits = 0
        self.acquired_at: float | None = None
        self.first_commit_at: float | None = None
        #: Commits that succeeded (all terms), and when the last one was sent.
        self.commits = 0
        self.last_commit_started_at: float | None = None
        self._release = False
        self._asked = time.monotonic()

    def status(self) -> dict[str, object]:
        """The lease part of `/status`."""
        return {
            "holder_id": self.me,
            "held": self.held,
            "holder": self.holder,
            "token": self.token,
            "terms": self.terms,
            "refused_commits": self.refused_commits,
            "acquired_at": self.acquired_at,
            "first_commit_at": self.first_commit_at,
            "commits": self.commits,
            "last_commit_started_at": self.last_commit_started_at,
            "lease_seconds": self.lease_seconds,
        }

    async def run(self, store: StatsStore) -> None:
        """Stand by and hold terms until cancelled; `store` (open) keeps the lease."""
        try:
            if not isinstance(store, FencedStore):
                # One process only (the memory store): the lease is trivially held.
                await self._hold(LocalLease(), store, reuse=True)
                return
            lease = store.lease()
            while True:
                token = await self._poll(lease)
                if token is None:
                    await asyncio.sleep(self.poll_seconds)
                    continue
                await self._hold(lease, None, reuse=False, token=token)
                # Step down for a lease period: the standbys (which may have waited on a lock
                # this process held while it was paused) get the first chance to take over.
                await asyncio.sleep(self.lease_seconds)
        finally:
            self.held = False

    async def _poll(self, lease: Lease) -> int | None:
        """Try to take the lease; on failure note who holds it. A store error is a no."""
        state = self._state
        self._asked = time.monotonic()  # the lease runs from (at the latest) the request
        try:
            token = await lease.acquire(self.me, self.lease_seconds)
            if token is None:
                info = await lease.info()
                self.holder, self.token = info.holder, info.token
        except Exception as exc:
            state.store_ok, state.store_error = False, f"lease: {exc}"
            return None
        # A standby that reached the store is healthy, whatever failed before.
        state.store_ok, state.store_error = True, None
        return token

    async def _hold(
        self, lease: Lease, store: StatsStore | None, *, reuse: bool, token: int | None = None
    ) -> None:
        """One term: from winning the lease to losing it (or being cancelled)."""
        started = self._asked
        if token is None:
            started = time.monotonic()
            token = await lease.acquire(self.me, self.lease_seconds)
            if token is None:
                raise RuntimeError("a local lease was refused")
        fence = Fence(self.me, token, started + self.lease_seconds)
        self.held, self.holder, self.token = True, self.me, token
        self.terms += 1
        self.acquired_at, self.first_commit_at = time.time(), None
        log.info("%s holds the writer's lease with token %d", self.me, token)
        term_store = store if store is not None else self._make_store()
        consumer: asyncio.Task[None] | None = None
        try:
            if not reuse:
                await term_store.open()
            if isinstance(term_store, FencedStore):
                term_store.set_fence(fence)
            pipeline = make_pipeline(
                self._settings, term_store, self._state, _FirstCommit(self, self._observer)
            )
            position = await pipeline.resume()
            source = self._make_source(self._state)
            consumer = asyncio.create_task(
                pipeline.run(source_feed(source, position)), name="wikipulse-consumer"
            )
            self._release = False
            await self._renew_until_lost(lease, term_store, fence, consumer)
            if self._release:
                with contextlib.suppress(Exception):
                    await lease.release(self.me, token)
        except asyncio.CancelledError:
            if consumer is not None:
                await self._stop_gracefully(consumer)
                with contextlib.suppress(Exception):
                    await lease.release(self.me, token)
            raise
        except Exception as exc:  # the store failed to open or resume: let another try
            log.error("the term failed: %s: %s", type(exc).__name__, exc)
            self._state.store_ok, self._state.store_error = False, f"store: {exc}"
            with contextlib.suppress(Exception):
                await lease.release(self.me, token)
        finally:
            # Fail closed first: whatever happens next commits nothing under this token.
            if isinstance(term_store, FencedStore):
                term_store.set_fence(Fence(self.me, token, float("-inf")))
            if consumer is not None:
                if not consumer.done():
                    consumer.cancel()
                    await asyncio.wait({consumer})
                if not consumer.cancelled():
                    consumer.exception()  # seen (and logged) already, or a refused last flush
            self.held = False
            if not reuse:
                await term_store.close()
        log.warning("%s lost the writer's lease (token %d); standing by", self.me, token)

    async def _renew_until_lost(
        self, lease: Lease, store: StatsStore, fence: Fence, consumer: asyncio.Task[None]
    ) -> None:
        """Renew every third of the lease while the consumer runs; return once it is lost."""
        while True:
            done, _ = await asyncio.wait({consumer}, timeout=self.renew_seconds)
            if done:
                self._consumer_ended(consumer)
                return
            sent = time.monotonic()
            remaining = fence.deadline - sent
            try:
                renewed = remaining > 0 and await asyncio.wait_for(
                    lease.renew(self.me, fence.token, self.lease_seconds), remaining
                )
            except Exception as exc:  # an outage: try again until the deadline passes
                log.warning("renewing the writer's lease failed: %s", exc)
                if time.monotonic() < fence.deadline:
                    continue
                renewed = False
            if not renewed:
                return
            fence = Fence(self.me, fence.token, sent + self.lease_seconds)
            if isinstance(store, FencedStore):
                store.set_fence(fence)

    def _consumer_ended(self, consumer: asyncio.Task[None]) -> None:
        exc = None if consumer.cancelled() else consumer.exception()
        if isinstance(exc, LeaseLost):
            self.refused_commits += 1
            log.warning("a commit was refused: %s", exc)
            return
        self._release = True  # a standby may do better: do not make it wait for the expiry
        if exc is not None:
            log.error("the stream consumer stopped: %s: %s", type(exc).__name__, exc)
            self._state.stopped_error = f"consumer stopped: {type(exc).__name__}: {exc}"
        else:
            log.info("the event source ended")

    async def _stop_gracefully(self, consumer: asyncio.Task[None]) -> None:
        """Cancel the consumer; its pipeline commits the last batch while the fence holds."""
        consumer.cancel()
        await asyncio.wait({consumer}, timeout=STOP_GRACE_SECONDS)


class _FirstCommit:
    """Tells the elector when its term's first commit landed (the take-over time)."""

    def __init__(self, elector: Elector, inner: CommitObserver | None) -> None:
        self._elector = elector
        self._inner = inner

    def commit_succeeded(self, seconds: float) -> None:
        """Note the first commit of the term, then pass it on."""
        elector, now = self._elector, time.time()
        if elector.first_commit_at is None:
            elector.first_commit_at = now
        elector.commits += 1
        elector.last_commit_started_at = now - seconds
        if self._inner is not None:
            self._inner.commit_succeeded(seconds)

    def commit_failed(self, seconds: float) -> None:
        """Pass it on."""
        if self._inner is not None:
            self._inner.commit_failed(seconds)


class LeaseCollector(SampledCollector):
    """Prometheus figures of the lease: held (1/0), the token known, terms, refused commits."""

    def __init__(self, elector: Elector) -> None:
        self._elector = elector

    def _metrics(self, *, sample: bool) -> Iterator[Metric]:
        e = self._elector
        yield GaugeMetricFamily(
            "wikipulse_lease_held",
            "1 while this ingester holds the writer's lease (and may commit), else 0.",
            value=float(e.held) if sample else None,
        )
        yield GaugeMetricFamily(
            "wikipulse_lease_token",
            "The newest fencing token this ingester knows of (grows with each new holder).",
            value=float(e.token) if sample else None,
        )
        yield CounterMetricFamily(
            "wikipulse_lease_terms",
            "Times this ingester won the writer's lease.",
            value=float(e.terms) if sample else None,
        )
        yield CounterMetricFamily(
            "wikipulse_lease_refused_commits",
            "Commits the store refused because this ingester's lease token was stale.",
            value=float(e.refused_commits) if sample else None,
        )
