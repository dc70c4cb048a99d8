"""The web pages' sessions (migration 0011, interfaces.WebSessionStore). Write functions run on
the writer connection inside its transaction; ``get`` takes any connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from mailstead.storage.interfaces import WebSessionRow


def put(
    conn: sqlite3.Connection, key: str, account_id: int | None, data: str, created: float,
    last_seen: float,
) -> None:
    conn.execute(
        "INSERT INTO web_sessions (key, account_id, data, created, last_seen)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
        " account_id = excluded.account_id, data = excluded.data,"
        " created = excluded.created, last_seen = excluded.last_seen",
        (key, account_id, data, created, last_seen),
    )


def update(conn: sqlite3.Connection, key: str, data: str, last_seen: float) -> bool:
    cur = conn.execute(
        "UPDATE web_sessions SET data = ?, last_seen = MAX(last_seen, ?) WHERE key = ?",
        (data, last_seen, key),
    )
    return cur.rowcount > 0


def get(conn: sqlite3.Connection, key: str) -> WebSessionRow | None:
    row = conn.execute(
        "SELECT account_id, data, created, last_seen FROM web_sessions WHERE key = ?", (key,)
    ).fetchone()
    if row is None:
        return None
    account_id = None if row[0] is None else int(row[0])
    return WebSessionRow(account_id, str(row[1]), float(row[2]), float(row[3]))


def touch(conn: sqlite3.Connection, key: str, last_seen: float) -> None:
    conn.execute(
        "UPDATE web_sessions SET last_seen = ? WHERE key = ? AND last_seen < ?",
        (last_seen, key, last_seen),
    )


def drop(conn: sqlite3.Connection, keys: Sequence[str]) -> None:
    conn.executemany("DELETE FROM web_sessions WHERE key = ?", [(k,) for k in keys])


def drop_account(conn: sqlite3.Connection, account_id: int, except_key: str | None) -> int:
    cur = conn.execute(
        "DELETE FROM web_sessions WHERE account_id = ? AND key IS NOT ?",
        (account_id, except_key),
    )
    return int(cur.rowcount)


def count(conn: sqlite3.Connection) -> tuple[int, int]:
    row = conn.execute(
        "SELECT COUNT(*) - COUNT(account_id), COUNT(account_id) FROM web_sessions"
    ).fetchone()
    return int(row[0]), int(row[1])


def prune(
    conn: sqlite3.Connection, idle_before: float, created_before: float, max_anonymous: int,
    max_signed_in: int,
) -> int:
    removed = conn.execute(
        "DELETE FROM web_sessions WHERE last_seen < ? OR created < ?",
        (idle_before, created_before),
    ).rowcount
    for kind, cap in (("IS NULL", max_anonymous), ("IS NOT NULL", max_signed_in)):
        # The rows past the first ``cap`` of the kind, most recently seen first (LIMIT -1:
        # no limit, SQLite's way to write an OFFSET alone).
        removed += conn.execute(
            "DELETE FROM web_sessions WHERE key IN (SELECT key FROM web_sessions"  # noqa: S608
            f" WHERE account_id {kind} ORDER BY last_seen DESC LIMIT -1 OFFSET ?)",
            (max(cap, 0),),
        ).rowcount
    return int(removed)
