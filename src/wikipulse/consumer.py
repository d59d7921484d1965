"""What the stream consumer is doing: the state its parts share and `/status` shows."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from wikipulse.events import parse_dt
from wikipulse.stats import Counters

__all__ = ["ConsumerState"]


@dataclass(slots=True)
class ConsumerState:
    """The consumer's state, written by the source, the pipeline and the runner, read by all.

    Each part reports its trouble in a field of its own, so that a reconnect (which clears the
    source's error) does not hide that the store is failing, or that the consumer stopped.
    """

    connected: bool = False
    reconnects: int = 0
    last_event_at: float | None = None  # wall-clock time of the last event received
    forbidden: bool = False  # the server refused our User-Agent (HTTP 403)
    store_ok: bool = True
    oversized_events: int = 0  # connections dropped for a line or event over the size limit
    redirects_refused: int = 0  # redirects to another scheme or host, not followed
    #: Why the last connection to the stream failed; cleared when a connection succeeds.
    source_error: str | None = None
    #: Why the last commit failed; cleared by the next successful commit.
    store_error: str | None = None
    #: Why the consumer stopped for good, if it did.
    stopped_error: str | None = None
    counters: Counters = field(default_factory=Counters)

    @property
    def last_error(self) -> str | None:
        """The most serious current trouble: a stopped consumer, then the store, then the source."""
        return self.stopped_error or self.store_error or self.source_error

    def lag_seconds(self, now: float) -> float | None:
        """Seconds from the last counted event's `meta.dt` to `now`; None if not known.

        Negative when the local clock is behind the stream's: shown as is, not hidden.
        """
        event_time = parse_dt(self.counters.last_dt)
        return None if event_time is None else now - event_time

    def as_dict(self, now: float | None = None) -> dict[str, object]:
        """The consumer part of the `/status` body."""
        c = self.counters
        lag = self.lag_seconds(time.time() if now is None else now)
        return {
            "connected": self.connected,
            "events_consumed": c.counted,
            "duplicates": c.duplicates,
            "invalid": c.invalid,
            "canaries_dropped": c.canaries,
            "reconnects": self.reconnects,
            "last_event_at": _iso(self.last_event_at),
            "last_event_dt": c.last_dt,
            "lag_seconds": None if lag is None else round(lag, 3),
            "last_error": self.last_error,
            "user_agent_refused": self.forbidden,
            "store_ok": self.store_ok,
            "oversized_events": self.oversized_events,
            "redirects_refused": self.redirects_refused,
        }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
