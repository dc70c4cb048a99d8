"""Full-text search of the PostgreSQL store (IMAP SEARCH BODY/TEXT/HEADER, RFC 9051 6.4.4).

One document per blob in ``fts_docs``: the case-folded header and body text made by
``textindex.extract``, exactly what SQLite's fts.py indexes, so both backends find the same
messages. A delivery only records its blob in ``fts_pending`` (a trigger, migration 0002);
the server's ``BackgroundIndexer`` indexes pending blobs soon after, and a search first
indexes whatever of its mailbox is still pending, reading the bodies from ``blobs.data`` and
extracting their text in a thread, so a message delivered a moment ago is found. Pending
rows are claimed with ``FOR UPDATE SKIP LOCKED``, so sessions and nodes indexing at the same
time share the work instead of each doing all of it. Matching is a substring test
(``strpos``) of the folded needle over the documents of one mailbox; documents cut at the
indexing limit (``complete = 0``) are checked on the full text of their body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

from mailstead.storage.sqlite.fts import parse_part
from mailstead.storage.textindex import (
    IndexText,
    extract,
    fold,
    header_contains,
    text_contains,
)

log = logging.getLogger(__name__)

__all__ = ["clean_text", "index_pending", "parse_part", "search"]

# Pending blobs claimed per transaction, and the bytes of bodies held in memory at once while
# their text is extracted (a single larger body is still read, alone).
PENDING_CHUNK = 64
BATCH_BYTES = 8 * 1024 * 1024
# The background indexer starts once deliveries pause for INDEX_DELAY (a burst is indexed
# after it, not against it), but no later than INDEX_MAX_LAG after the first of them; it
# pauses between chunks so deliveries and sessions go first, and looks for blobs pending
# without a wake-up (another process's APPEND, a restart) every INDEX_POLL.
INDEX_DELAY = 1.0
INDEX_MAX_LAG = 30.0
INDEX_PAUSE = 0.02
INDEX_POLL = 30.0
# Pending blobs of one mailbox, those another transaction holds (FOR UPDATE: wait for it).
_PENDING_OF = ("SELECT p.blob FROM fts_pending p WHERE EXISTS"
               " (SELECT 1 FROM messages m WHERE m.blob = p.blob AND m.mailbox_id = $1)")

# The text columns each part searches; header:NAME narrows the header hits in Python.
_COLUMNS = {"text": ("header", "body"), "body": ("body",), "header": ("header",)}


def clean_text(text: str) -> str:
    """``text`` as PostgreSQL can store and compare it: no NUL (``fold`` already replaces
    it) and no lone surrogate, which UTF-8 cannot encode (a strange charset decoder may leave
    one); those become U+FFFD instead of failing the whole statement."""
    text = text.replace("\x00", " ")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def _extract_all(bodies: list[tuple[str, bytes | None]]) -> list[tuple[str, IndexText]]:
    """Index texts of the bodies (CPU work, run in a thread); a missing body is indexed
    empty and incomplete, so searches try to read it again (as fts.prepare does)."""
    out = []
    for name, data in bodies:
        if data is None:
            log.warning("cannot index blob %s: its body is missing", name[:80])
            out.append((name, IndexText("", "", complete=False)))
        else:
            text = extract(data)
            out.append((name, IndexText(clean_text(text.header), clean_text(text.body),
                                        text.complete)))
    return out


async def _read_bodies(conn: Any, names: list[str]) -> list[list[tuple[str, bytes | None]]]:
    """The bodies of ``names`` in batches of about BATCH_BYTES (sizes are read first, so a
    round of big attachments never sits in memory at once)."""
    sizes = {
        str(r[0]): int(r[1])
        for r in await conn.fetch("SELECT hash, size FROM blobs WHERE hash = ANY($1::text[])",
                                  names)
    }
    groups: list[list[str]] = [[]]
    total = 0
    for name in names:
        size = sizes.get(name, 0)
        if groups[-1] and total + size > BATCH_BYTES:
            groups.append([])
            total = 0
        groups[-1].append(name)
        total += size
    batches = []
    for group in groups:
        rows = await conn.fetch("SELECT hash, data FROM blobs WHERE hash = ANY($1::text[])",
                                group)
        found = {str(r[0]): bytes(r[1]) for r in rows}
        batches.append([(name, found.get(name)) for name in group])
    return batches


async def _index_claimed(conn: Any, names: list[str]) -> None:
    """Writes the documents of ``names``, whose pending rows the caller's transaction holds,
    and removes those rows."""
    for bodies in await _read_bodies(conn, names):
        docs = await asyncio.to_thread(_extract_all, bodies)
        await conn.execute(
            "INSERT INTO fts_docs (blob, header, body, complete)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[])"
            " ON CONFLICT (blob) DO NOTHING",
            [n for n, _ in docs], [t.header for _, t in docs],
            [t.body for _, t in docs], [int(t.complete) for _, t in docs],
        )
    await conn.execute("DELETE FROM fts_pending WHERE blob = ANY($1::text[])", names)


async def index_some(conn: Any, limit: int = PENDING_CHUNK) -> int:
    """Indexes up to ``limit`` pending blobs of any mailbox that nobody else is indexing;
    returns how many (0: nothing left to claim)."""
    async with conn.transaction():
        names = [str(r[0]) for r in await conn.fetch(
            "SELECT blob FROM fts_pending LIMIT $1 FOR UPDATE SKIP LOCKED", limit)]
        if names:
            await _index_claimed(conn, names)
    return len(names)


async def index_pending(conn: Any, mailbox_id: int) -> int:
    """Indexes every pending blob of the mailbox; returns how many this call indexed. Blobs
    another session or node is indexing are skipped, then waited for, so none of the
    mailbox's blobs is pending when this returns. Nothing is locked but the claimed
    pending rows while bodies are parsed."""
    done = 0
    while True:
        async with conn.transaction():
            names = [str(r[0]) for r in await conn.fetch(
                _PENDING_OF + " LIMIT $2 FOR UPDATE OF p SKIP LOCKED", mailbox_id, PENDING_CHUNK)]
            if names:
                await _index_claimed(conn, names)
                done += len(names)
                continue
        # Nothing left to claim: wait until the other indexers' transactions end (their rows
        # are then gone), and go on only with rows one of them gave back (a failure).
        async with conn.transaction():
            held = await conn.fetchval(_PENDING_OF + " LIMIT 1 FOR UPDATE OF p", mailbox_id)
        if held is None:
            return done


class BackgroundIndexer:
    """Indexes pending blobs soon after deliveries, a chunk at a time, so a search seldom
    has any to index first (the SQLite store's writer does this when idle). One per server
    process; nodes share the work through the pending rows' locks."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
            self._wake.set()  # whatever a previous run left pending

    def wake(self) -> None:
        """Something was delivered: index it once deliveries pause (see INDEX_DELAY)."""
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), INDEX_POLL)
            latest = loop.time() + INDEX_MAX_LAG
            while (left := latest - loop.time()) > 0:  # until deliveries pause
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), min(INDEX_DELAY, left))
                except TimeoutError:
                    break
            self._wake.clear()
            try:
                while await self._chunk():
                    await asyncio.sleep(INDEX_PAUSE)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                # The database is away: searches index for themselves meanwhile.
                log.warning("store.indexing_failed: %s", exc)

    async def _chunk(self) -> int:
        async with self._pool.acquire() as conn:
            return await index_some(conn)


async def search(conn: Any, mailbox_id: int, text: str, part: str) -> set[int]:
    """UIDs of ``mailbox_id`` whose ``part`` contains ``text`` (see the module docstring).
    The caller indexed the pending blobs first and checked that the mailbox exists."""
    kind, field = parse_part(part)
    needle = clean_text(fold(text))
    test = " OR ".join(f"strpos(d.{c}, $2) > 0" for c in _COLUMNS[kind])
    # Only header:NAME needs the header text back, to check the named field.
    header = "d.header" if field is not None else "NULL"
    rows = await conn.fetch(
        f"SELECT m.uid, {header} FROM messages m JOIN fts_docs d ON d.blob = m.blob"  # noqa: S608
        f" WHERE m.mailbox_id = $1 AND ({test})",
        mailbox_id, needle,
    )
    found = {
        int(uid) for uid, head in rows if field is None or header_contains(head, field, needle)
    }
    return found | await _scan_incomplete(conn, mailbox_id, needle, kind, field)


async def _scan_incomplete(
    conn: Any, mailbox_id: int, needle: str, kind: str, field: str | None
) -> set[int]:
    """Messages whose text was cut at the indexing limit are checked on their full text,
    one body at a time (they are the big ones)."""
    rows = await conn.fetch(
        "SELECT m.uid, m.blob FROM messages m JOIN fts_docs d ON d.blob = m.blob"
        " WHERE m.mailbox_id = $1 AND d.complete = 0",
        mailbox_id,
    )
    by_blob: dict[str, list[int]] = {}
    for uid, name in rows:
        by_blob.setdefault(str(name), []).append(int(uid))
    found: set[int] = set()
    for name, uids in by_blob.items():
        data = await conn.fetchval("SELECT data FROM blobs WHERE hash = $1", name)
        if data is None:
            continue
        full = await asyncio.to_thread(extract, bytes(data), 2**62)
        if text_contains(full, kind, field, needle):
            found.update(uids)
    return found

