"""Both store backends for every test whose behaviour rests on the store (DESIGN rule 5): the
contract suites (tests/contract/conftest.py) and the unit tests of services built on a store.

A test takes a ``backend`` parameter (``@pytest.mark.parametrize("backend", BACKENDS)`` or a
fixture with ``params=BACKENDS``) and opens its store with ``open_backend``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from mailstead.config.model import StoreConfig
from mailstead.storage import open_store
from mailstead.storage.interfaces import Store
from pgserver import shared_server

BACKENDS = ("postgresql", "sqlite")

# Reopening "the store in this directory" gives the same PostgreSQL database back, as it gives
# the same SQLite file.
_databases: dict[Path, str] = {}


async def open_backend(backend: str, data_dir: Path) -> Store:
    """The embedded store in ``data_dir``, or a store in a database of the test PostgreSQL
    server (fresh for a new ``data_dir``), chosen through ``[store]`` as ``mailstead serve``
    chooses it."""
    if backend == "sqlite":
        return await open_store(data_dir)
    if backend != "postgresql":
        raise ValueError(f"unknown store backend {backend!r}")
    dsn = _databases.get(data_dir)
    if dsn is None:
        dsn = _databases[data_dir] = shared_server().new_database()
    return await open_store(data_dir, StoreConfig(backend="postgresql", dsn=dsn, pool_size=4))


# What a contract suite gets from tests/contract/conftest.py's ``opener`` fixture.
Opener = Callable[[Path], Awaitable[Store]]


@asynccontextmanager
async def opened(opener: Opener, path: Path) -> AsyncIterator[Store]:
    """The store ``opener`` opens in ``path``, closed afterwards."""
    store = await opener(path)
    try:
        yield store
    finally:
        await store.close()


def run_with(opener: Opener, path: Path, body: Callable[[Store], Awaitable[None]]) -> None:
    """Runs ``body`` on a store opened by ``opener`` in ``path``, in a fresh event loop."""
    async def main() -> None:
        async with opened(opener, path) as store:
            await body(store)

    asyncio.run(main())


async def two_accounts(store: Store) -> tuple[int, int]:
    """alice@ and bob@example.test (the domain made first); their ids."""
    await store.add_domain("example.test")
    alice = await store.add_account("alice@example.test", "hash")
    bob = await store.add_account("bob@example.test", "hash")
    return alice.id, bob.id
