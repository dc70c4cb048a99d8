"""The tables of state that must hold across nodes (migration 0009): leases (the POP3 maildrop
lock) and failed-login counts. With SQLite there is one node, so the server keeps its login
counters in memory (``Store.networked`` is False); these functions make the embedded store a
complete ``SharedStateStore`` all the same, so the two backends behave alike. Write functions
run on the writer connection inside its transaction; read functions take any connection."""

from __future__ import annotations

import sqlite3

NETWORK = "network"
ACCOUNT = "account"


def acquire_lease(
    conn: sqlite3.Connection, name: str, owner: str, now: float, ttl: float
) -> bool:
    # One upsert: the row is written when the lease is new, expired or already the owner's;
    # otherwise the DO UPDATE's WHERE is false and no row changes (rowcount 0).
    cur = conn.execute(
        "INSERT INTO leases (name, owner, until) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until"
        " WHERE leases.owner = excluded.owner OR leases.until <= ?",
        (name, owner, now + ttl, now),
    )
    return cur.rowcount > 0


def release_lease(conn: sqlite3.Connection, name: str, owner: str) -> None:
    conn.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))


def add_auth_failure(conn: sqlite3.Connection, network: str, account: str, at: float) -> None:
    conn.executemany(
        "INSERT INTO auth_failures (kind, key, at) VALUES (?, ?, ?)",
        [(NETWORK, network, at), (ACCOUNT, account, at)],
    )


def auth_failures(
    conn: sqlite3.Connection, network: str, account: str, since: float
) -> tuple[int, int]:
    row = conn.execute(
        "SELECT (SELECT COUNT(*) FROM auth_failures WHERE kind = ? AND key = ? AND at > ?),"
        " (SELECT COUNT(*) FROM auth_failures WHERE kind = ? AND key = ? AND at > ?)",
        (NETWORK, network, since, ACCOUNT, account, since),
    ).fetchone()
    return int(row[0]), int(row[1])


def clear_auth_failures(conn: sqlite3.Connection, network: str) -> None:
    conn.execute("DELETE FROM auth_failures WHERE kind = ? AND key = ?", (NETWORK, network))


def prune_auth_failures(conn: sqlite3.Connection, before: float) -> int:
    return int(conn.execute("DELETE FROM auth_failures WHERE at <= ?", (before,)).rowcount)
