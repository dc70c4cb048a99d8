"""INPROGRESS (RFC 9585): ``* OK [INPROGRESS ("tag" count total)]`` while a command runs long.

A timer beside the command sends the notice every ``interval`` seconds, so a command that
ends sooner never sends one; loops that know how far they are (FETCH batches, COPY/MOVE)
say so with ``Progress.update``, the others report NIL (RFC 9585 section 3).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from mailstead.proto.imap.response import string

# Commands that only wait for the client (IDLE) or end the session are not "in progress".
_QUIET = frozenset({"IDLE", "LOGOUT", "AUTHENTICATE", "LOGIN", "STARTTLS", "COMPRESS"})


@dataclass(slots=True)
class Progress:
    """How far the running command is: ``done`` of ``total`` items, None when unknown."""

    done: int | None = None
    total: int | None = None

    def update(self, done: int, total: int) -> None:
        self.done, self.total = min(done, total), total


def notice(tag: str, progress: Progress) -> bytes:
    """RFC 9585 section 3: ``"INPROGRESS" [SP "(" tag SP count SP total ")"]``, count and
    total being numbers or NIL."""
    def num(value: int | None) -> bytes:
        return b"NIL" if value is None else b"%d" % value

    return (b"* OK [INPROGRESS (" + string(tag) + b" " + num(progress.done) + b" "
            + num(progress.total) + b")] Still working\r\n")


@contextlib.asynccontextmanager
async def reporting(
    tag: str, name: str, progress: Progress, interval: float,
    writer: Callable[[bytes], Awaitable[None]] | None,
) -> AsyncIterator[None]:
    """Send ``notice`` every ``interval`` seconds until the block ends (never after it, so
    the notices always come before the command's tagged response)."""
    if interval <= 0 or writer is None or name in _QUIET:
        yield
        return
    send = writer

    async def tick() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await send(notice(tag, progress))
            except Exception:  # the connection is gone; the command finds out itself
                return

    task = asyncio.create_task(tick())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])
