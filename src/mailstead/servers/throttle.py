"""A token bucket: how long a session must wait before its next command.

Sans-clock: the caller passes ``now`` (the event loop's monotonic time), so the arithmetic is
unit-tested without sleeping.
"""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; one token per command."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._tokens = self.burst
        self._last = now

    def take(self, now: float) -> float:
        """Takes one token; returns 0.0, or the seconds to wait before the command may run
        (the token is taken all the same, so waits queue up fairly)."""
        if self.rate <= 0:
            return 0.0  # no cap configured
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate) - 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate
