"""The outbound queue and DKIM key transactions (``interfaces.OutboundStore``) in SQL.

Functions taking a connection run either on the writer connection inside its ``BEGIN
IMMEDIATE`` transaction (the writes) or on a reader connection in a snapshot (the reads).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from mailstead.core.errors import AlreadyExists, InUse, NotFound, StoreError
from mailstead.storage.interfaces import DkimKey, QueueEntry, QueueUpdate
from mailstead.storage.queuedsn import DSN_COLUMNS, entry_fields

QUEUE_COLUMNS = (
    "id, queue_id, mail_from, rcpt_to, blob, state, attempts, next_attempt, created_at,"
    " last_error, warned, last_attempt, " + DSN_COLUMNS
)
FINAL_STATES = ("delivered", "bounced")
UPDATE_STATES = ("delivered", "deferred", "bounced")
# SQLite's default SQLITE_MAX_VARIABLE_NUMBER is 32766 since 3.32; stay far below it.
_CHUNK = 500


def entry(row: Sequence[object]) -> QueueEntry:
    """A ``QueueEntry`` from a row selected with ``QUEUE_COLUMNS``."""
    return QueueEntry(
        id=int(row[0]),  # type: ignore[call-overload]
        queue_id=str(row[1]),
        mail_from=str(row[2]),
        rcpt_to=str(row[3]),
        blob=str(row[4]),
        state=str(row[5]),
        attempts=int(row[6]),  # type: ignore[call-overload]
        next_attempt=float(row[7]),  # type: ignore[arg-type]
        created_at=float(row[8]),  # type: ignore[arg-type]
        last_error=None if row[9] is None else str(row[9]),
        warned=bool(row[10]),
        last_attempt=None if row[11] is None else float(row[11]),  # type: ignore[arg-type]
        **entry_fields(tuple(row[12:17])),  # type: ignore[arg-type]
    )


def _due_ids(conn: sqlite3.Connection, state: str, now: float, limit: int) -> list[int]:
    rows = conn.execute(
        "SELECT id FROM queue WHERE state = ? AND next_attempt <= ?"
        " ORDER BY next_attempt, id LIMIT ?",
        (state, now, limit),
    ).fetchall()
    return [int(r[0]) for r in rows]


def claim_due(
    conn: sqlite3.Connection, now: float, limit: int, lease: float, owner: str = ""
) -> list[QueueEntry]:
    """Moves up to ``limit`` due rows to "active" with a lease, and returns them.

    Fairness (DESIGN rule 7, Postfix qmgr's split between the incoming and deferred queues):
    each class is guaranteed half the batch when it has that much due work, and either class
    may use what the other leaves, so neither new mail nor retries can starve the other.
    """
    if limit <= 0:
        return []
    fresh = _due_ids(conn, "queued", now, limit)
    retry = _due_ids(conn, "deferred", now, limit)
    half = max(1, limit // 2)
    n_retry = min(len(retry), max(limit - len(fresh), half))
    n_fresh = min(len(fresh), limit - n_retry)
    chosen = fresh[:n_fresh] + retry[:n_retry]
    claimed: list[QueueEntry] = []
    for start in range(0, len(chosen), _CHUNK):
        part = chosen[start : start + _CHUNK]
        marks = ",".join("?" * len(part))
        rows = conn.execute(
            f"UPDATE queue SET state = 'active', next_attempt = ?, claimed_by = ?"  # noqa: S608
            f" WHERE id IN ({marks}) RETURNING {QUEUE_COLUMNS}",
            (now + lease, owner, *part),
        ).fetchall()
        claimed.extend(entry(r) for r in rows)
    # One message's rows together, so the worker can group them into one transaction.
    claimed.sort(key=lambda e: (e.queue_id, e.id))
    return claimed


def update_queue(conn: sqlite3.Connection, updates: Sequence[QueueUpdate], now: float) -> None:
    """Records outcomes; rows in a final state (or deleted) are not touched."""
    for update in updates:
        if update.state not in UPDATE_STATES:
            raise StoreError(f"bad queue state {update.state!r}")
        if update.state == "deferred" and update.next_attempt is None:
            raise StoreError("a deferred queue row needs a next attempt time")
    conn.executemany(
        "UPDATE queue SET state = ?, next_attempt = COALESCE(?, next_attempt),"
        " last_error = COALESCE(?, last_error), attempts = attempts + 1,"
        " warned = MAX(warned, ?), last_attempt = ?"
        " WHERE id = ? AND state NOT IN ('delivered', 'bounced')",
        [
            (u.state, u.next_attempt, u.last_error, int(u.warned), now, u.id)
            for u in updates
        ],
    )


def recover_active(conn: sqlite3.Connection, now: float, owner: str | None = None) -> int:
    """Active rows whose lease ran out (or claimed by ``owner``) go back to "queued", due at
    once and in their original order (``next_attempt = created_at``). ``now = inf`` recovers
    every active row: at start-up no lease of this data directory can be held by a live
    process."""
    cursor = conn.execute(
        "UPDATE queue SET state = 'queued', next_attempt = created_at, claimed_by = ''"
        " WHERE state = 'active' AND (next_attempt <= ? OR claimed_by = ?)",
        (now, owner or None),  # NULL matches no row: expired leases only
    )
    return int(cursor.rowcount)


def queue_entries(conn: sqlite3.Connection, queue_id: str) -> list[QueueEntry]:
    rows = conn.execute(
        f"SELECT {QUEUE_COLUMNS} FROM queue WHERE queue_id = ? ORDER BY id",  # noqa: S608
        (queue_id,),
    ).fetchall()
    return [entry(r) for r in rows]


def list_queue(conn: sqlite3.Connection) -> list[QueueEntry]:
    rows = conn.execute(f"SELECT {QUEUE_COLUMNS} FROM queue ORDER BY id").fetchall()  # noqa: S608
    return [entry(r) for r in rows]


def retry_queue(conn: sqlite3.Connection, queue_id: str | None, now: float) -> int:
    """Deferred (and not yet due queued) rows become due now."""
    sql = (
        "UPDATE queue SET state = 'queued', next_attempt = ?"
        " WHERE state IN ('deferred', 'queued') AND next_attempt > ?"
    )
    args: tuple[object, ...] = (now, now)
    if queue_id is not None:
        sql += " AND queue_id = ?"
        args = (*args, queue_id)
    return int(conn.execute(sql, args).rowcount)


def delete_queue(conn: sqlite3.Connection, queue_id: str) -> int:
    return int(conn.execute("DELETE FROM queue WHERE queue_id = ?", (queue_id,)).rowcount)


def purge_finished(conn: sqlite3.Connection, before: float) -> int:
    cursor = conn.execute(
        "DELETE FROM queue WHERE state IN ('delivered', 'bounced')"
        " AND COALESCE(last_attempt, created_at) < ?",
        (before,),
    )
    return int(cursor.rowcount)


# DKIM keys ---------------------------------------------------------------------------------

_KEY_COLUMNS = "domain, selector, algorithm, private_key, public_key, created_at, active"


def add_dkim_key(conn: sqlite3.Connection, key: DkimKey) -> None:
    try:
        conn.execute(
            f"INSERT INTO dkim_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
            (
                key.domain.lower(),
                key.selector,
                key.algorithm,
                key.private_key,
                key.public_key,
                key.created_at,
                int(key.active),
            ),
        )
    except sqlite3.IntegrityError as exc:
        if "UNIQUE" in str(exc):
            raise AlreadyExists(
                f"DKIM selector {key.selector} of {key.domain} exists already"
            ) from None
        raise StoreError(f"bad DKIM key for {key.domain}: {exc}") from None


def dkim_keys(conn: sqlite3.Connection, domain: str) -> list[DkimKey]:
    rows = conn.execute(
        f"SELECT {_KEY_COLUMNS} FROM dkim_keys WHERE domain = ?"  # noqa: S608
        " ORDER BY created_at DESC, id DESC",
        (domain.lower(),),
    ).fetchall()
    return [
        DkimKey(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), float(r[5]), bool(r[6]))
        for r in rows
    ]


def set_dkim_active(conn: sqlite3.Connection, domain: str, selectors: Sequence[str]) -> None:
    wanted = set(selectors)
    name = domain.lower()
    known = {
        str(r[0])
        for r in conn.execute("SELECT selector FROM dkim_keys WHERE domain = ?", (name,))
    }
    missing = wanted - known
    if missing:
        raise NotFound(f"no DKIM selector {', '.join(sorted(missing))} for {domain}")
    conn.executemany(
        "UPDATE dkim_keys SET active = ? WHERE domain = ? AND selector = ?",
        [(int(s in wanted), name, s) for s in sorted(known)],
    )


def remove_dkim_key(conn: sqlite3.Connection, domain: str, selector: str) -> None:
    """Deletes one inactive key; NotFound when there is no such key, InUse when it signs
    (checked in the same transaction, so a concurrent ``activate`` cannot slip in between)."""
    name = domain.lower()
    row = conn.execute(
        "SELECT active FROM dkim_keys WHERE domain = ? AND selector = ?", (name, selector)
    ).fetchone()
    if row is None:
        raise NotFound(f"no DKIM selector {selector} for {domain}")
    if row[0]:
        raise InUse(f"DKIM selector {selector} of {domain} still signs mail")
    conn.execute("DELETE FROM dkim_keys WHERE domain = ? AND selector = ?", (name, selector))
