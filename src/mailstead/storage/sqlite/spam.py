"""The spam-filter tables (migration 0007): greylisting triplets and networks, Bayesian token
counts and the learned messages. Write functions run on the writer connection inside its
transaction; read functions take any connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

# SQLite's default limit of host parameters per statement is 999 (32766 since 3.32); stay well
# under the older one so any build works.
_CHUNK = 500


def greylist_touch(conn: sqlite3.Connection, triplet: str, now: float) -> tuple[float, bool]:
    conn.execute(
        "INSERT INTO greylist (triplet, first_seen, last_seen) VALUES (?, ?, ?)"
        " ON CONFLICT (triplet) DO UPDATE SET last_seen = excluded.last_seen",
        (triplet, now, now),
    )
    row = conn.execute(
        "SELECT first_seen, passed FROM greylist WHERE triplet = ?", (triplet,)
    ).fetchone()
    return float(row[0]), bool(row[1])


def greylist_restart(conn: sqlite3.Connection, triplet: str, now: float) -> None:
    conn.execute(
        "UPDATE greylist SET first_seen = ?, last_seen = ?, passed = 0 WHERE triplet = ?",
        (now, now, triplet),
    )


def greylist_pass(conn: sqlite3.Connection, triplet: str, network: str, now: float) -> None:
    conn.execute(
        "UPDATE greylist SET passed = 1, last_seen = ? WHERE triplet = ?", (now, triplet)
    )
    conn.execute(
        "INSERT INTO greylist_networks (network, last_seen) VALUES (?, ?)"
        " ON CONFLICT (network) DO UPDATE SET last_seen = excluded.last_seen",
        (network, now),
    )


def greylist_network_seen(conn: sqlite3.Connection, network: str) -> float | None:
    row = conn.execute(
        "SELECT last_seen FROM greylist_networks WHERE network = ?", (network,)
    ).fetchone()
    return None if row is None else float(row[0])


def greylist_prune(conn: sqlite3.Connection, before: float) -> int:
    n = conn.execute("DELETE FROM greylist WHERE last_seen < ?", (before,)).rowcount
    n += conn.execute("DELETE FROM greylist_networks WHERE last_seen < ?", (before,)).rowcount
    return int(n)


def bayes_totals(conn: sqlite3.Connection, account_id: int) -> tuple[int, int]:
    row = conn.execute(
        "SELECT COALESCE(SUM(spam), 0), COALESCE(SUM(1 - spam), 0) FROM bayes_learned"
        " WHERE account_id = ?",
        (account_id,),
    ).fetchone()
    return int(row[0]), int(row[1])


def bayes_tokens(
    conn: sqlite3.Connection, account_id: int, tokens: Sequence[int]
) -> dict[int, tuple[int, int]]:
    found: dict[int, tuple[int, int]] = {}
    unique = sorted(set(tokens))
    for i in range(0, len(unique), _CHUNK):
        part = unique[i:i + _CHUNK]
        marks = ",".join("?" * len(part))
        rows = conn.execute(
            f"SELECT token, spam, ham FROM bayes_tokens WHERE account_id = ?"  # noqa: S608
            f" AND token IN ({marks})",
            (account_id, *part),
        ).fetchall()
        for token, spam, ham in rows:
            found[int(token)] = (int(spam), int(ham))
    return found


def _add(conn: sqlite3.Connection, account_id: int, tokens: Sequence[int], spam: int,
         ham: int) -> None:
    conn.executemany(
        "INSERT INTO bayes_tokens (account_id, token, spam, ham) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (account_id, token) DO UPDATE SET"
        " spam = MAX(0, spam + excluded.spam), ham = MAX(0, ham + excluded.ham)",
        [(account_id, t, spam, ham) for t in sorted(set(tokens))],
    )


def bayes_learn(
    conn: sqlite3.Connection, account_id: int, message: str, tokens: Sequence[int], spam: bool
) -> bool:
    if conn.execute("SELECT 1 FROM accounts WHERE id = ?", (account_id,)).fetchone() is None:
        return False
    row = conn.execute(
        "SELECT spam FROM bayes_learned WHERE account_id = ? AND message = ?",
        (account_id, message),
    ).fetchone()
    if row is not None and bool(row[0]) == spam:
        return False  # learned as this already: counting it twice would skew the counts
    if row is not None:  # learned as the other class: take those counts back first
        _add(conn, account_id, tokens, -1 if not spam else 0, -1 if spam else 0)
    _add(conn, account_id, tokens, 1 if spam else 0, 0 if spam else 1)
    conn.execute(
        "INSERT INTO bayes_learned (account_id, message, spam) VALUES (?, ?, ?)"
        " ON CONFLICT (account_id, message) DO UPDATE SET spam = excluded.spam",
        (account_id, message, int(spam)),
    )
    return True
