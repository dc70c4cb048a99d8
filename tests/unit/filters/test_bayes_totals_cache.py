"""The Bayesian classifier keeps each account's learned totals briefly: an untrained account
costs no store read per message, and learning shows at once."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from mailstead.filters.bayes import BayesClassifier

MESSAGE = b"From: x@remote.test\r\nSubject: hello there\r\n\r\nsome words of a body\r\n"


class CountingStore:
    """A SpamStore that counts the reads of totals."""

    def __init__(self) -> None:
        self.totals: dict[int, tuple[int, int]] = {}
        self.totals_reads = 0
        self.learned: list[tuple[int, bool]] = []

    async def bayes_totals(self, account_id: int) -> tuple[int, int]:
        self.totals_reads += 1
        return self.totals.get(account_id, (0, 0))

    async def bayes_tokens(self, account_id: int,
                           tokens: Sequence[int]) -> dict[int, tuple[int, int]]:
        return {t: (5, 0) for t in tokens}

    async def bayes_learn(self, account_id: int, message: str, tokens: Sequence[int],
                          spam: bool) -> bool:
        self.learned.append((account_id, spam))
        self.totals[account_id] = (20, 20)
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_totals_read_once_per_ttl_and_dropped_on_learn() -> None:
    store = CountingStore()
    clock = Clock()
    bayes = BayesClassifier(store, totals_ttl=30.0, clock=clock)  # type: ignore[arg-type]

    async def main() -> None:
        for _ in range(5):
            assert (await bayes.classify(1, MESSAGE)).probability is None  # untrained
        assert store.totals_reads == 1
        await bayes.classify(2, MESSAGE)  # each account has its own totals
        assert store.totals_reads == 2
        clock.now += 31
        await bayes.classify(1, MESSAGE)
        assert store.totals_reads == 3
        # Learning makes the next message read the new totals: now trained, a verdict.
        assert await bayes.learn(1, MESSAGE, True)
        verdict = await bayes.classify(1, MESSAGE)
        assert store.totals_reads == 4
        assert verdict.probability is not None
        assert verdict.probability > 0.5
        # Account 2's totals changed behind this classifier's back (another node): the old
        # ones are used until they expire, then the new ones.
        await bayes.classify(2, MESSAGE)  # account 2's totals kept again from now on
        store.totals[2] = (20, 20)
        assert (await bayes.classify(2, MESSAGE)).probability is None
        clock.now += 31
        assert (await bayes.classify(2, MESSAGE)).probability is not None

    asyncio.run(main())


def test_zero_ttl_reads_every_time() -> None:
    store = CountingStore()
    bayes = BayesClassifier(store, totals_ttl=0.0)  # type: ignore[arg-type]

    async def main() -> None:
        for _ in range(3):
            await bayes.classify(1, MESSAGE)

    asyncio.run(main())
    assert store.totals_reads == 3
