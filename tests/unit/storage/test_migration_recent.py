"""Migration 0013 (\\Recent kept in the store) on an SQLite store of schema 12: mailboxes that
existed before it start with nothing recent, so an upgrade makes no old mail recent; one made
afterwards starts with everything recent."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mailstead.storage.migrate import load_migrations, migrate_sqlite


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
