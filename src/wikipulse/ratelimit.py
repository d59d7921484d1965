"""Login throttling: token buckets per client address and per user name, and the client address.

A bucket holds up to `burst` tokens and gains one every `interval` seconds; an attempt takes
one. An attempt is let through only when both its address's and its user name's buckets have
a token, and then takes one from each, so a request refused for one reason does not drain the
other bucket. The clock is injected so the tests never sleep.

The buckets live in memory, per process; the number remembered is bounded (the least recently
used go first), so a flood of made-up names or addresses cannot grow it without end.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wikipulse.retry import RateLimitedLog

if TYPE_CHECKING:
    from wikipulse.config import Settings

__all__ = ["LoginGuard", "TokenBuckets", "client_address"]

log = logging.getLogger(__name__)

#: How many addresses (and, separately, user names) are remembered at most.
DEFAULT_MAX_KEYS = 50_000
#: At most one "rate limited" log line per this many seconds; the others are counted.
_REFUSAL_LOG_INTERVAL = 10.0


class TokenBuckets:
    """One token bucket per key, all with the same burst and refill interval."""

    def __init__(
        self,
        burst: int,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if burst < 1 or interval <= 0:
            raise ValueError("burst must be at least 1 and interval positive")
        self.burst = burst
        self.interval = interval
        self._clock = clock
        self._max_keys = max_keys
        # key -> (tokens, time of that count); most recently used last.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens(self, key: str, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return float(self.burst)
        tokens, at = entry
        return min(float(self.burst), tokens + max(now - at, 0.0) / self.interval)

    def wait(self, key: str) -> float:
        """Seconds until `key` has a token: 0 if it has one now."""
        tokens = self._tokens(key, self._clock())
        return 0.0 if tokens >= 1 else (1 - tokens) * self.interval

    def take(self, key: str) -> None:
        """Take one token from `key`'s bucket (call after `wait` said 0)."""
        now = self._clock()
        tokens = self._tokens(key, now)
        self._buckets[key] = (max(tokens - 1, 0.0), now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an attempt was refused and how many seconds to wait (for `Retry-After`)."""

    reason: str
    retry_after: int


class LoginGuard:
    """Per-address and per-user rate limits of login attempts."""

    def __init__(
        self,
        *,
        burst: int = 5,
        interval: float = 5.0,
        trusted_proxies: Collection[str] = (),
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        self.by_address = TokenBuckets(burst, interval, clock=clock, max_keys=max_keys)
        self.by_user = TokenBuckets(burst, interval, clock=clock, max_keys=max_keys)
        self.trusted_proxies = frozenset(trusted_proxies)
        self._refusals = RateLimitedLog(
            log,
            _REFUSAL_LOG_INTERVAL,
            clock,
            held_note=" (%d more logins refused since the last such line)",
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginGuard:
        """The guard configured by WIKIPULSE_LOGIN_* and WIKIPULSE_TRUSTED_PROXIES."""
        return cls(
            burst=settings.login_burst,
            interval=settings.login_interval_seconds,
            trusted_proxies=settings.trusted_proxies,
        )

    def attempt(self, address: str, username: str) -> Refusal | None:
        """Take a token for the address and the user, or say why not and for how long."""
        by_address = self.by_address.wait(address)
        by_user = self.by_user.wait(username)
        if by_address or by_user:
            reason = "client address" if by_address >= by_user else "user name"
            refusal = Refusal(reason, max(1, math.ceil(max(by_address, by_user))))
            self._refusals.warning(
                "login rate limit reached (%s) for user %r from %s; retry after %ds",
                refusal.reason,
                username,
                address,
                refusal.retry_after,
            )
            return refusal
        self.by_address.take(address)
        self.by_user.take(username)
        return None

    def busy(self, address: str, username: str) -> None:
        """Log (at most once per interval) a login refused because the check queue is full."""
        self._refusals.warning(
            "login of user %r from %s refused: too many password checks at once",
            username,
            address,
        )


def client_address(
    peer: str | None, headers: Mapping[str, str], trusted_proxies: Collection[str]
) -> str:
    """The client's address: the peer's, or from X-Forwarded-For when the peer is trusted.

    The header is read from the right, skipping trusted proxies; the first other address is
    the client as the nearest trusted proxy saw it. Anything the client itself wrote to the
    left of that is not believed. A malformed entry stops the walk at the proxy before it.
    """
    address = peer or "unknown"
    if address not in trusted_proxies:
        return address
    forwarded = headers.get("x-forwarded-for")
    if not forwarded:
        return address
    for entry in reversed(forwarded.split(",")):
        candidate = entry.strip()
        try:
            ipaddress.ip_address(candidate)
        except ValueError:
            return address
        address = candidate
        if candidate not in trusted_proxies:
            return candidate
    return address
