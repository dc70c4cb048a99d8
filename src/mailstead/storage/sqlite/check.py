"""Corruption of the SQLite store: telling a damaged file from a passing failure, the check
at every start (``PRAGMA quick_check``) and the full one of ``mailstead verify``
(``PRAGMA integrity_check`` plus every message body against its SHA-256 name).

SQLite reports a damaged page as SQLITE_CORRUPT ("database disk image is malformed") and a
file that is no database as SQLITE_NOTADB; neither goes away by retrying, unlike SQLITE_BUSY
or SQLITE_FULL, so they become ``CorruptData`` (a permanent error) and not a 4xx for ever.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from mailstead.core.errors import CorruptData, DiskFull, NotFound, StoreError
from mailstead.storage.blobs import BlobStore, is_blob_name
from mailstead.storage.consistency import (
    AccountUsage,
    MailboxCounters,
    MessageRow,
    VerifyReport,
    lost_messages,
    size_faults,
)
from mailstead.storage.integrity import VERIFY_HINT, Integrity
from mailstead.storage.sqlite import fts

# https://www.sqlite.org/rescode.html: primary result codes (the low byte of extended ones).
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_NOTADB = 26
_CORRUPT_TEXT = ("malformed", "not a database", "corrupt")
# Problems integrity_check lists at most (it can list one per damaged row otherwise).
MAX_PROBLEMS = 100


def is_corruption(exc: BaseException) -> bool:
    """Whether ``exc`` says the database file is damaged (not busy, full or locked)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
    text = str(exc).lower()
    return any(word in text for word in _CORRUPT_TEXT)


def store_error(exc: sqlite3.Error, what: str, integrity: Integrity) -> StoreError:
    """The StoreError for a failed ``what``: CorruptData (counted, logged with the advice
    to run ``mailstead verify``) for a damaged file, DiskFull for a full disk, a plain
    (temporary) StoreError else."""
    if is_corruption(exc):
        return integrity.database_corrupt(what, str(exc))
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == SQLITE_FULL:
        return DiskFull(f"database {what} failed: the disk is full")
    return StoreError(f"database {what} failed: {exc}")


def _problems(conn: sqlite3.Connection, pragma: str) -> list[str]:
    try:
        rows = conn.execute(f"PRAGMA {pragma}({MAX_PROBLEMS})").fetchall()
    except sqlite3.DatabaseError as exc:  # the header or schema itself is unreadable
        return [str(exc)]
    problems = [str(r[0]) for r in rows]
    return [] if problems == ["ok"] else problems


def quick_check(conn: sqlite3.Connection) -> list[str]:
    """``PRAGMA quick_check``: every page and record readable, in O(size) without the index
    cross-checks; [] when the file is sound."""
    return _problems(conn, "quick_check")


def integrity_check(conn: sqlite3.Connection) -> list[str]:
    """``PRAGMA integrity_check``: quick_check plus every index against its table."""
    return _problems(conn, "integrity_check")


def startup_refusal(db_path: Path, data_dir: Path, problems: list[str]) -> CorruptData:
    """The one-line error ``serve`` stops with when the start-up check failed."""
    first = problems[0][:200] if problems else "unreadable"
    return CorruptData(
        f"the database {db_path} is damaged ({first}; {len(problems)} problem(s)); the "
        f"server will not start on it: {VERIFY_HINT}, e.g. "
        f"mailstead verify --data-dir {data_dir}"
    )


def referenced_blobs(conn: sqlite3.Connection) -> Iterator[str]:
    """Every body a message or a queue row needs, each once."""
    for row in conn.execute(
        "SELECT blob FROM messages UNION SELECT blob FROM queue WHERE blob IS NOT NULL"
    ):
        yield str(row[0])


def damaged_blobs(
    conn: sqlite3.Connection, blobs: BlobStore
) -> tuple[int, list[str], list[str]]:
    """(bodies referenced, missing, damaged): the bodies gone or failing their SHA-256."""
    missing: list[str] = []
    damaged: list[str] = []
    names = list(referenced_blobs(conn))
    for name in names:
        path = blobs.path(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            missing.append(name)
            continue
        if not blobs.integrity.intact(name, data):
            damaged.append(name)
    return len(names), sorted(missing), sorted(damaged)


# Contents of the store (``mailstead verify`` beyond the pages) ----------------------------

_COUNTERS = (
    "SELECT a.address, b.name, b.uidnext, b.highestmodseq,"
    " MAX(COALESCE((SELECT MAX(uid) FROM messages m WHERE m.mailbox_id = b.id), 0),"
    "     COALESCE((SELECT MAX(uid) FROM vanished v WHERE v.mailbox_id = b.id), 0)),"
    " MAX(COALESCE((SELECT MAX(modseq) FROM messages m WHERE m.mailbox_id = b.id), 0),"
    "     COALESCE((SELECT MAX(modseq) FROM vanished v WHERE v.mailbox_id = b.id), 0))"
    " FROM mailboxes b JOIN accounts a ON a.id = b.account_id ORDER BY b.id"
)
_USAGE = (
    "SELECT a.address, a.used_bytes, a.used_messages,"
    " (SELECT COALESCE(SUM(m.size), 0) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
    "   WHERE b.account_id = a.id),"
    " (SELECT COUNT(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
    "   WHERE b.account_id = a.id)"
    " FROM accounts a ORDER BY a.id"
)
_MESSAGES = (
    "SELECT a.address, b.name, m.uid, m.blob, m.size, m.wire_size, m.unterminated"
    " FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
    " JOIN accounts a ON a.id = b.account_id ORDER BY m.id"
)
_DANGLING_INDEX = (
    "SELECT blob FROM fts_docs f WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob = f.blob)"
    " AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.hash = f.blob)"
)
_REFERENCED = (
    "SELECT EXISTS (SELECT 1 FROM messages WHERE blob = ?)"
    " OR EXISTS (SELECT 1 FROM queue WHERE blob = ?)"
)


def _snapshot(conn: sqlite3.Connection) -> tuple[
    list[MailboxCounters], list[AccountUsage], list[MessageRow], set[str], list[str]
]:
    """Every row the check needs, read in one read transaction (one WAL snapshot, which never
    blocks the writer)."""
    conn.execute("BEGIN")
    try:
        counters = [MailboxCounters(str(r[0]), str(r[1]), *map(int, r[2:6]))
                    for r in conn.execute(_COUNTERS)]
        usage = [AccountUsage(str(r[0]), *map(int, r[1:5])) for r in conn.execute(_USAGE)]
        rows = [
            MessageRow(str(r[0]), str(r[1]), int(r[2]), str(r[3]), int(r[4]),
                       None if r[5] is None else int(r[5]),
                       None if r[6] is None else bool(r[6]))
            for r in conn.execute(_MESSAGES)
        ]
        referenced = set(referenced_blobs(conn))
        index = [str(r[0]) for r in conn.execute(_DANGLING_INDEX)]
    finally:
        conn.execute("COMMIT")
    return counters, usage, rows, referenced, index


def _scan_tree(root: Path, referenced: set[str], cutoff: float) -> tuple[int, list[str], list[str]]:
    """(files seen, orphan names, temp leftover paths) under ``root``: unreferenced bodies and
    ``.tmp-`` files last changed before ``cutoff``."""
    files = 0
    orphans: list[str] = []
    temps: list[str] = []
    for top in sorted(os.scandir(root), key=lambda e: e.name):
        if not top.is_dir(follow_symlinks=False):
            continue
        for second in os.scandir(top.path):
            if not second.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(second.path):
                files += 1
                try:
                    old = entry.stat(follow_symlinks=False).st_mtime < cutoff
                except FileNotFoundError:  # removed meanwhile (collected, or a temp renamed)
                    continue
                if entry.name.startswith(".tmp-"):
                    if old:
                        temps.append(entry.path)
                elif is_blob_name(entry.name) and entry.name not in referenced and old:
                    orphans.append(entry.name)
    return files, sorted(orphans), sorted(temps)


def verify_contents(
    conn: sqlite3.Connection, blobs: BlobStore, report: VerifyReport, grace: float
) -> None:
    """Fills ``report`` with the faults of the rows and the blob tree. The rows come from one
    snapshot; the bodies are read and hashed after it, each distinct body once."""
    cutoff = time.time() - grace
    counters, usage, rows, referenced, index = _snapshot(conn)
    report.mailboxes, report.accounts, report.messages = len(counters), len(usage), len(rows)
    for mailbox in counters:
        report.counters.extend(mailbox.faults())
    for account in usage:
        report.usage.extend(account.faults())
    report.index = [f"text-index document for body {name} that no longer exists"
                    for name in index]
    by_blob: dict[str, list[MessageRow]] = {}
    for row in rows:
        by_blob.setdefault(row.blob, []).append(row)
    missing: set[str] = set()
    damaged: set[str] = set()
    for name in sorted(referenced):
        try:
            data = blobs.path(name).read_bytes()
        except (FileNotFoundError, NotFound):
            missing.add(name)
            continue
        if not blobs.integrity.intact(name, data):
            damaged.add(name)
            continue
        for row in by_blob.get(name, ()):
            report.sizes.extend(size_faults(row, data))
    report.bodies = len(referenced)
    report.missing, report.damaged = sorted(missing), sorted(damaged)
    report.lost = lost_messages(rows, missing, damaged)
    report.files, candidates, report.temps = _scan_tree(blobs.root, referenced, cutoff)
    # A delivery may have referenced an old identical body after the snapshot: ask again.
    report.orphans = [n for n in candidates
                      if not conn.execute(_REFERENCED, (n, n)).fetchone()[0]]


def repair(
    conn: sqlite3.Connection, blobs: BlobStore, orphans: list[str], grace: float
) -> list[str]:
    """Inside the writer's IMMEDIATE transaction: raises UIDNEXT and HIGHESTMODSEQ to what
    the rows need (never lowers them: RFC 9051 section 2.3.1.1, UIDs are never reused),
    recomputes the quota usage, drops dangling index documents, and removes the orphan
    bodies that are still unreferenced and old (the same re-check garbage collection does
    under this lock, so no delivery commits a reference to a removed file)."""
    done: list[str] = []
    for c in [MailboxCounters(str(r[0]), str(r[1]), *map(int, r[2:6]))
              for r in conn.execute(_COUNTERS)]:
        uidnext = max(c.uidnext, c.max_uid + 1)
        modseq = max(c.highestmodseq, c.max_modseq)
        if (uidnext, modseq) != (c.uidnext, c.highestmodseq):
            conn.execute(
                "UPDATE mailboxes SET uidnext = ?, highestmodseq = ? WHERE name = ?"
                " AND account_id = (SELECT id FROM accounts WHERE address = ?)",
                (uidnext, modseq, c.name, c.account))
            done.append(f"mailbox {c.name!r} of {c.account}: UIDNEXT {c.uidnext} -> {uidnext}, "
                        f"HIGHESTMODSEQ {c.highestmodseq} -> {modseq}")
    for u in [AccountUsage(str(r[0]), *map(int, r[1:5])) for r in conn.execute(_USAGE)]:
        if u.faults():
            conn.execute("UPDATE accounts SET used_bytes = ?, used_messages = ? WHERE address = ?",
                         (u.sum_bytes, u.count, u.account))
            done.append(f"account {u.account}: quota usage set to {u.sum_bytes} bytes in "
                        f"{u.count} messages")
    index = [str(r[0]) for r in conn.execute(_DANGLING_INDEX)]
    if index:
        fts.drop(conn, index)
        done.append(f"dropped {len(index)} dangling text-index documents")
    cutoff = time.time() - grace
    gone = []
    for name in orphans:
        if conn.execute(_REFERENCED, (name, name)).fetchone()[0]:
            continue
        try:
            if blobs.path(name).stat().st_mtime >= cutoff:
                continue
        except FileNotFoundError:
            continue
        gone.append(name)
    if gone:
        conn.executemany("DELETE FROM blobs WHERE hash = ?", [(n,) for n in gone])
        fts.drop(conn, gone)
        blobs.remove(gone)
        done.append(f"removed {len(gone)} orphan bodies")
    return done


def remove_temps(paths: list[str], grace: float) -> list[str]:
    """Removes the temp leftovers still older than ``grace`` (a writer keeps its temp file
    for the moment of one write, so an hour-old one belongs to a crashed process)."""
    cutoff = time.time() - grace
    removed = 0
    for path in paths:
        if not Path(path).name.startswith(".tmp-"):
            continue
        try:
            if os.stat(path).st_mtime < cutoff:
                os.unlink(path)
                removed += 1
        except FileNotFoundError:
            continue
    return [f"removed {removed} temp leftovers"] if removed else []
