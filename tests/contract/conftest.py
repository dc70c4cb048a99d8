"""The backends every contract suite in this folder runs against (DESIGN rule 5): one list,
so a new backend (PostgreSQL, issue 10) is added here once and every suite covers it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from mailstead.storage.interfaces import Store
from mailstead.storage.sqlite.store import SQLiteStore

Opener = Callable[[Path], Awaitable[Store]]
BACKENDS: dict[str, Opener] = {"sqlite": SQLiteStore.open}


@pytest.fixture(params=sorted(BACKENDS))
def opener(request: pytest.FixtureRequest) -> Opener:
    """Opens a store of one backend in a directory; each test runs once per backend."""
    return BACKENDS[request.param]
