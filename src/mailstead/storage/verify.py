"""``mailstead verify``: the full check of a store, changing nothing. For the embedded store,
``PRAGMA integrity_check`` (every page, record and index) and every referenced message body
against its SHA-256 name; for PostgreSQL, every body's SHA-256 as the database computes it
(its pages are PostgreSQL's to check: ``pg_amcheck``)."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mailstead.core.errors import StoreError

if TYPE_CHECKING:
    from mailstead.config.model import StoreConfig


@dataclass
class VerifyReport:
    """What ``verify`` found: problems in the database file, and bodies lost or damaged."""

    backend: str
    database: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    bodies: int = 0

    @property
    def ok(self) -> bool:
        return not (self.database or self.missing or self.damaged)


def _verify_sqlite(data_dir: Path) -> VerifyReport:
    from mailstead.storage.blobs import BlobStore
    from mailstead.storage.sqlite import check
    from mailstead.storage.sqlite.store import DB_NAME

    report = VerifyReport("sqlite")
    db_path = data_dir / DB_NAME
    if not db_path.is_file():
        raise StoreError(f"no database at {db_path}")
    # Read-only, and without the store's open (which migrates, so writes): a damaged file
    # must not be written to before it is understood.
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None)
    try:
        report.database = check.integrity_check(conn)
        try:
            blobs = BlobStore(data_dir / "blobs")
            report.bodies, report.missing, report.damaged = check.damaged_blobs(conn, blobs)
        except sqlite3.DatabaseError as exc:
            report.database.append(f"cannot list the message bodies: {exc}")
    finally:
        conn.close()
    return report


async def verify_store(data_dir: Path, config: StoreConfig | None = None) -> VerifyReport:
    """Checks the store of ``data_dir`` (its config's backend); raises StoreError when it
    cannot be read at all."""
    if config is not None and config.backend == "postgresql":
        from mailstead.storage.postgres.store import PostgresStore

        store = await PostgresStore.open(config.dsn, 1)
        try:
            report = VerifyReport("postgresql")
            report.bodies, report.missing, report.damaged = await store.verify_bodies()
            return report
        finally:
            await store.close()
    return await asyncio.to_thread(_verify_sqlite, data_dir)
