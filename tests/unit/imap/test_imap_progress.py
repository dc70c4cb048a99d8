"""The INPROGRESS timer (RFC 9585): nothing for a command that ends before the interval,
notices with the current count while one runs, none after it ended."""

from __future__ import annotations

import asyncio

from mailstead.imap.progress import Progress, notice, reporting


def test_notice_format() -> None:
    assert notice("A1", Progress()) == b'* OK [INPROGRESS ("A1" NIL NIL)] Still working\r\n'
    progress = Progress()
    progress.update(700, 500)  # never more done than there is
    assert notice("t2", progress) == b'* OK [INPROGRESS ("t2" 500 500)] Still working\r\n'


def run(interval: float, name: str, work: int) -> list[bytes]:
    """A command of ``name`` that waits until ``work`` notices were written (0: returns at
    once); the notices written, then a moment later (none may follow)."""
    sent: list[bytes] = []

    async def main() -> list[bytes]:
        enough = asyncio.Event()

        async def writer(data: bytes) -> None:
            sent.append(data)
            if len(sent) >= work:
                enough.set()

        progress = Progress()
        async with reporting("T1", name, progress, interval, writer):
            progress.update(3, 10)
            if work:
                await asyncio.wait_for(enough.wait(), 10)
        count = len(sent)
        await asyncio.sleep(interval * 3)  # the timer is gone: nothing more arrives
        assert len(sent) == count
        return sent

    return asyncio.run(main())


def test_fast_command_sends_nothing() -> None:
    assert run(5.0, "FETCH", 0) == []


def test_long_command_sends_notices_until_it_ends() -> None:
    assert run(0.01, "SEARCH", 2) == [b'* OK [INPROGRESS ("T1" 3 10)] Still working\r\n'] * 2


def test_idle_and_disabled_send_nothing() -> None:
    async def main() -> None:
        async def writer(data: bytes) -> None:
            raise AssertionError(data)

        for interval, name in ((0.01, "IDLE"), (0.0, "FETCH")):
            async with reporting("T", name, Progress(), interval, writer):
                await asyncio.sleep(0.05)

    asyncio.run(main())
