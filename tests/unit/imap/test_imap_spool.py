"""Spooled APPEND literals and the shared budget of APPEND commits."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mailstead.core.budget import ByteBudget
from mailstead.imap.spool import LiteralSpool


def test_spool_reads_back_what_was_written(tmp_path: Path) -> None:
    asyncio.run(_spool_reads_back(tmp_path))


async def _spool_reads_back(tmp_path: Path) -> None:
    spool = LiteralSpool(tmp_path)
    try:
        for i in range(100):
            spool.write(bytes([i]) * 1000)
        assert spool.size == 100_000
        data = await spool.read()
        assert data == b"".join(bytes([i]) * 1000 for i in range(100))
        assert list(tmp_path.iterdir()) == []  # unnamed: nothing to clean up after a crash
    finally:
        spool.close()


def test_budget_lets_commits_hold_at_most_its_total() -> None:
    asyncio.run(_budget_total())


async def _budget_total() -> None:
    budget = ByteBudget(100)
    peak = 0
    gates = [asyncio.Event() for _ in range(4)]

    async def commit(i: int, size: int) -> None:
        nonlocal peak
        async with budget.hold(size):
            peak = max(peak, budget.used)
            await gates[i].wait()

    tasks = [asyncio.create_task(commit(i, 60)) for i in range(3)]
    tasks.append(asyncio.create_task(commit(3, 10_000)))  # bigger than the whole budget
    for _ in range(5):
        await asyncio.sleep(0)  # let every task reach its wait
    assert budget.used == 60  # one 60 at a time
    for gate in gates:
        gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert peak <= 100
    assert budget.used == 0


def test_cancelled_waiter_does_not_leak() -> None:
    asyncio.run(_cancelled_waiter())


async def _cancelled_waiter() -> None:
    budget = ByteBudget(10)
    release = asyncio.Event()

    async def holder() -> None:
        async with budget.hold(10):
            await release.wait()

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiting.cancel()
    release.set()
    await first
    assert budget.used == 0
    async with budget.hold(10):
        assert budget.used == 10
