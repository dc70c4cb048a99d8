"""The listener's per-turn share of message content (BulkPacer): streams queue in order, small
reads and commands never wait behind them, and a lone stream is not slowed."""

from __future__ import annotations

import asyncio
import os
import tempfile

from mailstead.core.writeback import STEP, Writeback
from mailstead.servers.listener import SMALL_READ, BulkPacer

CHUNK = 256 * 1024


def test_a_lone_stream_is_admitted_every_turn() -> None:
    async def body() -> int:
        pacer = BulkPacer(64 * 1024)
        turns = 0
        for _ in range(20):
            await pacer.admit(CHUNK)
            await asyncio.sleep(0)  # the next read arrives in a later turn
            turns += 1
        return turns

    assert asyncio.run(body()) == 20


def test_streams_share_turns_first_come_first_served() -> None:
    async def body() -> list[str]:
        pacer = BulkPacer(64 * 1024)
        order: list[str] = []

        async def stream(name: str) -> None:
            for _ in range(3):
                await pacer.admit(CHUNK)
                order.append(name)
                await asyncio.sleep(0)  # its next read arrives in a later turn

        await asyncio.gather(stream("a"), stream("b"), stream("c"))
        return order

    order = asyncio.run(body())
    # Each turn admits one 256 KiB read (the share is 64 KiB), in the order the streams
    # queued: a stream that comes back goes behind the others, none runs ahead.
    assert order == ["a", "b", "c"] * 3


def test_a_small_read_does_not_queue_behind_streams() -> None:
    async def body() -> tuple[bool, int]:
        pacer = BulkPacer(64 * 1024)
        waiting = [asyncio.ensure_future(pacer.admit(CHUNK)) for _ in range(5)]
        await pacer.admit(CHUNK)  # this turn's share is taken; the five wait
        await asyncio.sleep(0)
        queued = sum(1 for w in waiting if not w.done())
        small = asyncio.ensure_future(pacer.admit(SMALL_READ))
        await asyncio.sleep(0)
        done = small.done()
        await asyncio.gather(*waiting)
        return done, queued

    done, queued = asyncio.run(body())
    assert done
    assert queued >= 4


def test_a_cancelled_wait_leaves_the_queue() -> None:
    async def body() -> None:
        pacer = BulkPacer(64 * 1024)
        await pacer.admit(CHUNK)
        waiter = asyncio.ensure_future(pacer.admit(CHUNK))
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.sleep(0)
        await asyncio.wait_for(pacer.admit(CHUNK), 1)  # not stuck behind the cancelled one

    asyncio.run(body())


def test_writeback_is_started_every_step() -> None:
    with tempfile.TemporaryFile() as f:
        wb = Writeback()
        dues = 0
        for _ in range(8):
            f.write(b"x" * (STEP // 2))
            if wb.due(STEP // 2):
                f.flush()
                wb.start(f.fileno())
                dues += 1
        assert dues == 4
        assert os.fstat(f.fileno()).st_size == 4 * STEP
