"""Message operations of the SQLite store for IMAP and POP3: flags, expunge, copy and move,
and change tracking (RFC 7162 CONDSTORE/QRESYNC).

MODSEQ rules (RFC 7162 section 3.1): every message changed by one command gets the same new
MODSEQ, the mailbox's HIGHESTMODSEQ + 1, which becomes the new HIGHESTMODSEQ; an expunge
records the UIDs in ``vanished`` at its MODSEQ. Write functions run in the writer thread's
transaction and add the changed account to ``touched``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from mailstead.core.errors import NotFound, StoreError
from mailstead.storage import flags as flagset
from mailstead.storage.blobs import BlobStore
from mailstead.storage.interfaces import (
    FlagChange,
    FlagOp,
    MailboxChanges,
    MessageInfo,
    StoreFlagsResult,
)
from mailstead.storage.sqlite.writer import MAX_UID, WireShape, wire_shape

log = logging.getLogger(__name__)

# How many expunged UIDs each mailbox remembers exactly for QRESYNC; older ones are
# compacted away (see migration 0002 and ``changes_since``).
VANISHED_KEEP = 20_000

_COLUMNS = (
    "SELECT id, mailbox_id, uid, modseq, flags, internal_date, size, blob, envelope,"
    " bodystructure, wire_size, unterminated, saved_at, thread_id FROM messages"
)


@dataclass(frozen=True, slots=True)
class MailboxState:
    account_id: int
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    vanished_floor: int


def state(conn: sqlite3.Connection, mailbox_id: int) -> MailboxState:
    row = conn.execute(
        "SELECT account_id, uidvalidity, uidnext, highestmodseq, vanished_floor"
        " FROM mailboxes WHERE id = ?",
        (mailbox_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no mailbox with id {mailbox_id}")
    return MailboxState(*(int(v) for v in row))


@dataclass(slots=True)
class Unmeasured:
    """Measures the rows stored before migration 0004 (``wire_size`` NULL) while a read lists
    them. SQL cannot read blob files, so the figures are filled lazily: the reader measures
    each such blob once, and the caller hands ``found`` to ``save_wire`` in a write
    transaction so the next listing reads them from the row. One instance per read call."""

    blobs: BlobStore
    found: dict[str, WireShape] = field(default_factory=dict)

    def shape(self, blob: str, size: int) -> WireShape:
        known = self.found.get(blob)
        if known is not None:
            return known
        try:
            data = self.blobs.read(blob)
        except (StoreError, OSError) as exc:  # missing, or damaged (CorruptData)
            # RETR of this message fails anyway; report the stored size and try again on
            # the next listing rather than recording a guess.
            log.warning("cannot measure message body %s: %s", blob[:80], exc)
            return WireShape(size, False)
        shape = wire_shape(data)
        self.found[blob] = shape
        return shape


def _infos(rows: list[Any], unmeasured: Unmeasured | None = None) -> list[MessageInfo]:
    """MessageInfo of rows selected with ``_COLUMNS``. A row from before migration 0004 is
    measured through ``unmeasured``; without one it reports the stored size."""
    infos = []
    for r in rows:
        if r[10] is not None:
            wire, unterminated = int(r[10]), bool(r[11])
        elif unmeasured is not None:
            wire, unterminated = unmeasured.shape(r[7], int(r[6]))
        else:
            wire, unterminated = int(r[6]), False
        infos.append(MessageInfo(
            r[0], r[1], r[2], r[3], tuple(r[4].split()), r[5], r[6], r[7], r[8], r[9],
            wire, unterminated, -1.0 if r[12] is None else float(r[12]), r[13] or "",
        ))
    return infos


def list_in(
    conn: sqlite3.Connection, mailbox_id: int, unmeasured: Unmeasured | None = None
) -> list[MessageInfo]:
    state(conn, mailbox_id)
    rows = conn.execute(_COLUMNS + " WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,))
    return _infos(rows.fetchall(), unmeasured)


# A run of at least this many consecutive UIDs is read with one BETWEEN range scan; shorter
# runs go into ``uid IN (...)`` lists of at most _IN_CHUNK values (SQLite's default limit of
# bound parameters is 32766 since 3.32, 999 before; we stay far below either).
_RANGE_MIN = 32
_IN_CHUNK = 500


def _select(envelope: bool, bodystructure: bool) -> str:
    """``_COLUMNS`` with the JSON columns a caller does not want replaced by empty text."""
    env = "envelope" if envelope else "''"
    body = "bodystructure" if bodystructure else "''"
    return (
        "SELECT id, mailbox_id, uid, modseq, flags, internal_date, size, blob, "  # noqa: S608
        f"{env}, {body}, wire_size, unterminated, saved_at, thread_id FROM messages"
    )


def uid_runs(uids: Sequence[int]) -> tuple[list[tuple[int, int]], list[int]]:
    """Sorted distinct valid UIDs split into long runs (first, last) and loose UIDs (the
    PostgreSQL store reads them the same way)."""
    ordered = sorted({u for u in uids if 0 < u <= MAX_UID})
    runs: list[tuple[int, int]] = []
    loose: list[int] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        if j - i + 1 >= _RANGE_MIN:
            runs.append((ordered[i], ordered[j]))
        else:
            loose.extend(ordered[i : j + 1])
        i = j + 1
    return runs, loose


def get_some(
    conn: sqlite3.Connection,
    mailbox_id: int,
    uids: Sequence[int] | None,
    unmeasured: Unmeasured | None = None,
    *,
    envelope: bool = True,
    bodystructure: bool = True,
) -> list[MessageInfo]:
    """The messages of ``uids`` (every message when None) in ascending UID order, reading
    only those rows: long runs by range, the rest by chunked ``IN`` lists."""
    state(conn, mailbox_id)
    select = _select(envelope, bodystructure)
    if uids is None:
        rows = conn.execute(select + " WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,))
        return _infos(rows.fetchall(), unmeasured)
    runs, loose = uid_runs(uids)
    found: list[Any] = []
    for first, last in runs:
        found += conn.execute(
            select + " WHERE mailbox_id = ? AND uid BETWEEN ? AND ?", (mailbox_id, first, last)
        ).fetchall()
    for k in range(0, len(loose), _IN_CHUNK):
        chunk = loose[k : k + _IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        found += conn.execute(
            select + f" WHERE mailbox_id = ? AND uid IN ({marks})", (mailbox_id, *chunk)
        ).fetchall()
    found.sort(key=itemgetter(2))  # several queries, and none promises an order
    return _infos(found, unmeasured)


def save_wire(conn: sqlite3.Connection, found: dict[str, WireShape]) -> int:
    """Records lazily measured figures on every row of each blob still lacking them (copies
    share the blob); returns how many rows were filled."""
    filled = 0
    for blob, shape in found.items():
        filled += conn.execute(
            "UPDATE messages SET wire_size = ?, unterminated = ?"
            " WHERE blob = ? AND wire_size IS NULL",
            (shape.size, int(shape.unterminated), blob),
        ).rowcount
    return filled


def _uid_json(uids: Sequence[int]) -> str:
    return json.dumps(sorted({int(u) for u in uids if 0 < int(u) <= MAX_UID}))


def _bump(conn: sqlite3.Connection, mailbox_id: int) -> int:
    """Takes the next MODSEQ of the mailbox and makes it the HIGHESTMODSEQ."""
    rows = conn.execute(
        "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = ?"
        " RETURNING highestmodseq",
        (mailbox_id,),
    ).fetchall()
    return int(rows[0][0])


def store_flags(
    conn: sqlite3.Connection,
    touched: set[int],
    mailbox_id: int,
    uids: Sequence[int],
    op: FlagOp,
    given: Sequence[str],
    unchanged_since: int | None,
) -> StoreFlagsResult:
    mailbox = state(conn, mailbox_id)
    wanted = flagset.canonical_flags(given)
    rows = conn.execute(
        "SELECT uid, modseq, flags FROM messages WHERE mailbox_id = ?"
        " AND uid IN (SELECT value FROM json_each(?)) ORDER BY uid",
        (mailbox_id, _uid_json(uids)),
    ).fetchall()
    modified, updates = flagset.plan_store(rows, op, wanted, unchanged_since)
    if not updates:
        return StoreFlagsResult(changed=(), modified=tuple(modified))
    modseq = _bump(conn, mailbox_id)
    conn.executemany(
        "UPDATE messages SET flags = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?",
        [(" ".join(after), modseq, mailbox_id, uid) for uid, after in updates],
    )
    touched.add(mailbox.account_id)
    return StoreFlagsResult(
        changed=tuple(FlagChange(uid, modseq, after) for uid, after in updates),
        modified=tuple(modified),
    )


def _remove(conn: sqlite3.Connection, mailbox_id: int, uids: list[int]) -> None:
    """Deletes the messages and records them as vanished at a new MODSEQ."""
    modseq = _bump(conn, mailbox_id)
    conn.execute(
        "DELETE FROM messages WHERE mailbox_id = ? AND uid IN (SELECT value FROM json_each(?))",
        (mailbox_id, json.dumps(uids)),
    )
    conn.executemany(
        "INSERT INTO vanished (mailbox_id, uid, modseq) VALUES (?, ?, ?)"
        " ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = excluded.modseq",
        [(mailbox_id, uid, modseq) for uid in uids],
    )
    _compact_vanished(conn, mailbox_id)


def _compact_vanished(conn: sqlite3.Connection, mailbox_id: int) -> None:
    """Keeps at most VANISHED_KEEP rows per mailbox; raises ``vanished_floor`` to the highest
    MODSEQ forgotten, below which ``changes_since`` answers conservatively."""
    count = int(
        conn.execute(
            "SELECT COUNT(*) FROM vanished WHERE mailbox_id = ?", (mailbox_id,)
        ).fetchone()[0]
    )
    excess = count - VANISHED_KEEP
    if excess <= 0:
        return
    row = conn.execute(
        "SELECT modseq FROM vanished WHERE mailbox_id = ? ORDER BY modseq LIMIT 1 OFFSET ?",
        (mailbox_id, excess - 1),
    ).fetchone()
    floor = int(row[0])
    # Whole MODSEQs only: a MODSEQ is either exactly known or entirely below the floor.
    conn.execute("DELETE FROM vanished WHERE mailbox_id = ? AND modseq <= ?", (mailbox_id, floor))
    conn.execute(
        "UPDATE mailboxes SET vanished_floor = MAX(vanished_floor, ?) WHERE id = ?",
        (floor, mailbox_id),
    )


def expunge(
    conn: sqlite3.Connection, touched: set[int], mailbox_id: int, uids: Sequence[int] | None
) -> list[int]:
    mailbox = state(conn, mailbox_id)
    # Flags are stored canonical and space-separated, so an exact token test suffices.
    if uids is None:
        rows = conn.execute(
            "SELECT uid FROM messages WHERE mailbox_id = ?"
            " AND instr(' ' || flags || ' ', ' \\Deleted ') > 0 ORDER BY uid",
            (mailbox_id,),
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT uid FROM messages WHERE mailbox_id = ?"
            " AND instr(' ' || flags || ' ', ' \\Deleted ') > 0"
            " AND uid IN (SELECT value FROM json_each(?)) ORDER BY uid",
            (mailbox_id, _uid_json(uids)),
        ).fetchall()
    gone = [int(r[0]) for r in rows]
    if gone:
        _remove(conn, mailbox_id, gone)
        touched.add(mailbox.account_id)
    return gone


def delete_messages(
    conn: sqlite3.Connection, touched: set[int], mailbox_id: int, uids: Sequence[int]
) -> list[int]:
    mailbox = state(conn, mailbox_id)
    rows = conn.execute(
        "SELECT uid FROM messages WHERE mailbox_id = ?"
        " AND uid IN (SELECT value FROM json_each(?)) ORDER BY uid",
        (mailbox_id, _uid_json(uids)),
    ).fetchall()
    gone = [int(r[0]) for r in rows]
    if gone:
        _remove(conn, mailbox_id, gone)
        touched.add(mailbox.account_id)
    return gone


def copy(
    conn: sqlite3.Connection,
    touched: set[int],
    src_id: int,
    uids: Sequence[int],
    dst_id: int,
    *,
    move: bool,
) -> list[tuple[int, int]]:
    """COPY/MOVE in one transaction: the copies get consecutive new UIDs in the destination
    in source UID order (RFC 4315 COPYUID), one new MODSEQ; a move then expunges the source
    messages (RFC 6851 section 3.3: atomically, as one command)."""
    src = state(conn, src_id)
    dst = state(conn, dst_id)
    # wire_size and unterminated travel with the copy (NULL stays NULL: measured lazily).
    rows = conn.execute(
        "SELECT uid, flags, internal_date, size, blob, envelope, bodystructure, wire_size,"
        " unterminated, thread_id FROM messages"
        " WHERE mailbox_id = ? AND uid IN (SELECT value FROM json_each(?)) ORDER BY uid",
        (src_id, _uid_json(uids)),
    ).fetchall()
    if not rows:
        return []
    first = dst.uidnext
    if first + len(rows) - 1 > MAX_UID:  # RFC 9051 section 2.3.1.1: UIDs are 32-bit
        raise StoreError("the destination mailbox has run out of UIDs")
    modseq = dst.highestmodseq + 1
    conn.execute(
        "UPDATE mailboxes SET uidnext = ?, highestmodseq = ? WHERE id = ?",
        (first + len(rows), modseq, dst_id),
    )
    pairs = [(int(r[0]), first + i) for i, r in enumerate(rows)]
    now = time.time()
    conn.executemany(
        "INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, size, blob,"
        " envelope, bodystructure, wire_size, unterminated, thread_id, saved_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        # RFC 8514 section 3: a copy is saved into the destination now; the thread id
        # travels with it (one account, one thread).
        [(dst_id, new, modseq, *r[1:], now) for (_, new), r in zip(pairs, rows, strict=True)],
    )
    touched.add(dst.account_id)
    if move:
        _remove(conn, src_id, [old for old, _ in pairs])
        touched.add(src.account_id)
    return pairs


def changes_since(
    conn: sqlite3.Connection,
    mailbox_id: int,
    since: int,
    unmeasured: Unmeasured | None = None,
) -> MailboxChanges:
    mailbox = state(conn, mailbox_id)
    changed = _infos(
        conn.execute(
            _COLUMNS + " WHERE mailbox_id = ? AND modseq > ? ORDER BY uid", (mailbox_id, since)
        ).fetchall(),
        unmeasured,
    )
    if since >= mailbox.vanished_floor:
        vanished = [
            int(r[0])
            for r in conn.execute(
                "SELECT uid FROM vanished WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
                (mailbox_id, since),
            )
        ]
    else:
        # Older than what is remembered exactly: every UID below UIDNEXT that is not present
        # may have been expunged since (RFC 7162 section 3.2.5.1 allows such extra UIDs).
        present = {
            int(r[0])
            for r in conn.execute("SELECT uid FROM messages WHERE mailbox_id = ?", (mailbox_id,))
        }
        vanished = [uid for uid in range(1, mailbox.uidnext) if uid not in present]
    return MailboxChanges(
        uidvalidity=mailbox.uidvalidity,
        uidnext=mailbox.uidnext,
        highestmodseq=mailbox.highestmodseq,
        changed=tuple(changed),
        vanished=tuple(vanished),
    )
