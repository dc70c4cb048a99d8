"""The SharedStateStore contract (issue 10, migration 0009), run against every backend: leases
(the POP3 lock across nodes) and failed-login counts, including two store instances on one
database racing for the same lease."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from mailstead.storage.interfaces import Store

Opener = Callable[[Path], Awaitable[Store]]
NOW = 1_800_000_000.0


def test_lease_is_exclusive_until_it_expires_or_is_released(
    opener: Opener, tmp_path: Path
) -> None:
    async def body() -> None:
        store = await opener(tmp_path)
        try:
            assert await store.acquire_lease("pop3:1", "node-a:1", NOW, 60)
            assert not await store.acquire_lease("pop3:1", "node-b:7", NOW + 1, 60)
            # Another name is another lease.
            assert await store.acquire_lease("pop3:2", "node-b:7", NOW + 1, 60)
            # The owner renews it: it now lasts until NOW + 50 + 60.
            assert await store.acquire_lease("pop3:1", "node-a:1", NOW + 50, 60)
            assert not await store.acquire_lease("pop3:1", "node-b:7", NOW + 100, 60)
            # Expired (until <= now): anyone may take it, and then the old owner may not.
            assert await store.acquire_lease("pop3:1", "node-b:7", NOW + 110, 60)
            assert not await store.acquire_lease("pop3:1", "node-a:1", NOW + 111, 60)
            # Only the owner's release counts.
            await store.release_lease("pop3:1", "node-a:1")
            assert not await store.acquire_lease("pop3:1", "node-c:1", NOW + 112, 60)
            await store.release_lease("pop3:1", "node-b:7")
            assert await store.acquire_lease("pop3:1", "node-c:1", NOW + 113, 60)
            await store.release_lease("pop3:9", "nobody")  # nothing held: nothing happens
        finally:
            await store.close()

    asyncio.run(body())


def test_two_stores_race_for_one_lease_and_exactly_one_wins(
    opener: Opener, tmp_path: Path
) -> None:
    async def body() -> None:
        # Two instances on one database: two nodes (or, for SQLite, two processes).
        first = await opener(tmp_path)
        second = await opener(tmp_path)
        try:
            for round_no in range(5):
                name = f"pop3:{round_no}"
                tries = [
                    store.acquire_lease(name, f"{label}:{i}", NOW, 60)
                    for i in range(8)
                    for label, store in (("a", first), ("b", second))
                ]
                won = await asyncio.gather(*tries)
                assert sum(won) == 1, won
            # The loser sees the winner's lease from either instance.
            assert not await second.acquire_lease("pop3:0", "late", NOW + 1, 60)
            assert not await first.acquire_lease("pop3:0", "late", NOW + 1, 60)
        finally:
            await first.close()
            await second.close()

    asyncio.run(body())


def test_auth_failures_are_counted_per_network_and_account(
    opener: Opener, tmp_path: Path
) -> None:
    async def body() -> None:
        store = await opener(tmp_path)
        try:
            assert await store.auth_failures("192.0.2.1", "alice@example.test", 0) == (0, 0)
            for i in range(3):
                await store.add_auth_failure("192.0.2.1", "alice@example.test", NOW + i)
            await store.add_auth_failure("2001:db8::/64", "alice@example.test", NOW + 5)
            await store.add_auth_failure("2001:db8::/64", "bob@example.test", NOW + 6)
            assert await store.auth_failures("192.0.2.1", "alice@example.test", 0) == (3, 4)
            assert await store.auth_failures("2001:db8::/64", "bob@example.test", 0) == (2, 1)
            # Only failures after ``since`` count (at > since).
            assert await store.auth_failures("192.0.2.1", "alice@example.test", NOW + 1) == (
                1, 2)
            # Clearing a network keeps the account's history (it only slows failing networks).
            await store.clear_auth_failures("192.0.2.1")
            assert await store.auth_failures("192.0.2.1", "alice@example.test", 0) == (0, 4)
            assert await store.auth_failures("2001:db8::/64", "x", 0) == (2, 0)
            # Pruning removes rows at or before the cut-off, both kinds.
            assert await store.prune_auth_failures(NOW + 5) == 5
            assert await store.auth_failures("2001:db8::/64", "bob@example.test", 0) == (1, 1)
            assert await store.auth_failures("2001:db8::/64", "alice@example.test", 0) == (
                1, 0)
            assert await store.prune_auth_failures(NOW + 5) == 0
        finally:
            await store.close()

    asyncio.run(body())


def test_auth_failures_are_seen_by_every_instance(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        first = await opener(tmp_path)
        second = await opener(tmp_path)
        try:
            await asyncio.gather(*(
                store.add_auth_failure("198.51.100.9", "carol@example.test", NOW + i)
                for i, store in enumerate([first, second] * 5)
            ))
            assert await first.auth_failures("198.51.100.9", "carol@example.test", NOW - 1) == (
                10, 10)
            await second.clear_auth_failures("198.51.100.9")
            assert await first.auth_failures("198.51.100.9", "carol@example.test", NOW - 1) == (
                0, 10)
        finally:
            await first.close()
            await second.close()

    asyncio.run(body())
