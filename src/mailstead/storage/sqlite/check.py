"""Corruption of the SQLite store: telling a damaged file from a passing failure, the check
at every start (``PRAGMA quick_check``) and the full one of ``mailstead verify``
(``PRAGMA integrity_check`` plus every message body against its SHA-256 name).

SQLite reports a damaged page as SQLITE_CORRUPT ("database disk image is malformed") and a
file that is no database as SQLITE_NOTADB; neither goes away by retrying, unlike SQLITE_BUSY
or SQLITE_FULL, so they become ``CorruptData`` (a permanent error) and not a 4xx for ever.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from mailstead.core.errors import CorruptData, DiskFull, StoreError
from mailstead.storage.blobs import BlobStore
from mailstead.storage.integrity import VERIFY_HINT, Integrity

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
