"""Persistent state behind one interface (``interfaces.Store``); the backend is chosen once at
start-up (DESIGN rule 5) by the ``[store]`` table of the config."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mailstead.core.errors import StoreError

if TYPE_CHECKING:
    from mailstead.config.model import StoreConfig
    from mailstead.storage.interfaces import Store

log = logging.getLogger(__name__)


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

        backup = _pg_upgrade_backup(config.dsn, data_dir) if config.upgrade_backup else None
        return await PostgresStore.open(config.dsn, config.pool_size, backup)
    from mailstead.storage.space import SpaceGuard
    from mailstead.storage.sqlite.store import SQLiteStore

    if config is None:
        return await SQLiteStore.open(data_dir)
    space = SpaceGuard(data_dir, reserve_mb=config.reserve_mb,
                       reserve_percent=config.reserve_percent)
    return await SQLiteStore.open(
        data_dir, quick=config.check_at_start, space=space, upgrade_backup=config.upgrade_backup
    )


def _pg_upgrade_backup(dsn: str, data_dir: Path) -> Callable[[int, int], Awaitable[None]]:
    """The pre-upgrade backup of a PostgreSQL store: a whole backup into DATA/backups/."""

    async def backup(old: int, new: int) -> None:
        from mailstead.storage.backup import BackupError
        from mailstead.storage.migrate import BACKUP_DIR
        from mailstead.storage.postgres.backup import pre_upgrade_backup

        try:
            snapshot = await pre_upgrade_backup(dsn, data_dir, data_dir / BACKUP_DIR, old, new)
        except BackupError as exc:
            raise StoreError(str(exc)) from None
        log.warning(
            "store.pre_upgrade_backup", extra={"path": str(snapshot), "from": old, "to": new})

    return backup
