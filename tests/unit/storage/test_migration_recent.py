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
from mailstead.storage.interfaces import RecentInfo
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
    """The same on PostgreSQL: a store built by the migrations up to 12, with a mailbox, is
    upgraded by opening it."""

    dsn = shared_server().new_database()

    async def main() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at DOUBLE PRECISION NOT NULL)")
            for step in load_migrations("mailstead.storage.postgres", "migrations"):
                if step.version <= 12:
                    await conn.execute(step.sql)
                    await conn.execute("INSERT INTO schema_version VALUES ($1, $2, 0)",
                                       step.version, step.name)
            await conn.execute("INSERT INTO domains (name, created_at) VALUES ('example.test', 0)")
            await conn.execute(
                "INSERT INTO accounts (domain_id, address, address_key, password_hash,"
                " created_at) SELECT id, 'a@example.test', 'a@example.test', 'h', 0"
                " FROM domains")
            mailbox = await conn.fetchval(
                "INSERT INTO mailboxes (account_id, name, uidvalidity, uidnext)"
                " SELECT id, 'INBOX', 1, 9 FROM accounts RETURNING id")
            account = await conn.fetchval("SELECT id FROM accounts")
        finally:
            await conn.close()
        store = await open_store(tmp_path, StoreConfig(backend="postgresql", dsn=dsn,
                                                       pool_size=2, upgrade_backup=False))
        try:
            assert await store.recent_info(mailbox) == RecentInfo(9, 0)
            made = await store.create_mailbox(account, "New")
            assert await store.recent_info(made.id) == RecentInfo(1, 0)
        finally:
            await store.close()

    asyncio.run(main())
