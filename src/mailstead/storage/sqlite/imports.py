"""Where imported messages came from (migration 0012, interfaces.ImportStore). Write functions
run on the writer connection inside its transaction; ``origins`` takes any connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from mailstead.core.errors import NotFound


def origins(conn: sqlite3.Connection, mailbox_id: int, source: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT origin, blob FROM import_origins WHERE mailbox_id = ? AND source = ?",
        (mailbox_id, source),
    ).fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def add(
    conn: sqlite3.Connection, mailbox_id: int, source: str, rows: Sequence[tuple[str, str]]
) -> None:
    if conn.execute("SELECT 1 FROM mailboxes WHERE id = ?", (mailbox_id,)).fetchone() is None:
        raise NotFound(f"no mailbox with id {mailbox_id}")
    conn.executemany(
        "INSERT INTO import_origins (mailbox_id, source, origin, blob) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (mailbox_id, source, origin) DO NOTHING",
        [(mailbox_id, source, origin, blob) for origin, blob in rows],
    )
