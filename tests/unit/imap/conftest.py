"""The ``run`` fixture: ``run(body)`` runs ``async body(world)`` on a fresh store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from imap_driver import Body, run_world

from storebackends import BACKENDS


@pytest.fixture(params=BACKENDS)
def run(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[Body], None]:
    """Runs an IMAP session test on each store backend."""
    backend: str = request.param
    return lambda body: run_world(tmp_path, body, backend)
