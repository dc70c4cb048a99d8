"""The Bayesian classifier: tokens, the combination, and learning per account in the store
(each backend)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailstead.filters.bayes import BayesClassifier, combine, token_probability, tokens
from storebackends import BACKENDS, open_backend


def msg(subject: str, body: str) -> bytes:
    return (f"From: x@remote.test\r\nTo: a@example.test\r\nSubject: {subject}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


SPAM = [msg(f"Cheap pills offer {i}", f"buy viagra casino lottery winner prize {i} "
            "click http://pills.spam.test/now unsubscribe") for i in range(12)]
HAM = [msg(f"Meeting notes {i}", f"hello team, the project meeting agenda for sprint {i} "
           "is attached; see the quarterly report draft") for i in range(12)]


def test_tokens_are_stable_distinct_and_include_header_and_url_tokens() -> None:
    a = tokens(SPAM[0])
    assert a == tokens(SPAM[0])
    assert a == sorted(set(a))
    assert all(0 <= t < 2**63 for t in a)
    assert set(tokens(msg("x", "visit http://pills.spam.test/"))) & set(a)


def test_hostile_input_never_raises() -> None:
    for data in (b"", b"\xff\xfe\x00garbage", b"Content-Type: multipart/mixed; boundary=\r\n"
                 b"\r\n--\r\n--\r\n" * 1000, b"Subject: =?bogus?Q?x?=\r\n\r\n" + b"a" * 10**6):
        assert isinstance(tokens(data), list)


def test_probability_and_combination() -> None:
    assert token_probability(0, 0, 10, 10) == 0.5
    assert token_probability(10, 0, 10, 10) > 0.9
    assert token_probability(0, 10, 10, 10) < 0.1
    assert combine([0.99] * 20) > 0.95
    assert combine([0.01] * 20) < 0.05
    assert combine([]) == 0.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_learn_then_classify_per_account(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        store = await open_backend(backend, tmp_path)
        try:
            await store.add_domain("example.test")
            alice = await store.add_account("alice@example.test", "x")
            bob = await store.add_account("bob@example.test", "x")
            bayes = BayesClassifier(store)
            assert (await bayes.classify(alice.id, SPAM[0])).probability is None  # untrained
            for m in SPAM[:11]:
                assert await bayes.learn(alice.id, m, True)
            for m in HAM[:11]:
                assert await bayes.learn(alice.id, m, False)
            assert not await bayes.learn(alice.id, SPAM[0], True)  # counted once
            assert await store.bayes_totals(alice.id) == (11, 11)
            spam = await bayes.classify(alice.id, SPAM[11])
            ham = await bayes.classify(alice.id, HAM[11])
            assert spam.probability is not None
            assert spam.probability > 0.9
            assert ham.probability is not None
            assert ham.probability < 0.1
            assert (await bayes.classify(bob.id, SPAM[11])).probability is None
            # Moving a message out of Junk moves its counts: totals stay consistent.
            assert await bayes.learn(alice.id, SPAM[0], False)
            assert await store.bayes_totals(alice.id) == (10, 12)
            assert not await bayes.learn(999, SPAM[0], True)  # no such account
        finally:
            await store.close()

    asyncio.run(main())
