"""Persistent state behind one interface (``interfaces.Store``); the backend is chosen once at
start-up (DESIGN rule 5)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailstead.storage.interfaces import Store


async def open_store(data_dir: Path) -> Store:
    """Opens the embedded SQLite store in ``data_dir`` (created and migrated as needed).

    A coroutine because opening does file I/O; raises StoreError.
    """
    from mailstead.storage.sqlite.store import SQLiteStore

    return await SQLiteStore.open(data_dir)
