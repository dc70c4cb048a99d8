"""The ``run`` fixture: ``run(body)`` runs ``async body(world)`` on a fresh store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from imap_driver import Body, run_world


@pytest.fixture
def run(tmp_path: Path) -> Callable[[Body], None]:
    return lambda body: run_world(tmp_path, body)
