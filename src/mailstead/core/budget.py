"""A budget of octets shared by concurrent tasks: message commits that must hold a whole
message in memory (an SMTP message read back from its spool file, an IMAP APPEND read back
from its literal file) wait for room instead of adding up past what the server may hold."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class ByteBudget:
    """Octets that holders may have at once. A request larger than the whole budget is cut to
    it, so one message of any allowed size can always go ahead (alone)."""

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.used = 0
        self._waiters: list[asyncio.Future[None]] = []

    @contextlib.asynccontextmanager
    async def hold(self, octets: int) -> AsyncIterator[None]:
        """Waits until ``octets`` fit, holds them for the body of the ``async with``."""
        n = max(0, min(octets, self.total))
        while self.used + n > self.total:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
        self.used += n
        try:
            yield
        finally:
            self.used -= n
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
