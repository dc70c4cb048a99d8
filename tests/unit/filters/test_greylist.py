"""Greylisting over the real store of each backend with an injected clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailstead.filters.greylist import Greylist, GreyResult, client_network, triplet_key
from storebackends import BACKENDS, open_backend


def test_networks_and_keys() -> None:
    assert client_network("192.0.2.77") == "192.0.2.0/24"
    assert client_network("::ffff:192.0.2.77") == "192.0.2.0/24"
    assert client_network("2001:db8:1:2:3::4") == "2001:db8:1:2::/64"
    assert client_network("not-an-ip") == "not-an-ip"
    assert triplet_key("n", "A@X.test", "B@Y.test") == triplet_key("n", "a@x.test", "b@y.test")


@pytest.mark.parametrize("backend", BACKENDS)
def test_delay_retry_window_and_auto_allow(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        store = await open_backend(backend, tmp_path)
        now = [10_000.0]
        grey = Greylist(store, lambda: now[0])
        try:
            assert await grey.check("192.0.2.1", "s@r.test", ["a@l.test"]) is GreyResult.DEFER
            now[0] += 60
            assert await grey.check("192.0.2.1", "s@r.test", ["a@l.test"]) is GreyResult.DEFER
            now[0] += 300  # a retry from another address of the same /24 counts
            assert await grey.check("192.0.2.200", "s@r.test", ["a@l.test"]) is GreyResult.ALLOWED
            # The network is allowed now: a new triplet passes at once.
            assert await grey.check("192.0.2.9", "new@r.test", ["b@l.test"]) is GreyResult.PASS
            # Another network: a first retry after the retry window starts over.
            assert await grey.check("198.51.100.1", "s@r.test", ["a@l.test"]) is GreyResult.DEFER
            now[0] += 2 * 86400
            assert await grey.check("198.51.100.1", "s@r.test", ["a@l.test"]) is GreyResult.DEFER
            now[0] += 301
            assert await grey.check("198.51.100.1", "s@r.test", ["a@l.test"]) is GreyResult.ALLOWED
            # Every recipient must have waited.
            assert await grey.check("203.0.113.1", "s@r.test",
                                    ["a@l.test", "b@l.test"]) is GreyResult.DEFER
            # Records unused for the lifetime are forgotten.
            now[0] += 40 * 86400
            assert await grey.prune() > 0
            assert await grey.check("192.0.2.9", "new@r.test", ["b@l.test"]) is GreyResult.DEFER
        finally:
            await store.close()

    asyncio.run(main())
