"""Back-off between retries, and a log that says one thing at most once per interval."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

__all__ = ["Backoff", "RateLimitedLog"]


class Backoff:
    """Exponential back-off with full jitter: each delay uniform in [0, ceiling].

    The ceiling doubles with each failure in a row, from `initial` up to `maximum`; `reset`
    after a success starts again from `initial`. Full jitter spreads the retries of many
    clients that failed together (AWS Architecture Blog, "Exponential Backoff and Jitter").
    """

    __slots__ = ("_initial", "_maximum", "_rng", "failures")

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        if initial < 0 or maximum < initial:
            raise ValueError("back-off needs 0 <= initial <= maximum")
        self._initial = initial
        self._maximum = maximum
        self._rng = rng or random.Random()  # noqa: S311 -- jitter, not a secret
        self.failures = 0

    def ceiling(self, failures: int) -> float:
        """The largest delay after `failures` failures in a row."""
        return float(min(self._maximum, self._initial * 2.0 ** min(max(failures - 1, 0), 60)))

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before the next try."""
        self.failures += 1
        return self._rng.uniform(0, self.ceiling(self.failures))

    def reset(self) -> None:
        """A try succeeded: the next failure starts from the initial delay."""
        self.failures = 0


class RateLimitedLog:
    """Log at most one message per interval and say how many were held back."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        held_note: str = " (%d similar messages suppressed)",
    ) -> None:
        self._log = logger
        self._held_note = held_note
        self._interval = interval
        self._clock = clock
        self._next = 0.0
        self._held = 0

    def warning(self, msg: str, *args: object) -> None:
        """Log a warning unless one was logged less than an interval ago."""
        now = self._clock()
        if now < self._next:
            self._held += 1
            return
        if self._held:
            msg += self._held_note
            args = (*args, self._held)
        self._log.warning(msg, *args)
        self._held = 0
        self._next = now + self._interval
