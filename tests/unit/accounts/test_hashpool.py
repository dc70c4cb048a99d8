"""The hashing pool's lanes: priority, the suspect share, the bounded queue, cancellation.
Jobs are functions that block on a threading.Event, so the tests decide when each finishes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.accounts.hashpool import HashPool, Lane, PoolFull

DEADLINE = 5.0


class Gate:
    """A job body that records when it started and waits until released."""

    def __init__(self, name: str, log: list[str], watch: Callable[[], None]) -> None:
        self.name = name
        self.release = threading.Event()
        self._log = log
        self._watch = watch

    def __call__(self) -> str:
        self._log.append(self.name)
        self._watch()
        if not self.release.wait(DEADLINE):
            raise TimeoutError(self.name)
        return self.name


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` with a deadline (no sleep used as synchronisation)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


def test_a_clean_hash_waits_only_for_the_suspect_hash_under_way() -> None:
    async def body() -> None:
        pool = HashPool(1)
        started: list[str] = []
        gates = {f"s{i}": Gate(f"s{i}", started, lambda: None) for i in range(5)}
        gates["clean"] = Gate("clean", started, lambda: None)
        suspects = [asyncio.ensure_future(pool.run(Lane.SUSPECT, gates[f"s{i}"]))
                    for i in range(5)]
        await until(lambda: started == ["s0"])
        clean = asyncio.ensure_future(pool.run(Lane.CLEAN, gates["clean"]))
        await until(lambda: pool.waiting(Lane.CLEAN) == 1)
        gates["s0"].release.set()
        await until(lambda: len(started) == 2)
        assert started == ["s0", "clean"]  # ahead of the four suspects that queued first
        gates["clean"].release.set()
        assert await clean == "clean"
        for i in range(1, 5):
            gates[f"s{i}"].release.set()
        assert await asyncio.gather(*suspects) == [f"s{i}" for i in range(5)]
        assert started == ["s0", "clean", "s1", "s2", "s3", "s4"]  # FIFO within a lane
        assert pool.busy == 0

    asyncio.run(body())


def test_suspect_hashes_never_take_more_than_their_share() -> None:
    async def body() -> None:
        pool = HashPool(4)
        assert pool.suspect_workers == 2
        started: list[str] = []
        peak = {"suspect": 0}

        def watch() -> None:  # the pool's books, as each suspect job sees them at its start
            peak["suspect"] = max(peak["suspect"], pool._suspect_busy)

        gates = [Gate(f"s{i}", started, watch) for i in range(10)]
        suspects = [asyncio.ensure_future(pool.run(Lane.SUSPECT, g)) for g in gates]
        await until(lambda: len(started) == 2)
        # Two workers stay free: clean and proven logins start at once.
        clean = Gate("clean", started, lambda: None)
        proven = Gate("proven", started, lambda: None)
        jobs = [asyncio.ensure_future(pool.run(Lane.CLEAN, clean)),
                asyncio.ensure_future(pool.run(Lane.PROVEN, proven))]
        await until(lambda: len(started) == 4)
        assert set(started[2:]) == {"clean", "proven"}
        clean.release.set()
        proven.release.set()
        await asyncio.gather(*jobs)
        for g in gates:
            g.release.set()
        await asyncio.gather(*suspects)
        assert peak["suspect"] <= 2
        assert pool.stats.hashed[Lane.SUSPECT] == 10

    asyncio.run(body())


def test_a_full_queue_refuses_without_hashing() -> None:
    async def body() -> None:
        pool = HashPool(1, queue_limit=3)
        started: list[str] = []
        first = Gate("first", started, lambda: None)
        running = asyncio.ensure_future(pool.run(Lane.SUSPECT, first))
        await until(lambda: started == ["first"])
        queued = [asyncio.ensure_future(pool.run(Lane.SUSPECT, lambda: "q")) for _ in range(3)]
        await until(lambda: pool.waiting(Lane.SUSPECT) == 3)
        with pytest.raises(PoolFull):
            await pool.run(Lane.SUSPECT, lambda: "never")
        assert pool.stats.refused[Lane.SUSPECT] == 1
        # The proven lane is never refused: it holds only networks that logged in before.
        proven = asyncio.ensure_future(pool.run(Lane.PROVEN, lambda: "p"))
        first.release.set()
        assert await proven == "p"
        assert await running == "first"
        assert await asyncio.gather(*queued) == ["q", "q", "q"]

    asyncio.run(body())


def test_a_caller_that_gives_up_leaves_the_queue_and_keeps_no_worker() -> None:
    async def body() -> None:
        pool = HashPool(1)
        started: list[str] = []
        first = Gate("first", started, lambda: None)
        running = asyncio.ensure_future(pool.run(Lane.CLEAN, first))
        await until(lambda: started == ["first"])
        waiting = asyncio.ensure_future(pool.run(Lane.CLEAN, lambda: "gone"))
        await until(lambda: pool.waiting(Lane.CLEAN) == 1)
        waiting.cancel()
        running.cancel()  # the thread still hashes: its worker stays taken until it ends
        await until(lambda: pool.waiting(Lane.CLEAN) == 0)
        assert pool.busy == 1
        after = asyncio.ensure_future(pool.run(Lane.CLEAN, lambda: "after"))
        await until(lambda: pool.waiting(Lane.CLEAN) == 1)
        first.release.set()
        assert await after == "after"
        assert pool.busy == 0
        for task in (waiting, running):
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(body())


@settings(max_examples=40, deadline=None)
@given(
    workers=st.integers(1, 4),
    lanes=st.lists(st.sampled_from(list(Lane)), min_size=1, max_size=30),
    cancel=st.sets(st.integers(0, 29)),
)
def test_any_mix_of_lanes_finishes_within_the_bounds(
    workers: int, lanes: list[Lane], cancel: set[int]
) -> None:
    async def body() -> None:
        pool = HashPool(workers, queue_limit=1000)
        peak = {"all": 0, "suspect": 0}
        lock = threading.Lock()

        def job(lane: Lane) -> Lane:
            with lock:  # the pool's own books, as a worker thread sees them
                peak["all"] = max(peak["all"], pool.busy)
                peak["suspect"] = max(peak["suspect"], pool._suspect_busy)
            return lane

        tasks = [asyncio.ensure_future(pool.run(lane, job, lane)) for lane in lanes]
        await asyncio.sleep(0)
        for i in cancel:
            if i < len(tasks):
                tasks[i].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, (lane, result) in enumerate(zip(lanes, results, strict=True)):
            if not isinstance(result, asyncio.CancelledError):
                assert result is lane, (i, result)
        await until(lambda: pool.busy == 0)
        assert all(pool.waiting(lane) == 0 for lane in Lane)
        assert peak["all"] <= pool.workers
        assert peak["suspect"] <= pool.suspect_workers

    asyncio.run(body())
