"""Both store backends for every test whose behaviour rests on the store (DESIGN rule 5): the
contract suites (tests/contract/conftest.py) and the unit tests of services built on a store.

A test takes a ``backend`` parameter (``@pytest.mark.parametrize("backend", BACKENDS)`` or a
fixture with ``params=BACKENDS``) and opens its store with ``open_backend``.
"""

from __future__ import annotations

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
