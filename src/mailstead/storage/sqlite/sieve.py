"""Sieve scripts and the Sieve send log (interfaces.SieveStore) on SQLite.

Write functions run inside the writer's ``BEGIN IMMEDIATE`` transaction and raise a
StoreError subclass to roll it back; reads take any connection.
"""

from __future__ import annotations

import sqlite3

from mailstead.core.errors import AlreadyExists, InUse, NotFound
from mailstead.storage.interfaces import SieveScript
from mailstead.storage.sqlite.writer import inbox_name


def _check_account(conn: sqlite3.Connection, account_id: int) -> None:
    if conn.execute("SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone() is None:
        raise NotFound(f"no account {account_id}")


def put_script(conn: sqlite3.Connection, account_id: int, name: str, content: str,
               now: float) -> None:
    _check_account(conn, account_id)
    conn.execute(
        "INSERT INTO sieve_scripts (account_id, name, content, active, updated_at)"
        " VALUES (?, ?, ?, 0, ?) ON CONFLICT (account_id, name)"
        " DO UPDATE SET content = excluded.content, updated_at = excluded.updated_at",
        (account_id, name, content, now),
    )


def get_script(conn: sqlite3.Connection, account_id: int, name: str) -> SieveScript | None:
    row = conn.execute(
        "SELECT name, content, active, updated_at FROM sieve_scripts"
        " WHERE account_id = ? AND name = ?", (account_id, name)).fetchone()
    return None if row is None else SieveScript(row[0], row[1], bool(row[2]), float(row[3]))


def active_script(conn: sqlite3.Connection, account_id: int) -> SieveScript | None:
    row = conn.execute(
        "SELECT name, content, active, updated_at FROM sieve_scripts"
        " WHERE account_id = ? AND active = 1", (account_id,)).fetchone()
    return None if row is None else SieveScript(row[0], row[1], True, float(row[3]))


def mailbox_exists(conn: sqlite3.Connection, account_id: int, name: str) -> bool:
    """Whether the account has mailbox ``name`` (INBOX in any case): one probe of the
    (account_id, name) index, without the message counts ``get_mailbox`` adds."""
    return conn.execute("SELECT 1 FROM mailboxes WHERE account_id = ? AND name = ?",
                        (account_id, inbox_name(name))).fetchone() is not None


def list_scripts(conn: sqlite3.Connection, account_id: int) -> list[SieveScript]:
    rows = conn.execute(
        "SELECT name, content, active, updated_at FROM sieve_scripts WHERE account_id = ?"
        " ORDER BY name", (account_id,)).fetchall()
    return [SieveScript(r[0], r[1], bool(r[2]), float(r[3])) for r in rows]


def set_active(conn: sqlite3.Connection, account_id: int, name: str | None) -> None:
    if name is not None and get_script(conn, account_id, name) is None:
        raise NotFound(f"no script {name!r}")
    conn.execute("UPDATE sieve_scripts SET active = 0 WHERE account_id = ? AND active = 1",
                 (account_id,))
    if name is not None:
        conn.execute("UPDATE sieve_scripts SET active = 1 WHERE account_id = ? AND name = ?",
                     (account_id, name))


def delete_script(conn: sqlite3.Connection, account_id: int, name: str) -> None:
    script = get_script(conn, account_id, name)
    if script is None:
        raise NotFound(f"no script {name!r}")
    if script.active:
        # RFC 5804 section 2.10: the active script cannot be deleted.
        raise InUse(f"script {name!r} is active")
    conn.execute("DELETE FROM sieve_scripts WHERE account_id = ? AND name = ?",
                 (account_id, name))


def rename_script(conn: sqlite3.Connection, account_id: int, old: str, new: str) -> None:
    if get_script(conn, account_id, old) is None:
        raise NotFound(f"no script {old!r}")
    if old != new and get_script(conn, account_id, new) is not None:
        raise AlreadyExists(f"script {new!r} exists already")
    conn.execute("UPDATE sieve_scripts SET name = ? WHERE account_id = ? AND name = ?",
                 (new, account_id, old))


def count_events(conn: sqlite3.Connection, account_id: int, kind: str, key: str | None,
                 since: float) -> int:
    if key is None:
        row = conn.execute(
            "SELECT COUNT(*) FROM sieve_log WHERE account_id = ? AND kind = ? AND at >= ?",
            (account_id, kind, since)).fetchone()
    else:
        row = conn.execute(
            "SELECT COUNT(*) FROM sieve_log WHERE account_id = ? AND kind = ? AND key = ?"
            " AND at >= ?", (account_id, kind, key, since)).fetchone()
    return int(row[0])


def add_event(conn: sqlite3.Connection, account_id: int, kind: str, key: str,
              at: float) -> None:
    conn.execute("INSERT INTO sieve_log (account_id, kind, key, at) VALUES (?, ?, ?, ?)",
                 (account_id, kind, key, at))


def prune_events(conn: sqlite3.Connection, before: float) -> int:
    return conn.execute("DELETE FROM sieve_log WHERE at < ?", (before,)).rowcount
