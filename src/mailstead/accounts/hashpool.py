"""The password-hashing pool: argon2 runs in worker threads, at most ``workers`` at once, with
lanes so that a guessing attack cannot make everyone else wait for its hashes.

Each hash is queued in a lane: ``PROVEN`` (this network logged in to this account before),
``CLEAN`` (neither the network nor the account has failed lately) or ``SUSPECT`` (the rest).
A free worker takes the oldest job of the best lane that waits; the suspect lane never holds
more than ``suspect_workers`` (half the pool, at least one) at once, so with two or more
workers some are always free for the other lanes, and with one a clean login waits at most
for the one suspect hash under way. Lanes other than ``PROVEN`` hold at most
``queue_limit`` waiting jobs; past that the attempt is refused (``PoolFull``) without a hash,
so a flood costs bounded memory and bounded waiting.

A worker is released when its thread finishes, not when its caller stops waiting (a client
that hangs up mid-hash), so the pool never runs more threads than ``workers``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TypeVar

from mailstead.core.errors import MailsteadError

T = TypeVar("T")

QUEUE_LIMIT = 256  # waiting jobs per lane (PROVEN excepted): a few seconds of hashing


class Lane(IntEnum):
    """The queue a hash waits in; a lower value is served first."""

    PROVEN = 0
    CLEAN = 1
    SUSPECT = 2


class PoolFull(MailsteadError):
    """The lane's queue is full: the attempt gets a temporary failure, no hash."""


@dataclass
class PoolStats:
    """Counters for tests, benchmarks and the log."""

    hashed: dict[Lane, int] = field(default_factory=lambda: dict.fromkeys(Lane, 0))
    refused: dict[Lane, int] = field(default_factory=lambda: dict.fromkeys(Lane, 0))
    busiest_queue: int = 0


class HashPool:
    """A bounded number of hashing threads shared by lanes with priorities and a share."""

    def __init__(
        self, workers: int, *, suspect_share: float = 0.5, queue_limit: int = QUEUE_LIMIT
    ) -> None:
        self.workers = max(1, workers)
        self.suspect_workers = max(1, int(self.workers * suspect_share))
        self.queue_limit = queue_limit
        self._busy = 0
        self._suspect_busy = 0
        self._waiting: dict[Lane, deque[asyncio.Future[None]]] = {
            lane: deque() for lane in Lane
        }
        self.stats = PoolStats()

    @property
    def busy(self) -> int:
        return self._busy

    def waiting(self, lane: Lane) -> int:
        return sum(1 for f in self._waiting[lane] if not f.done())

    async def run(self, lane: Lane, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in a worker thread once ``lane`` gets a worker. Raises PoolFull."""
        await self._acquire(lane)
        self.stats.hashed[lane] += 1
        try:
            job = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        except BaseException:
            self._release(lane)
            raise
        job.add_done_callback(lambda _j: self._release(lane))
        return await asyncio.shield(job)

    def _can_start(self, lane: Lane) -> bool:
        if self._busy >= self.workers:
            return False
        return lane is not Lane.SUSPECT or self._suspect_busy < self.suspect_workers

    def _take(self, lane: Lane) -> None:
        self._busy += 1
        if lane is Lane.SUSPECT:
            self._suspect_busy += 1

    def _release(self, lane: Lane) -> None:
        self._busy -= 1
        if lane is Lane.SUSPECT:
            self._suspect_busy -= 1
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free workers to the oldest waiter of the best lane that may start."""
        for lane in Lane:
            queue = self._waiting[lane]
            while queue and self._can_start(lane):
                waiter = queue.popleft()
                if not waiter.done():
                    self._take(lane)
                    waiter.set_result(None)

    async def _acquire(self, lane: Lane) -> None:
        ahead = any(self._waiting[better] for better in Lane if better <= lane)
        if not ahead and self._can_start(lane):
            self._take(lane)
            return
        queue = self._waiting[lane]
        if lane is not Lane.PROVEN and len(queue) >= self.queue_limit:
            self.stats.refused[lane] += 1
            raise PoolFull(f"the {lane.name.lower()} hashing queue is full")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        self.stats.busiest_queue = max(self.stats.busiest_queue, len(queue))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(lane)  # granted just as the caller gave up: pass it on
            else:
                waiter.cancel()
                _remove(queue, waiter)
            raise


def _remove(queue: deque[asyncio.Future[None]], waiter: asyncio.Future[None]) -> None:
    """Drop a cancelled waiter so that the queue's length counts only live ones."""
    with contextlib.suppress(ValueError):
        queue.remove(waiter)
