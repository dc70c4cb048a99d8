"""Persistent state behind one interface (``interfaces.Store``); the backend is chosen once at
start-up (DESIGN rule 5) by the ``[store]`` table of the config."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailstead.config.model import StoreConfig
    from mailstead.storage.interfaces import Store


async def open_store(data_dir: Path, config: StoreConfig | None = None) -> Store:
    """Opens the store of the installation in ``data_dir``: the embedded SQLite store there
    (created and migrated as needed), or the PostgreSQL database its config names.

    Without ``config``, the ``[store]`` table of ``data_dir``'s mailstead.toml decides (a
    directory without one gets the embedded store). Raises StoreError or ConfigError.
    """
    if config is None:
        from mailstead.config.loader import load_config
        from mailstead.config.model import CONFIG_FILE_NAME

        if (data_dir / CONFIG_FILE_NAME).is_file():
            config = load_config(data_dir).store
    if config is not None and config.backend == "postgresql":
        from mailstead.storage.postgres.store import PostgresStore

        return await PostgresStore.open(config.dsn, config.pool_size)
    from mailstead.storage.space import SpaceGuard
    from mailstead.storage.sqlite.store import SQLiteStore

    if config is None:
        return await SQLiteStore.open(data_dir)
    space = SpaceGuard(data_dir, reserve_mb=config.reserve_mb,
                       reserve_percent=config.reserve_percent)
    return await SQLiteStore.open(
        data_dir, quick=config.check_at_start, space=space, upgrade_backup=config.upgrade_backup
    )
