"""When to try a deferred recipient again, when to give up, and when to warn the sender.

Pure functions of the queue row, the policy and ``now``: no clock, no store, so the timing
rules are unit-tested exactly and shortened in integration tests through the config alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailstead.config.model import QueueConfig
from mailstead.storage.interfaces import QueueEntry


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The ``[queue]`` timing settings: delays after each failure, expiry, delay warning."""

    schedule: tuple[float, ...] = (300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)
    expire_after: float = 5 * 86400.0
    delay_warning: float = 4 * 3600.0  # 0: never warn

    def __post_init__(self) -> None:
        if not self.schedule or any(d <= 0 for d in self.schedule):
            raise ValueError("the retry schedule needs at least one positive delay")
        if self.expire_after <= 0 or self.delay_warning < 0:
            raise ValueError("expire_after must be positive and delay_warning not negative")

    @classmethod
    def from_config(cls, config: QueueConfig) -> RetryPolicy:
        return cls(config.retry_schedule, config.expire_after, config.delay_warning)

    def delay_after(self, failures: int) -> float:
        """The wait after the ``failures``-th failed attempt (1-based); the last delay of the
        schedule repeats (e.g. every 4 h until expiry)."""
        index = min(max(failures, 1), len(self.schedule)) - 1
        return self.schedule[index]

    def expires_at(self, entry: QueueEntry) -> float:
        return entry.created_at + self.expire_after

    def expired(self, entry: QueueEntry, now: float) -> bool:
        """RFC 5321 section 4.5.4.1: the sender gives up after its configured time (4-5 days
        recommended) and returns the message as undeliverable."""
        return now >= self.expires_at(entry)

    def next_attempt(self, entry: QueueEntry, now: float) -> float | None:
        """The time of the next attempt after a temporary failure of the attempt that just
        ended (``entry.attempts`` counts the attempts before it), or None when the recipient
        has expired and must be bounced. The last attempt is placed exactly at the expiry time
        so a recipient gets its full lifetime and no attempt is wasted past it."""
        if self.expired(entry, now):
            return None
        failures = entry.attempts + 1
        return min(now + self.delay_after(failures), self.expires_at(entry))

    def should_warn(self, entry: QueueEntry, now: float) -> bool:
        """A delayed-delivery notice goes out once, when a recipient still deferred has been
        queued for ``delay_warning`` seconds (RFC 3464 section 2.3.3 Action: delayed)."""
        return (
            self.delay_warning > 0
            and not entry.warned
            and now - entry.created_at >= self.delay_warning
            and not self.expired(entry, now)
        )
