"""The PostgreSQL store's plumbing: the connection pool, migrations, and change notification
across nodes (LISTEN/NOTIFY). The operations live in mixins beside this file, one per part
of the store interface, each using only what ``PgBase`` offers.

Conventions every mixin follows:
- every operation takes a pooled connection (``self.pool.acquire()``) and, when it writes
  more than one statement, runs in ``conn.transaction()``; asyncpg errors become StoreError
  (``db_errors``), except the interface's own NotFound/AlreadyExists/InUse;
- a change to an account's mailboxes (delivery, flags, expunge, copy, create, delete,
  rename) calls ``await self.notify(conn, account_ids)`` inside its transaction: PostgreSQL
  delivers the notification at commit, to this node and every other one, and each node's
  listener wakes its own ``hub`` watchers (IMAP IDLE, POP3/IMAP consistency);
- times are Unix seconds as DOUBLE PRECISION, booleans SMALLINT 0/1 as in the SQLite schema,
  so the two backends' rows look alike and ``store migrate`` copies them unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import asyncpg

from mailstead.core.errors import CorruptData, DiskFull, StoreError
from mailstead.storage.integrity import VERIFY_HINT, Integrity
from mailstead.storage.migrate import (
    STORE_META_DDL,
    load_migrations,
    newer_store_message,
    stamp_values,
)
from mailstead.storage.postgres.fts import BackgroundIndexer
from mailstead.storage.watch import Watch, WatchHub

log = logging.getLogger(__name__)

CHANNEL = "mailstead_changes"
# Serialises migrations of several nodes starting at once (any constant unique to us).
MIGRATION_LOCK = 0x6D61696C73746561  # "mailstea"
# How long the listener waits before reconnecting after losing its connection.
RECONNECT_DELAY = 1.0
# PostgreSQL error codes (Appendix A, class XX): a damaged table or index page.
CORRUPTION_STATES = frozenset({"XX001", "XX002"})
# Class 53: disk_full; a temporary failure the caller answers as a full disk (452 4.3.1).
DISK_FULL_STATE = "53100"


@contextlib.asynccontextmanager
async def db_errors(what: str = "database operation") -> AsyncIterator[None]:
    """Turns driver and connection errors into StoreError (the caller answers 4xx/NO), and a
    damaged page (data_corrupted, index_corrupted) into CorruptData (permanent)."""
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        if getattr(exc, "sqlstate", None) in CORRUPTION_STATES:
            log.error("store.database_corrupt: %s failed: %s; %s", what, exc, VERIFY_HINT)
            raise CorruptData(f"{what} failed, the database is damaged: {exc}") from exc
        if getattr(exc, "sqlstate", None) == DISK_FULL_STATE:
            raise DiskFull(f"{what} failed, the database server's disk is full") from exc
        raise StoreError(f"{what} failed: {exc}") from exc


class PgBase:
    """Pool, listener and hub of one node's connection to the shared database."""

    networked = True

    def __init__(self, dsn: str, pool: asyncpg.Pool, hub: WatchHub) -> None:
        self.dsn = dsn
        self.pool = pool
        self.hub = hub
        self.integrity = Integrity()
        self._listener: asyncpg.Connection | None = None
        self._listen_task: asyncio.Task[None] | None = None
        self._closed = False
        self.indexer = BackgroundIndexer(pool)

    @classmethod
    async def connect(cls, dsn: str, pool_size: int = 10,
                      upgrade_backup: UpgradeBackup | None = None) -> Any:
        """Opens the pool, migrates the schema (``upgrade_backup`` first, when an existing
        schema is upgraded) and starts listening for changes."""
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=max(1, pool_size), command_timeout=60
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {_safe(dsn)}: {exc}") from exc
        assert pool is not None
        try:
            await migrate_postgres(pool, upgrade_backup)
            store = cls(dsn, pool, WatchHub())
            await store._listen()
        except BaseException:
            await pool.close()
            raise
        return store

    async def _listen(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(self.dsn)
        await conn.add_listener(CHANNEL, self._on_notify)
        conn.add_termination_listener(self._on_lost)
        self._listener = conn

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        ids = [int(part) for part in payload.split(",") if part.strip().isdigit()]
        if ids:
            self.hub.publish(ids)

    def _on_lost(self, _conn: object) -> None:
        if self._closed:
            return
        log.warning("store.listener_lost: reconnecting to PostgreSQL for change notifications")
        self._listener = None
        self._listen_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        while not self._closed:
            await asyncio.sleep(RECONNECT_DELAY)
            try:
                await self._listen()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.warning("store.listener_reconnect_failed: %s", exc)
                continue
            # Notifications sent while we were away are lost: wake every watcher once.
            self.hub.publish_all()
            return

    async def notify(self, conn: asyncpg.Connection, account_ids: Iterable[int]) -> None:
        """Announces a change of these accounts' mailboxes; delivered at commit."""
        payload = ",".join(str(i) for i in sorted(set(account_ids)))
        if payload:
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)

    def start_indexing(self) -> None:
        self.check_open()
        self.indexer.start()

    def check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    def watch(self, account_id: int) -> Watch:
        return self.hub.watch(account_id)

    async def close(self) -> None:
        """Closes the listener and the pool. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.indexer.stop()
        if self._listen_task is not None:
            self._listen_task.cancel()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        await self.pool.close()


def _safe(dsn: str) -> str:
    """The DSN without its password, for messages."""
    head, sep, tail = dsn.partition("@")
    if not sep or "://" not in head:
        return dsn
    scheme, _, userinfo = head.partition("://")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}@{tail}"


# Called once before an existing database's schema is upgraded, with the old and new schema
# numbers; it makes the pre-upgrade backup (storage/__init__.py wires postgres/backup.py in,
# which this module cannot import: it builds on the store).
UpgradeBackup = Callable[[int, int], Awaitable[None]]


async def pre_upgrade_backup_postgres(
    backup: UpgradeBackup | None, old: int, new: int
) -> None:
    """Runs the pre-upgrade backup, or says in the log that there is none."""
    if backup is not None:
        await backup(old, new)
        return
    log.warning(
        "store.upgrade: upgrading the PostgreSQL schema from %d to %d without a backup "
        "([store] upgrade_backup = false); each step is one transaction",
        old, new,
    )


async def migrate_postgres(pool: asyncpg.Pool, upgrade_backup: UpgradeBackup | None = None) -> int:
    """Brings the schema up to the newest migration under an advisory lock (several nodes may
    start at once); each step is one transaction, so a node killed half-way leaves the
    previous step in place and the next start carries on. Returns the resulting version."""
    steps = load_migrations("mailstead.storage.postgres", "migrations")
    latest = steps[-1].version if steps else 0
    async with pool.acquire() as conn, db_errors("migrating the PostgreSQL schema"):
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at DOUBLE PRECISION NOT NULL)"
        )
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(STORE_META_DDL)
            version = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            rows = await conn.fetch("SELECT key, value FROM store_meta")
            meta = {str(r["key"]): str(r["value"]) for r in rows}
        if version > latest:
            raise StoreError(newer_store_message(meta, int(version), latest))
        start = int(version)
        if 0 < start < latest:
            await pre_upgrade_backup_postgres(upgrade_backup, start, latest)
        for step in steps:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                done = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
                if done >= step.version:
                    version = done
                    continue
                await conn.execute(step.sql)
                await conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
                    step.version, step.name, time.time(),
                )
                version = step.version
        values = stamp_values(meta, int(version), int(version) != start)
        if values != meta:
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO store_meta (key, value) VALUES ($1, $2)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    sorted(values.items()),
                )
    return int(version)
