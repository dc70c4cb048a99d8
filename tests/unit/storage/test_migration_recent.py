"""Migration 0013 (\\Recent kept in the store) on a store of schema 12, on both backends:
mailboxes that existed before it start with nothing recent, so an upgrade makes no old mail
recent; one made afterwards starts with everything recent."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import asyncpg

from mailstead.config.model import StoreConfig
from mailstead.storage import open_store
from mailstead.storage.interfaces import RecentInfo, Store
from mailstead.storage.migrate import load_migrations, migrate_sqlite
from pgserver import shared_server


def test_existing_mailboxes_start_with_nothing_recent(tmp_path: Path) -> None:
    steps = load_migrations()
    assert [m.name for m in steps if m.version == 13] == ["first_recent_uid"]
    conn = sqlite3.connect(tmp_path / "db", isolation_level=None)
    try:
        assert migrate_sqlite(conn, [m for m in steps if m.version <= 12]) == 12
        conn.execute("INSERT INTO domains (name, created_at) VALUES ('example.test', 0)")
        conn.execute(
            "INSERT INTO accounts (domain_id, address, address_key, password_hash, created_at)"
            " SELECT id, 'a@example.test', 'a@example.test', 'h', 0 FROM domains"
        )
        conn.execute(
            "INSERT INTO mailboxes (account_id, name, uidvalidity, uidnext)"
            " SELECT id, 'INBOX', 1, 7 FROM accounts"
        )
        assert migrate_sqlite(conn, steps) == len(steps)
        assert conn.execute("SELECT first_recent_uid FROM mailboxes").fetchall() == [(7,)]
        conn.execute(
            "INSERT INTO mailboxes (account_id, name, uidvalidity) SELECT id, 'New', 2"
            " FROM accounts"
        )
        row = conn.execute("SELECT first_recent_uid FROM mailboxes WHERE name = 'New'")
        assert row.fetchone() == (1,)
    finally:
        conn.close()


def test_postgresql_existing_mailboxes_start_with_nothing_recent(tmp_path: Path) -> None:
    """The same on PostgreSQL: a store taken back to schema 12, with mail, is upgraded."""

    dsn = shared_server().new_database()

    async def opened() -> Store:
        return await open_store(tmp_path, StoreConfig(backend="postgresql", dsn=dsn,
                                                      pool_size=2))

    async def main() -> None:
        store = await opened()
        try:
            await store.add_domain("example.test")
            account = await store.add_account("a@example.test", "h")
            info = await store.get_mailbox(account.id, "INBOX")
            assert info is not None
        finally:
            await store.close()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("ALTER TABLE mailboxes DROP COLUMN first_recent_uid")
            await conn.execute("DELETE FROM schema_version WHERE version = 13")
            await conn.execute("UPDATE mailboxes SET uidnext = 9 WHERE id = $1", info.id)
        finally:
            await conn.close()
        store = await opened()
        try:
            assert await store.recent_info(info.id) == RecentInfo(9, 0)
            made = await store.create_mailbox(account.id, "New")
            assert await store.recent_info(made.id) == RecentInfo(1, 0)
        finally:
            await store.close()

    asyncio.run(main())
