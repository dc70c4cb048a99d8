"""The backends every contract suite in this folder runs against (DESIGN rule 5): the list in
tests/storebackends.py, so every suite covers the embedded SQLite store and the PostgreSQL
store (issue 10)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from mailstead.storage.interfaces import Store
from storebackends import BACKENDS, open_backend

Opener = Callable[[Path], Awaitable[Store]]


@pytest.fixture(params=sorted(BACKENDS))
def opener(request: pytest.FixtureRequest) -> Opener:
    """Opens a store of one backend in a directory; each test runs once per backend."""
    return functools.partial(open_backend, request.param)
