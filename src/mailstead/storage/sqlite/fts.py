"""The full-text index of the SQLite store: FTS5 with the trigram tokenizer, one document per
blob (messages copied to other mailboxes share it).

Indexing is kept off the delivery path: a delivery only records its blob in ``fts_pending``
(a trigger, see migration 0002). The writer thread indexes pending blobs when it is idle (and
a little at a time when it is busy), and ``search`` first indexes the pending blobs of its own
mailbox, so a message delivered a moment ago is found.

Matching (RFC 9051 section 6.4.4, "contains", case-insensitive): both the text and the needle
are folded (``textindex.fold``). Needles of 3 or more characters use the trigram index, which
matches any substring; shorter needles (and the empty one) are answered by a scan of the
stored index text with ``instr`` (exact, in C, but linear in the mailbox's text). ``header:NAME``
uses the index for candidates, then checks the named field in Python.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable

from mailstead.core.errors import StoreError
from mailstead.storage.blobs import BlobStore
from mailstead.storage.textindex import (
    IndexText,
    extract,
    fold,
    header_contains,
    text_contains,
)

log = logging.getLogger(__name__)

Prepared = list[tuple[str, IndexText]]

_TRIGRAM = 3  # the trigram tokenizer cannot match shorter needles through the index


def pending_blobs(conn: sqlite3.Connection, limit: int, mailbox_id: int | None = None) -> list[str]:
    """Up to ``limit`` blobs waiting to be indexed (only those of ``mailbox_id`` if given)."""
    if mailbox_id is None:
        rows = conn.execute("SELECT blob FROM fts_pending LIMIT ?", (limit,)).fetchall()
    else:
        rows = conn.execute(
            "SELECT p.blob FROM fts_pending p WHERE EXISTS"
            " (SELECT 1 FROM messages m WHERE m.blob = p.blob AND +m.mailbox_id = ?) LIMIT ?",
            (mailbox_id, limit),
        ).fetchall()
    return [str(r[0]) for r in rows]


def prepare(blobs: BlobStore, names: Iterable[str], deadline: float | None = None) -> Prepared:
    """Reads and extracts the text of ``names`` (no database access, so no lock is held).
    Stops early at ``deadline`` (``time.monotonic``), after at least one blob. A body that
    cannot be read is indexed empty and incomplete: searches then try to read it again."""
    out: Prepared = []
    for name in names:
        if deadline is not None and out and time.monotonic() >= deadline:
            break
        try:
            text = extract(blobs.read(name))
        except (OSError, StoreError) as exc:  # missing, or damaged (CorruptData, logged)
            log.warning("cannot index blob %s: %s", name, exc)
            text = IndexText("", "", complete=False)
        out.append((name, text))
    return out


def insert(conn: sqlite3.Connection, docs: Prepared) -> None:
    """Stores prepared documents (inside the caller's transaction); a blob indexed meanwhile
    by someone else is skipped."""
    for name, text in docs:
        rows = conn.execute(
            "INSERT INTO fts_docs (blob, complete) VALUES (?, ?)"
            " ON CONFLICT (blob) DO NOTHING RETURNING id",
            (name, int(text.complete)),
        ).fetchall()
        if rows:
            conn.execute(
                "INSERT INTO fts (rowid, header, body) VALUES (?, ?, ?)",
                (rows[0][0], text.header, text.body),
            )
        conn.execute("DELETE FROM fts_pending WHERE blob = ?", (name,))


def drop(conn: sqlite3.Connection, names: Iterable[str]) -> None:
    """Removes the documents of garbage-collected blobs (inside the caller's transaction)."""
    for name in names:
        rows = conn.execute("DELETE FROM fts_docs WHERE blob = ? RETURNING id", (name,)).fetchall()
        if rows:
            conn.execute("DELETE FROM fts WHERE rowid = ?", (rows[0][0],))
        conn.execute("DELETE FROM fts_pending WHERE blob = ?", (name,))


def _phrase(needle: str) -> str:
    # FTS5 string: double quotes inside are doubled; everything else is literal.
    return '"' + needle.replace('"', '""') + '"'


def parse_part(part: str) -> tuple[str, str | None]:
    """("text" | "body" | "header", field name or None); raises StoreError otherwise."""
    lowered = part.lower()
    if lowered in ("text", "body"):
        return lowered, None
    if lowered.startswith("header:") and len(part) > len("header:"):
        name = part[len("header:") :].strip().lower()
        if name and all(33 <= ord(c) <= 126 and c != ":" for c in name):
            return "header", name
    raise StoreError(f"unknown search part {part[:60]!r}")


def search(
    conn: sqlite3.Connection, blobs: BlobStore, mailbox_id: int, text: str, part: str
) -> set[int]:
    """UIDs of ``mailbox_id`` whose ``part`` contains ``text`` (see the module docstring).
    Pending blobs must have been indexed by the caller; run inside one read transaction."""
    kind, field = parse_part(part)
    needle = fold(text)
    columns = {"text": ("header", "body"), "body": ("body",), "header": ("header",)}[kind]
    found: set[int] = set()
    if len(needle) >= _TRIGRAM:
        query = _phrase(needle)
        if kind != "text":
            query = "{" + columns[0] + "} : " + query
        # CROSS JOIN fixes the order (one FTS query, then index lookups per hit) and the unary
        # "+" keeps the planner on messages_blob rather than scanning the mailbox per hit.
        rows = conn.execute(
            "SELECT m.uid, fts.header FROM fts CROSS JOIN fts_docs d ON d.id = fts.rowid"
            " CROSS JOIN messages m ON m.blob = d.blob"
            " WHERE fts MATCH ? AND +m.mailbox_id = ?",
            (query, mailbox_id),
        )
    else:
        test = " OR ".join(f"instr(f.{c}, ?) > 0" for c in columns)
        rows = conn.execute(
            "SELECT m.uid, f.header FROM messages m JOIN fts_docs d ON d.blob = m.blob"  # noqa: S608
            f" JOIN fts f ON f.rowid = d.id WHERE m.mailbox_id = ? AND ({test})",
            (mailbox_id, *([needle] * len(columns))),
        )
    for uid, header in rows:
        if field is None or header_contains(header, field, needle):
            found.add(int(uid))
    found |= _scan_incomplete(conn, blobs, mailbox_id, needle, kind, field)
    return found


def _scan_incomplete(
    conn: sqlite3.Connection,
    blobs: BlobStore,
    mailbox_id: int,
    needle: str,
    kind: str,
    field: str | None,
) -> set[int]:
    """Messages whose text was cut at the indexing limit are checked on their full text."""
    rows = conn.execute(
        "SELECT m.uid, m.blob FROM fts_docs d CROSS JOIN messages m ON m.blob = d.blob"
        " WHERE d.complete = 0 AND +m.mailbox_id = ?",
        (mailbox_id,),
    ).fetchall()
    found: set[int] = set()
    texts: dict[str, IndexText | None] = {}
    for uid, name in rows:
        if name not in texts:
            try:
                texts[name] = extract(blobs.read(name), limit=2**62)
            except (OSError, StoreError):
                texts[name] = None
        full = texts[name]
        if full is None:
            continue
        if text_contains(full, kind, field, needle):
            found.add(int(uid))
    return found
