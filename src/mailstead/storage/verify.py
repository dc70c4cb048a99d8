"""``mailstead verify``: the full check of a store, and ``--repair`` of what can be fixed
without guessing.

Checked on both backends: every body a message or queue row refers to exists and hashes to its
name; each message's size, wire size and last-line shape agree with its body; per mailbox
UIDNEXT is above every UID and HIGHESTMODSEQ at or above every MODSEQ (messages and QRESYNC
vanished records); per account the quota usage agrees with its messages; no orphan bodies
(unreferenced and older than a grace period, since a delivery writes its body before the row
commits) and no leftover temp files; no text-index document without its body. The embedded
store also runs ``PRAGMA integrity_check``; PostgreSQL's pages are its own (``pg_amcheck``).

The rules shared by both backends live in ``consistency.py``; the SQL in ``sqlite/check.py``
and ``postgres/check.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from mailstead.core.errors import StoreError
from mailstead.storage.consistency import ORPHAN_GRACE, VerifyReport

if TYPE_CHECKING:
    from mailstead.config.model import StoreConfig

__all__ = ["ORPHAN_GRACE", "VerifyReport", "repair_store", "verify_store"]


def _verify_sqlite(data_dir: Path, grace: float) -> VerifyReport:
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
            check.verify_contents(conn, blobs, report, grace)
        except sqlite3.DatabaseError as exc:
            report.database.append(f"cannot list the message bodies: {exc}")
    finally:
        conn.close()
    return report


async def verify_store(
    data_dir: Path, config: StoreConfig | None = None, *, grace: float = ORPHAN_GRACE
) -> VerifyReport:
    """Checks the store of ``data_dir`` (its config's backend), changing nothing; raises
    StoreError when it cannot be read at all."""
    if config is not None and config.backend == "postgresql":
        from mailstead.storage.postgres import check as pg_check
        from mailstead.storage.postgres.store import PostgresStore

        store = await PostgresStore.open(config.dsn, 1)
        try:
            report = VerifyReport("postgresql")
            await pg_check.verify_contents(store.pool, report, grace)
            return report
        finally:
            await store.close()
    return await asyncio.to_thread(_verify_sqlite, data_dir, grace)


async def repair_store(
    data_dir: Path, report: VerifyReport, config: StoreConfig | None = None,
    *, grace: float = ORPHAN_GRACE,
) -> list[str]:
    """Fixes what ``report`` found that needs no guessing, through the store's writer (safe
    while the server runs): UIDNEXT and HIGHESTMODSEQ raised (never lowered), quota usage
    recomputed, orphan bodies and temp leftovers removed, dangling index documents dropped.
    Returns what was done; lost bodies are left for a restore from a backup."""
    if report.database:
        raise StoreError("the database itself is damaged; repair it first (see "
                         "`mailstead verify --help`), then run verify --repair again")
    if config is not None and config.backend == "postgresql":
        from mailstead.storage.postgres import check as pg_check
        from mailstead.storage.postgres.store import PostgresStore

        pg = await PostgresStore.open(config.dsn, 1)
        try:
            done = await pg_check.repair(pg.pool, report.orphans, grace)
            removed = await pg.collect_garbage(grace) if report.orphans else 0
            if removed:
                done.append(f"removed {removed} orphan bodies")
            return done
        finally:
            await pg.close()
    from mailstead.storage.sqlite.store import SQLiteStore

    store = await SQLiteStore.open(data_dir)
    try:
        return await store.repair_contents(report.orphans, report.temps, grace)
    finally:
        await store.close()
