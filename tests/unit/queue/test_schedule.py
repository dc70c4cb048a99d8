"""Retry timing, expiry and the delay warning as pure functions of the row and ``now``."""

from __future__ import annotations

import pytest

from mailstead.queue.schedule import RetryPolicy
from mailstead.storage.interfaces import QueueEntry

T0 = 1_700_000_000.0


def row(attempts: int = 0, warned: bool = False, created: float = T0) -> QueueEntry:
    return QueueEntry(1, "Q1", "a@a.test", "b@b.test", "h", "active", attempts, T0, created,
                      None, warned)


def test_default_schedule_then_every_four_hours() -> None:
    p = RetryPolicy()
    assert [p.delay_after(n) for n in range(1, 9)] == [
        300, 900, 1800, 3600, 7200, 14400, 14400, 14400,
    ]


def test_next_attempt_follows_failures() -> None:
    p = RetryPolicy()
    assert p.next_attempt(row(attempts=0), T0 + 1) == T0 + 1 + 300
    assert p.next_attempt(row(attempts=2), T0 + 10) == T0 + 10 + 1800


def test_last_attempt_is_placed_at_expiry_then_bounce() -> None:
    p = RetryPolicy(schedule=(100.0,), expire_after=250.0, delay_warning=0)
    assert p.next_attempt(row(attempts=2), T0 + 200) == T0 + 250  # clamped to the expiry
    assert p.next_attempt(row(attempts=3), T0 + 250) is None  # expired: bounce
    assert p.expired(row(), T0 + 250)
    assert not p.expired(row(), T0 + 249.9)


def test_delay_warning_once_and_off() -> None:
    p = RetryPolicy(delay_warning=3600.0)
    assert not p.should_warn(row(), T0 + 3599)
    assert p.should_warn(row(), T0 + 3600)
    assert not p.should_warn(row(warned=True), T0 + 7200)
    assert not RetryPolicy(delay_warning=0).should_warn(row(), T0 + 10**6)
    assert not p.should_warn(row(), T0 + p.expire_after)  # expired: a bounce, not a warning


@pytest.mark.parametrize("kwargs", [{"schedule": ()}, {"schedule": (0.0,)},
                                    {"expire_after": 0.0}, {"delay_warning": -1.0}])
def test_bad_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"must be positive|at least one positive"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
