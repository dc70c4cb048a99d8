"""Brute-force counters across nodes (issue 10): two AccountService instances, each on its own
PostgresStore of one database (two nodes), count failed logins in the store, so failures on
one node delay and block the attacker on the other. Also: the embedded store keeps counting
in memory, a store outage falls back to this process's counts, and maintenance prunes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from argon2 import PasswordHasher

from mailstead.accounts.login import LoginFailure, LoginResult, SecuritySettings
from mailstead.accounts.service import AccountService
from mailstead.accounts.throttle import MemoryCounter, StoreCounter, network_key
from mailstead.core.secret import Secret
from mailstead.maintenance import auth_failures_job
from mailstead.storage.interfaces import Store
from mailstead.storage.postgres.store import PostgresStore
from mailstead.storage.sqlite.store import SQLiteStore
from pgserver import shared_server

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
USER = "alice@example.test"
PASSWORD = "alice-Secret-1"
ATTACKER = "203.0.113.5"
OWNER = "198.51.100.7"
SETTINGS = SecuritySettings(max_failures=6, failure_window=600, block_duration=900,
                            failure_delay=1.0, max_failure_delay=60.0)


@dataclass
class Node:
    """One node: its own store instance and accounts service, the delays it slept."""

    store: Store
    svc: AccountService
    slept: list[float] = field(default_factory=list)

    async def login(self, password: str, ip: str = ATTACKER) -> LoginResult:
        return await self.svc.login(USER, Secret(password), protocol="imap", client_ip=ip,
                                    mechanism="PLAIN")


class Clock:
    """The hand-driven time both nodes read."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Cluster:
    """Two nodes on one database, one clock."""

    a: Node
    b: Node
    clock: Clock

    @property
    def now(self) -> float:
        return self.clock.now

    @now.setter
    def now(self, value: float) -> None:
        self.clock.now = value


def node(store: Store, clock: Clock, shared_failures: bool | None) -> Node:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    svc = AccountService(store, FAST, clock=clock, security=SETTINGS, sleep=sleep,
                         shared_failures=shared_failures)
    return Node(store, svc, slept)


@asynccontextmanager
async def cluster(
    opener: Callable[[], Awaitable[Store]], shared_failures: bool | None = None
) -> AsyncIterator[Cluster]:
    clock = Clock()
    first, second = await opener(), await opener()
    world = Cluster(node(first, clock, shared_failures), node(second, clock, shared_failures),
                    clock)
    try:
        await world.a.svc.add_domain("example.test")
        await world.a.svc.add_user(USER, Secret(PASSWORD))
        yield world
    finally:
        for n in (world.a, world.b):
            await n.svc.close()
            await n.store.close()


def postgres() -> Callable[[], Awaitable[Store]]:
    dsn = shared_server().new_database()

    async def open_one() -> Store:
        return await PostgresStore.open(dsn, pool_size=4)

    return open_one


def test_a_networked_store_counts_failures_in_the_store() -> None:
    async def body() -> None:
        async with cluster(postgres()) as world:
            assert isinstance(world.a.svc.guard.failures, StoreCounter)
            assert isinstance(world.b.svc.guard.failures, StoreCounter)

    asyncio.run(body())


def test_failures_on_one_node_delay_the_attacker_on_the_other() -> None:
    async def body() -> None:
        async with cluster(postgres()) as world:
            for i in range(3):
                result = await world.a.login(f"guess-{i}")
                assert result.reason is LoginFailure.BAD_CREDENTIALS
            assert world.a.slept == [1.0, 2.0, 4.0]
            # Node B has never seen this network fail, yet its fourth failure waits 8 s.
            await world.b.login("guess-3")
            assert world.b.slept == [8.0]
            # The owner on a clean network is never slowed, on either node.
            assert (await world.b.login(PASSWORD, ip=OWNER)).ok
            assert (await world.a.login(PASSWORD, ip=OWNER)).ok
            assert world.a.slept == [1.0, 2.0, 4.0]
            assert world.b.slept == [8.0]
            # An owner who mistypes once waits the account's count (the attack on it), so
            # the attacker gains nothing by switching networks; the next success is not slowed.
            await world.b.login("typo", ip=OWNER)
            assert world.b.slept == [8.0, 16.0]
            # The window passes: everything is forgotten on both nodes.
            world.now += SETTINGS.failure_window + 1
            await world.b.login("guess-later")
            assert world.b.slept == [8.0, 16.0, 1.0]

    asyncio.run(body())


def test_failures_spread_over_both_nodes_block_the_network_everywhere() -> None:
    async def body() -> None:
        async with cluster(postgres()) as world:
            limit = SETTINGS.max_failures
            for i in range(limit):
                result = await (world.a, world.b)[i % 2].login(f"guess-{i}")
                assert result.reason is LoginFailure.BAD_CREDENTIALS, i
            # Each node saw half of them; the one with the last failure blocked at once.
            last, other = (world.a, world.b)[(limit - 1) % 2], (world.a, world.b)[limit % 2]
            assert last.svc.guard.stats.blocks == 1
            assert other.svc.guard.stats.blocks == 0
            assert (await last.login(PASSWORD)).reason is LoginFailure.BLOCKED
            # The other node reads the block from the store (its cache is at most 2 s old),
            # and refuses even the right password without checking it.
            world.now += 2
            assert (await other.login(PASSWORD)).reason is LoginFailure.BLOCKED
            blocks = await other.store.active_blocks(world.now)
            assert [(b.network, b.failures) for b in blocks] == [(ATTACKER, limit)]
            # The blocked network's failures were cleared for both nodes: once the block is
            # lifted it starts afresh (the account's history stays).
            assert await world.b.store.auth_failures(ATTACKER, USER, 0) == (0, limit)

    asyncio.run(body())


def test_attempts_under_way_on_one_node_count_with_failures_from_the_other() -> None:
    async def body() -> None:
        async with cluster(postgres()) as world:
            for i in range(SETTINGS.max_failures - 2):
                await world.a.login(f"guess-{i}")
            network = network_key(ATTACKER)
            guard = world.b.svc.guard
            # Attempts of the network under way on B (reserved when they start) count with
            # A's committed failures: 4 failures + 2 under way = the limit of 6.
            place = guard.throttle.begin(network, USER)
            assert (await guard.admit(network, USER, place)).allowed
            place = guard.throttle.begin(network, USER)
            assert (await guard.admit(network, USER, place)).allowed
            # A third attempt waits for a place instead of being checked; attempts under way
            # are not failures, so once they end it is checked and gets in.
            third = asyncio.ensure_future(world.b.login(PASSWORD))
            deadline = time.monotonic() + 10
            while guard.stats.waited_for_place == 0:
                assert time.monotonic() < deadline, "the attempt never waited"
                await asyncio.sleep(0.01)
            assert world.b.svc.guard.stats.password_checks == 0
            guard.release(network, USER)
            guard.release(network, USER)
            result = await asyncio.wait_for(third, 10)
            assert result.ok
            assert world.b.svc.guard.stats.password_checks == 1

    asyncio.run(body())


def test_the_embedded_store_counts_in_memory_per_process(tmp_path: Path) -> None:
    async def body() -> None:
        async def open_sqlite() -> Store:
            return await SQLiteStore.open(tmp_path)

        async with cluster(open_sqlite) as world:
            assert isinstance(world.a.svc.guard.failures, MemoryCounter)
            for i in range(3):
                await world.a.login(f"guess-{i}")
            await world.b.login("guess-3")
            assert world.b.slept == [1.0]  # B counts its own failures only
            assert await world.a.store.auth_failures(ATTACKER, USER, 0) == (0, 0)

    asyncio.run(body())


def test_shared_counting_works_on_the_embedded_store_too(tmp_path: Path) -> None:
    async def body() -> None:
        async def open_sqlite() -> Store:
            return await SQLiteStore.open(tmp_path)

        async with cluster(open_sqlite, shared_failures=True) as world:
            for i in range(3):
                await world.a.login(f"guess-{i}")
            await world.b.login("guess-3")
            assert world.b.slept == [8.0]

    asyncio.run(body())


def test_a_store_outage_falls_back_to_this_process_counts() -> None:
    async def body() -> None:
        async with cluster(postgres()) as world:
            await world.a.login("guess-0")
            guard = world.b.svc.guard
            network = network_key(ATTACKER)
            # Node B loses its database: the counter answers from this process (with a
            # warning in the log), never with an exception.
            await world.b.store.close()
            assert await guard.failures.counts(network, USER, world.now) == (0, 0)
            assert await guard.failed(network, USER) == 1.0
            assert await guard.failed(network, USER) == 2.0
            place = guard.throttle.begin(network, USER)
            assert (await guard.admit(network, USER, place)).allowed
            guard.throttle.end(network, USER)
            await guard.failures.forget(network)
            assert await guard.failures.counts(network, USER, world.now) == (0, 2)

    asyncio.run(body())


def test_maintenance_prunes_failures_past_the_window() -> None:
    async def body() -> None:
        async with cluster(postgres()) as world:
            await world.a.login("guess-0")
            world.now += 300
            await world.b.login("guess-1")
            job = auth_failures_job(world.a.store, SETTINGS.failure_window,
                                    clock=lambda: world.now + 400)
            assert job.name == "auth_failures"
            assert await job.run() == 2  # the first failure's network and account rows
            assert await world.b.store.auth_failures(ATTACKER, USER, 0) == (1, 1)

    asyncio.run(body())


def test_a_network_over_the_limit_here_is_refused_without_asking_the_store() -> None:
    async def body() -> None:
        async with cluster(postgres()) as world:
            for i in range(SETTINGS.max_failures - 1):
                await world.b.login(f"guess-{i}")  # counted on B and in the store
            reads: list[str] = []
            counts = world.b.store.auth_failures

            async def counting(network: str, account: str, since: float) -> tuple[int, int]:
                reads.append(network)
                return await counts(network, account, since)

            world.b.store.auth_failures = counting  # type: ignore[method-assign]
            guard = world.b.svc.guard
            network = network_key(ATTACKER)
            place = guard.throttle.begin(network, USER)
            try:
                assert (await guard.admit(network, USER, place)).allowed  # 5 + 1: asks
                assert reads == [network]
                place = guard.throttle.begin(network, USER)
                try:
                    refused = await guard.admit(network, USER, place)  # 5 + 2 > 6
                finally:
                    guard.throttle.end(network, USER)
            finally:
                guard.throttle.end(network, USER)
            assert not refused.allowed
            assert refused.delay == SETTINGS.failure_delay * 2 ** 4
            assert reads == [network]  # this node's own count sufficed

    asyncio.run(body())


def test_logins_during_a_block_list_read_wait_for_it() -> None:
    """A block stored by another node (or the CLI) holds for every attempt that arrives while
    this node re-reads the list: they wait for that read, none judges by the stale copy."""
    async def body() -> None:
        async with cluster(postgres()) as world:
            guard = world.b.svc.guard
            network = network_key(ATTACKER)
            assert not await guard.blocked(network)  # B's copy: no blocks
            for i in range(SETTINGS.max_failures):
                await world.a.login(f"guess-{i}")  # A blocks the network in the store
            world.now += 2  # B's copy is due for a re-read
            gate = asyncio.Event()
            read = world.b.store.active_blocks

            async def slow(now: float):  # type: ignore[no-untyped-def]
                await gate.wait()
                return await read(now)

            world.b.store.active_blocks = slow  # type: ignore[method-assign]
            first = asyncio.ensure_future(guard.blocked(network))
            await asyncio.sleep(0)  # the first attempt starts the read
            later = [asyncio.ensure_future(world.b.login(PASSWORD)) for _ in range(3)]
            await asyncio.sleep(0.05)
            assert not any(task.done() for task in later)
            gate.set()
            assert await first
            assert [(await t).reason for t in later] == [LoginFailure.BLOCKED] * 3

    asyncio.run(body())
