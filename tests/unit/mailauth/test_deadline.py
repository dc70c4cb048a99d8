"""``bounded`` and ``Inline``: the time limit and the cancellations of ``asyncio.timeout``
around the same await, with the work done inline when nothing has to wait."""

from __future__ import annotations

import asyncio
import time

import pytest

from mailstead.mailauth.deadline import Inline, bounded


async def _value(x: int) -> int:
    return x


async def _after(seconds: float, x: int, log: list[str]) -> int:
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        log.append("cancelled")
        raise
    finally:
        log.append("cleaned up")
    return x


async def _fails(wait: bool) -> int:
    if wait:
        await asyncio.sleep(0)
    raise ValueError("broken")


def test_results_and_errors_as_with_await() -> None:
    async def go() -> None:
        log: list[str] = []
        assert await bounded(_value(1), 0) == 1  # never waits: no limit to hit
        assert await bounded(_after(0.01, 2, log), 5) == 2
        assert log == ["cleaned up"]
        for wait in (False, True):
            with pytest.raises(ValueError, match="broken"):
                await bounded(_fails(wait), 5)

    asyncio.run(go())


def test_time_limit_cancels_the_waiting_coroutine() -> None:
    async def go() -> None:
        log: list[str] = []
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            await bounded(_after(10, 1, log), 0.05)
        assert time.monotonic() - start < 5
        assert log == ["cancelled", "cleaned up"]
        # The deadline runs from the call, not from the first wait.
        async def busy_then_wait() -> int:
            time.sleep(0.06)
            return await _after(0.01, 3, [])

        with pytest.raises(TimeoutError):
            await bounded(busy_then_wait(), 0.05)
        # Nested: the inner limit is the inner caller's to handle, the outer goes on.
        async def inner_expires() -> str:
            try:
                await bounded(_after(10, 1, []), 0.02)
            except TimeoutError:
                return "inner timed out"
            return "no"

        assert await bounded(inner_expires(), 5) == "inner timed out"

    asyncio.run(go())


def test_outside_cancellation_is_not_a_timeout() -> None:
    async def go() -> None:
        log: list[str] = []
        task = asyncio.get_running_loop().create_task(bounded(_after(10, 1, log), 5))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert log == ["cancelled", "cleaned up"]

    asyncio.run(go())


def test_inline_runs_to_the_first_wait_and_goes_on_later() -> None:
    async def go() -> None:
        log: list[str] = []
        quick = Inline(_value(4))
        assert quick.done
        assert await quick == 4
        slow = Inline(_after(0.01, 5, log))
        assert not slow.done
        assert log == []
        assert await _value(6) == 6  # other work in the same task meanwhile
        assert await slow == 5
        assert slow.done
        abandoned = Inline(_after(10, 7, log))
        abandoned.close()  # never awaited: its cleanup runs now
        assert log == ["cleaned up", "cleaned up"]

    asyncio.run(go())
