"""Time limits and concurrency for checks that usually do not wait at all.

On a busy MX nearly every DNS answer the inbound checks need is in the resolver's cache, so
a check runs from start to end without waiting. ``asyncio.timeout`` still arms and disarms a
timer for each one, and a task started so that lookups overlap still costs its scheduling;
per message that was a good part of the checks' cost. ``Inline`` runs a coroutine in the
current task up to its first wait (often its end); ``bounded`` arms the timer only when the
coroutine really waits, at the deadline taken on entry, and then goes on with it in the same
task, so the task the timer cancels, the ``TimeoutError`` and every cancellation are those of
``asyncio.timeout`` around the same ``await``.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@types.coroutine
def _resume(coro: Coroutine[Any, Any, T], yielded: Any) -> Generator[Any, Any, T]:
    """Goes on with ``coro``, which waits on ``yielded``, as ``yield from`` would: what the
    task sends or throws (a cancellation) goes into it."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # a cancellation: into the coroutine, as await does
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                result: T = stop.value
                return result
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                result = stop.value
                return result


class Inline(Generic[T]):
    """``coro`` run now, in the current task, up to its first wait; ``done`` tells whether it
    ran to its end. Awaiting it (once) gives the result, going on with the coroutine, and
    must happen in the same task: timers the coroutine armed belong to this task. ``close``
    ends a coroutine that will not be awaited."""

    __slots__ = ("_coro", "_value", "_yielded", "done")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self._value: Any = None
        self._yielded: Any = None
        try:
            self._yielded = coro.send(None)
        except StopIteration as stop:
            self._value = stop.value
            self.done = True
        else:
            self.done = False

    def __await__(self) -> Generator[Any, Any, T]:
        if self.done:
            value: T = self._value
            return value
        value = yield from _resume(self._coro, self._yielded)
        self._value, self.done = value, True
        return value

    def close(self) -> None:
        if not self.done:
            self.done = True
            self._coro.close()


async def bounded(coro: Coroutine[Any, Any, T], delay: float) -> T:
    """``await coro`` within ``delay`` seconds (``TimeoutError`` after them), like
    ``async with asyncio.timeout(delay): await coro``, without a timer when it never waits."""
    deadline = asyncio.get_running_loop().time() + delay
    started = Inline(coro)
    if started.done:
        value: T = started._value  # no await needed: the usual case, made cheap
        return value
    async with asyncio.timeout_at(deadline):
        return await started
