"""The SpamStore contract (greylisting, Bayesian counts), run against every backend; two
stores learning at once keep the counts consistent."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mailstead.storage.interfaces import Store
from storebackends import Opener, opened
from storebackends import run_with as run
from storebackends import two_accounts as accounts

NOW = 1_800_000_000.0
# Bayes tokens are 63-bit hashes (filters/bayes.py): include the extremes.
BIG = 2**63 - 1


def test_greylist(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        assert await store.greylist_touch("t1", NOW) == (NOW, False)  # new: first seen now
        assert await store.greylist_touch("t1", NOW + 60) == (NOW, False)
        await store.greylist_restart("t1", NOW + 100)
        assert await store.greylist_touch("t1", NOW + 200) == (NOW + 100, False)
        assert await store.greylist_network_seen("192.0.2.0/24") is None
        await store.greylist_pass("t1", "192.0.2.0/24", NOW + 400)
        assert await store.greylist_touch("t1", NOW + 500) == (NOW + 100, True)
        assert await store.greylist_network_seen("192.0.2.0/24") == NOW + 400
        await store.greylist_pass("t1", "192.0.2.0/24", NOW + 600)
        assert await store.greylist_network_seen("192.0.2.0/24") == NOW + 600
        # A restart takes the pass back.
        await store.greylist_restart("t1", NOW + 700)
        assert await store.greylist_touch("t1", NOW + 700) == (NOW + 700, False)
        await store.greylist_restart("unknown", NOW)  # nothing to restart: no row appears
        assert await store.greylist_touch("unknown", NOW + 1) == (NOW + 1, False)
        # Pruning counts triplets and networks not seen since the cutoff.
        await store.greylist_touch("t2", NOW + 10)
        assert await store.greylist_prune(NOW + 650) == 3  # t2, "unknown" and the network
        assert await store.greylist_network_seen("192.0.2.0/24") is None
        assert await store.greylist_touch("t1", NOW + 800) == (NOW + 700, False)
        assert await store.greylist_prune(NOW + 10_000) == 1
        assert await store.greylist_touch("t1", NOW + 10_001) == (NOW + 10_001, False)

    run(opener, tmp_path, body)


def test_greylist_first_sighting_on_two_stores_at_once(opener: Opener, tmp_path: Path) -> None:
    async def main() -> None:
        async with opened(opener, tmp_path) as one, opened(opener, tmp_path) as two:
            seen = await asyncio.gather(
                *(s.greylist_touch(f"t{i % 3}", NOW + i) for i in range(24)
                  for s in (one, two))
            )
            # Each triplet has one first sighting, whichever store recorded it.
            firsts: dict[str, set[float]] = {f"t{i}": set() for i in range(3)}
            for i, (first, passed) in enumerate(seen):
                firsts[f"t{(i // 2) % 3}"].add(first)
                assert not passed
            assert all(len(f) == 1 for f in firsts.values())

    asyncio.run(main())


def test_bayes_counts(opener: Opener, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        alice, bob = await accounts(store)
        assert await store.bayes_totals(alice) == (0, 0)
        assert await store.bayes_tokens(alice, [1, 2, BIG]) == {}
        assert await store.bayes_tokens(alice, []) == {}
        assert await store.bayes_learn(alice, "m1", [1, 2, 2, BIG], True)
        assert not await store.bayes_learn(alice, "m1", [1, 2, BIG], True)  # counted once
        assert await store.bayes_learn(alice, "m2", [2, 3], False)
        assert await store.bayes_totals(alice) == (1, 1)
        assert await store.bayes_tokens(alice, [1, 2, 3, 4, BIG, 2]) == {
            1: (1, 0), 2: (1, 1), 3: (0, 1), BIG: (1, 0)}
        # Moving m1 to ham takes its spam counts back and adds ham counts.
        assert await store.bayes_learn(alice, "m1", [1, 2, BIG], False)
        assert await store.bayes_totals(alice) == (0, 2)
        assert await store.bayes_tokens(alice, [1, 2, 3, BIG]) == {
            1: (0, 1), 2: (0, 2), 3: (0, 1), BIG: (0, 1)}
        # A moved message whose tokens were never counted never goes below zero.
        assert await store.bayes_learn(alice, "m2", [7], True)
        assert await store.bayes_tokens(alice, [7]) == {7: (1, 0)}
        # Per account; an unknown account learns nothing.
        assert await store.bayes_totals(bob) == (0, 0)
        assert await store.bayes_tokens(bob, [1, 2]) == {}
        assert not await store.bayes_learn(bob + alice + 1000, "m1", [1], True)

    run(opener, tmp_path, body)


def test_bayes_learning_on_two_stores_at_once(opener: Opener, tmp_path: Path) -> None:
    """The same message learned by both stores counts once; different messages sharing
    tokens all count (no update lost, no deadlock)."""

    async def main() -> None:
        async with opened(opener, tmp_path) as one, opened(opener, tmp_path) as two:
            alice, _ = await accounts(one)
            shared = list(range(100, 160))
            learned = await asyncio.gather(
                *(s.bayes_learn(alice, "same", shared, True) for s in (one, two) for _ in range(3))
            )
            assert learned.count(True) == 1
            assert await two.bayes_totals(alice) == (1, 0)
            assert set((await one.bayes_tokens(alice, shared)).values()) == {(1, 0)}
            # Twenty messages, half spam, all with the shared tokens (in varying order).
            results = await asyncio.gather(
                *((one, two)[i % 2].bayes_learn(
                    alice, f"m{i}", shared[i:] + shared[:i] + [1000 + i], i % 2 == 0)
                  for i in range(20))
            )
            assert all(results)
            counts = await one.bayes_tokens(alice, shared)
            assert set(counts.values()) == {(11, 10)}
            assert await one.bayes_totals(alice) == (11, 10)
            # Moving messages on both stores at once moves each exactly once.
            moved = await asyncio.gather(
                *(s.bayes_learn(alice, f"m{i}", [*shared, 1000 + i], False)
                  for i in range(0, 20, 2) for s in (one, two))
            )
            assert moved.count(True) == 10
            assert await two.bayes_totals(alice) == (1, 20)
            assert set((await two.bayes_tokens(alice, shared)).values()) == {(1, 20)}

    asyncio.run(main())


def test_greylist_keys_with_nul(opener: Opener, tmp_path: Path) -> None:
    """filters/greylist.py separates a triplet's parts with NUL: every backend keys on it."""

    async def body(store: Store) -> None:
        key = "192.0.2.0/24\x00s@remote.test\x00a@example.test"
        other = "192.0.2.0/24\x00s@remote.test\x00b@example.test"
        assert await store.greylist_touch(key, NOW) == (NOW, False)
        assert await store.greylist_touch(other, NOW + 1) == (NOW + 1, False)
        await store.greylist_pass(key, "192.0.2.0/24", NOW + 400)
        assert await store.greylist_touch(key, NOW + 500) == (NOW, True)
        await store.greylist_restart(other, NOW + 600)
        assert await store.greylist_touch(other, NOW + 700) == (NOW + 600, False)

    run(opener, tmp_path, body)
