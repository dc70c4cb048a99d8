"""The single writer thread of a SQLite store: group commit for deliveries (DESIGN rule 6).

Every write of the process goes through one thread and one connection, so writers never
contend inside the process and concurrent deliveries share their fsyncs: the thread takes
every pending request from its queue, writes the new blobs with their fdatasyncs issued in
parallel, fsyncs each touched directory once, inserts all rows in ONE transaction and commits
(one WAL fsync, ``synchronous=FULL``), then resolves the callers' futures on their loops.

After each commit it tells the ``WatchHub`` which accounts changed (IDLE wakes up). When it
has nothing else to do it feeds the full-text index (``fts.py``): after ``INDEX_IDLE`` seconds
without work it indexes pending blobs in chunks, checking its queue between chunks; under
sustained load it still spends ``INDEX_BUSY_BUDGET`` every ``INDEX_BUSY_INTERVAL`` on it,
about 0.5% of its time, so the delivery path is not slowed (bench/smtp_inbound.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from mailstead.core.errors import DiskFull, NotFound, StoreError
from mailstead.storage.blobs import BlobStore, blob_hash
from mailstead.storage.flags import canonical_flags
from mailstead.storage.interfaces import AcceptResult, IncomingMessage
from mailstead.storage.queuedsn import DSN_COLUMNS, row_values
from mailstead.storage.space import SpaceGuard
from mailstead.storage.sqlite import check, fts
from mailstead.storage.threads import keys_of, own_thread
from mailstead.storage.watch import WatchHub

log = logging.getLogger(__name__)

T = TypeVar("T")

# One batch holds at most this many requests, so a flood cannot make one transaction (and
# the latency of its first caller) unbounded.
MAX_BATCH = 512
# RFC 3501 section 2.3.1.1 / RFC 9051 section 2.3.1.1: a UID is a 32-bit unsigned number.
MAX_UID = 2**32 - 1

# Full-text indexing in the writer thread (see the module docstring). Seconds.
INDEX_IDLE = 0.2
INDEX_IDLE_BUDGET = 0.1
INDEX_BUSY_INTERVAL = 2.0
INDEX_BUSY_BUDGET = 0.01
INDEX_CHUNK = 64
INDEX_BACKOFF_MIN = 1.0
INDEX_BACKOFF_MAX = 60.0


def _index_cost(docs: fts.Prepared) -> int:
    """Bytes the index of ``docs`` may take on disk: the trigram FTS5 index measured about
    4.1 times its text (content included), so 5 times, to be safe."""
    return 5 * sum(len(text.header) + len(text.body) for _, text in docs)


def inbox_name(name: str) -> str:
    """The stored spelling of a mailbox name: ``INBOX`` is case-insensitive (RFC 3501 5.1)."""
    return "INBOX" if name.upper() == "INBOX" else name


class WireShape(NamedTuple):
    """How a message's octets change on the wire (the ``messages.wire_size`` and
    ``unterminated`` columns, ``MessageInfo`` fields of the same names)."""

    size: int  # octets with every line break as CRLF
    unterminated: bool  # the last line has no line break


def wire_shape(data: bytes) -> WireShape:
    """Measures ``data`` with two C-speed counts, never a Python loop per byte.

    RFC 5322 section 2.1 (and RFC 9051 section 7.5.2, RFC822.SIZE) count a message in CRLF
    form: a bare LF is sent as CRLF, one octet more; a CRLF stays, and a bare CR is no line
    break (it is sent as it is). ``unterminated``: data that does not end in LF, which POP3
    must complete with CRLF before its terminator line (RFC 1939 section 3).
    """
    bare_lf = data.count(b"\n") - data.count(b"\r\n")
    return WireShape(len(data) + bare_lf, bool(data) and not data.endswith(b"\n"))


@dataclass(slots=True)
class AcceptOp:
    """One ``accept_message`` waiting for the next batch."""

    message: IncomingMessage
    blob: str  # "" until the writer thread hashes the body (see ``Writer.accept``)
    blob_durable: bool  # a large body was already written and fsync'd by the caller
    wire: WireShape
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[AcceptResult]


@dataclass(slots=True)
class CallOp:
    """Any other write: ``fn`` runs inside its own ``BEGIN IMMEDIATE`` transaction."""

    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    touched: set[int] | None = None  # accounts ``fn`` changed: their watchers are notified


@dataclass(slots=True)
class _Stop:
    done: threading.Event = field(default_factory=threading.Event)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; the write stands regardless
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


_Settlement = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _settle_all(settlements: list[_Settlement]) -> None:
    for future, result, error in settlements:
        _settle(future, result, error)


def _as_store_error(exc: BaseException) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    return StoreError(f"database write failed: {exc}")


class Writer:
    """Owns the write connection and the thread that uses it."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        blobs: BlobStore,
        *,
        parallelism: int = 16,
        hub: WatchHub | None = None,
        space: SpaceGuard | None = None,
    ) -> None:
        self._conn = conn
        self._space = space
        self._index_retry = 0.0  # monotonic time before which a failed index waits
        self._index_backoff = INDEX_BACKOFF_MIN
        self._blobs = blobs
        self._hub = hub
        self._index_due = True  # a previous run may have left blobs to index
        self._last_index = 0.0
        self._queue: queue.SimpleQueue[AcceptOp | CallOp | _Stop] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="blob-fsync")
        self._closing = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    # Called from event-loop threads -------------------------------------------------------

    def accept(
        self,
        message: IncomingMessage,
        blob: str | None,
        *,
        blob_durable: bool,
        wire: WireShape | None = None,
    ) -> asyncio.Future[AcceptResult]:
        """Queues the delivery for the next batch. ``blob`` None: the writer thread hashes the
        body (for a small one: hashlib hands the GIL over for anything above 2 KiB, and on the
        event-loop thread that hand-over costs more than the hash). ``wire`` is
        ``wire_shape(message.data)`` when the caller measured it already (off the loop, for a
        large body); otherwise it is measured here, on the caller's thread."""
        if blob is None and blob_durable:
            raise ValueError("a durable blob needs its name")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[AcceptResult] = loop.create_future()
        shape = wire_shape(message.data) if wire is None else wire
        self._put(AcceptOp(message, blob or "", blob_durable, shape, loop, future))
        return future

    def call(
        self, fn: Callable[[sqlite3.Connection], T], touched: set[int] | None = None
    ) -> asyncio.Future[T]:
        """Runs ``fn`` in its own transaction; after the commit, the watchers of the accounts
        ``fn`` put into ``touched`` are notified."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put(CallOp(fn, loop, future, touched))
        return future

    def _put(self, op: AcceptOp | CallOp) -> None:
        with self._lock:
            if self._closing:
                raise StoreError("the store is closed")
            self._queue.put(op)

    def stop(self) -> None:
        """Blocks until everything queued before this call is written, then closes."""
        with self._lock:
            if self._closing:
                self._thread.join()
                return
            self._closing = True
            self._queue.put(_Stop())
        self._thread.join()
        self._pool.shutdown(wait=True)
        self._conn.close()

    # The writer thread -------------------------------------------------------------------

    def _next(self, idle: bool) -> AcceptOp | CallOp | _Stop | None:
        """The next request; None when the index may be fed (nothing came for a while)."""
        if not self._index_due:
            return self._queue.get()
        try:
            return self._queue.get(timeout=0.0001 if idle else INDEX_IDLE)
        except queue.Empty:
            return None

    def _run(self) -> None:
        idle = False
        while True:
            first = self._next(idle)
            if first is None:
                # Paused (reserve, back-off): wait INDEX_IDLE again rather than spin.
                idle = self._index_step(INDEX_IDLE_BUDGET)
                continue
            idle = False
            items = [first]
            while len(items) < MAX_BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            batch: list[AcceptOp] = []
            stop = False
            for item in items:
                if isinstance(item, AcceptOp):
                    batch.append(item)
                    continue
                self._accept_batch(batch)
                batch = []
                if isinstance(item, CallOp):
                    self._call(item)
                else:
                    stop = True
            self._accept_batch(batch)
            if stop:
                return
            if (
                self._index_due
                and time.monotonic() - self._last_index >= INDEX_BUSY_INTERVAL
                and self._queue.empty()
            ):
                self._index_step(INDEX_BUSY_BUDGET)

    def _index_step(self, budget: float) -> bool:
        """Indexes pending blobs for about ``budget`` seconds, one transaction per chunk; the
        index needs no fsync of its own (a crash only leaves blobs pending again), so the
        commits use ``synchronous=NORMAL``. False when it did not run (paused)."""
        self._last_index = time.monotonic()
        if self._last_index < self._index_retry:
            return False
        if self._space is not None and self._space.low():
            return False  # paused below the free-space reserve; resumes when space is back
        deadline = self._last_index + budget
        conn = self._conn
        while True:
            try:
                names = fts.pending_blobs(conn, INDEX_CHUNK)
                if not names:
                    self._index_due = False
                    return True
                docs = fts.prepare(self._blobs, names, deadline)
                if self._space is not None and not self._space.admit(_index_cost(docs)):
                    # Too big for the space above the reserve: wait for space, backing off
                    # as after a failure (each try reads and extracts the chunk again).
                    self._index_retry = time.monotonic() + self._index_backoff
                    self._index_backoff = min(self._index_backoff * 2, INDEX_BACKOFF_MAX)
                    return False
                conn.execute("PRAGMA synchronous = NORMAL")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    fts.insert(conn, docs)
                    conn.execute("COMMIT")
                finally:
                    self._rollback()
                    conn.execute("PRAGMA synchronous = FULL")
            except sqlite3.Error as exc:
                if check.is_corruption(exc):
                    # Reported (and counted) once; the index waits for the next delivery.
                    self._index_due = False
                    check.store_error(exc, "full-text indexing", self._blobs.integrity)
                    return False
                # Back off (doubling, up to a minute), so a failure that lasts (a full disk)
                # is retried, and logged, a few times a minute rather than every 0.2 s.
                log.warning("full-text indexing failed, retrying in %.0f s: %s",
                            self._index_backoff, exc)
                self._index_retry = time.monotonic() + self._index_backoff
                self._index_backoff = min(self._index_backoff * 2, INDEX_BACKOFF_MAX)
                return False
            self._index_backoff = INDEX_BACKOFF_MIN
            if time.monotonic() >= deadline or not self._queue.empty():
                return True
            if self._space is not None and self._space.low():
                return False  # the chunk just written reached the reserve

    def _publish(self, accounts: set[int]) -> None:
        if self._hub is not None and accounts:
            try:
                self._hub.publish(accounts)
            except Exception:  # a notification problem must never stop the writer
                log.exception("change notification failed")

    def _resolve(self, op: AcceptOp | CallOp, result: Any, error: BaseException | None) -> None:
        try:
            op.loop.call_soon_threadsafe(_settle, op.future, result, error)
        except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
            log.debug("store result dropped: event loop closed")

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rollback failed")

    def _call(self, op: CallOp) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            result = op.fn(self._conn)
            self._conn.execute("COMMIT")
            if op.touched:
                self._publish(op.touched)
        except StoreError as exc:
            self._rollback()
            self._resolve(op, None, exc)
        except sqlite3.Error as exc:
            self._rollback()
            log.warning("store write failed: %s", exc)
            self._resolve(op, None, check.store_error(exc, "write", self._blobs.integrity))
        except Exception as exc:  # a bug in fn: report it to the caller, keep the thread alive
            self._rollback()
            self._resolve(op, None, exc)
        else:
            self._resolve(op, result, None)

    def _accept_batch(self, ops: list[AcceptOp]) -> None:
        if not ops:
            return
        for op in ops:
            if not op.blob:
                op.blob = blob_hash(op.message.data)
        try:
            self._blobs.write_many(
                [(op.blob, op.message.data) for op in ops if not op.blob_durable], self._pool
            )
        except OSError as exc:
            log.error("blob write failed for a batch of %d: %s", len(ops), exc)
            error = (DiskFull("the disk is full: could not write the message")
                     if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                     else StoreError("could not write the message to disk"))
            for op in ops:
                self._resolve(op, None, error)
            return
        outcomes: list[tuple[AcceptResult | None, BaseException | None]] = []
        conn = self._conn
        now = time.time()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in ops:
                conn.execute("SAVEPOINT one_message")
                try:
                    outcome = self.insert(conn, op.message, op.blob, op.wire, now)
                except (StoreError, sqlite3.Error) as failure:
                    conn.execute("ROLLBACK TO one_message")
                    conn.execute("RELEASE one_message")
                    outcomes.append((None, _as_store_error(failure)))
                else:
                    conn.execute("RELEASE one_message")
                    outcomes.append((outcome, None))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            log.error("commit failed for a batch of %d: %s", len(ops), exc)
            error = check.store_error(exc, "write", self._blobs.integrity)
            for op in ops:
                self._resolve(op, None, error)
            return
        accounts = {d[0] for result, _ in outcomes if result is not None for d in result.delivered}
        if accounts:
            self._index_due = True
            self._publish(accounts)
        self._resolve_many(ops, outcomes)

    def _resolve_many(
        self, ops: list[AcceptOp], outcomes: list[tuple[AcceptResult | None, BaseException | None]]
    ) -> None:
        """Settles a batch's futures with one cross-thread call per event loop (each call
        wakes the loop and takes the GIL hand-over) instead of one per message."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Settlement]] = {}
        for op, (result, err) in zip(ops, outcomes, strict=True):
            by_loop.setdefault(op.loop, []).append((op.future, result, err))
        for loop, settlements in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, settlements)
            except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
                log.debug("store results dropped: event loop closed")

    def insert(
        self, conn: sqlite3.Connection, msg: IncomingMessage, blob: str, wire: WireShape,
        now: float,
    ) -> AcceptResult:
        """All rows of one message whose body ``blob`` is durable, in the writer thread's
        open transaction; raises to roll back (to its savepoint, in a batch)."""
        # Re-check under the write lock: a garbage collector in another process deletes
        # unreferenced blob files while holding this same lock (see SQLiteStore.collect_garbage).
        if not self._blobs.exists(blob):
            raise StoreError("message body vanished before commit; retry")
        self._index_due = True
        conn.execute(
            "INSERT INTO blobs (hash, size, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT (hash) DO UPDATE SET created_at = excluded.created_at",
            (blob, len(msg.data), now),
        )
        delivered: list[tuple[int, int, int]] = []
        keys = keys_of(msg.thread_keys, msg.envelope)
        threads = {account: file_thread(conn, account, keys, blob)
                   for account in {local.account_id for local in msg.local}}
        for local in msg.local:
            name = inbox_name(local.mailbox)
            rows = conn.execute(
                "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1"
                " WHERE account_id = ? AND name = ? RETURNING id, uidnext - 1, highestmodseq",
                (local.account_id, name),
            ).fetchall()  # drain RETURNING fully so the statement is finished
            if not rows:
                raise NotFound(f"no mailbox {name!r} for account {local.account_id}")
            row = rows[0]
            mailbox_id, uid, modseq = int(row[0]), int(row[1]), int(row[2])
            if uid > MAX_UID:
                raise StoreError(f"mailbox {name!r} has run out of UIDs")
            conn.execute(
                "INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, size, blob,"
                " envelope, bodystructure, wire_size, unterminated, saved_at, thread_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    mailbox_id,
                    uid,
                    modseq,
                    " ".join(canonical_flags(local.flags)),
                    msg.internal_date,
                    len(msg.data),
                    blob,
                    msg.envelope,
                    msg.bodystructure,
                    wire.size,
                    int(wire.unterminated),
                    now,  # RFC 8514 section 3: saved into this mailbox now
                    threads[local.account_id],
                ),
            )
            delivered.append((local.account_id, mailbox_id, uid))
        if msg.remote:
            conn.executemany(
                "INSERT INTO queue (queue_id, mail_from, rcpt_to, blob, state, attempts,"  # noqa: S608
                " next_attempt, created_at, auth_account_id, " + DSN_COLUMNS + ")"
                " VALUES (?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (msg.queue_id, msg.mail_from, rcpt, blob, now, now,
                     msg.auth_account_id, *row_values(msg, rcpt))
                    for rcpt in msg.remote
                ],
            )
        return AcceptResult(blob=blob, delivered=tuple(delivered), queued=len(msg.remote))


def file_thread(conn: sqlite3.Connection, account_id: int, keys: tuple[str, ...], blob: str) -> str:
    """The thread of a new message in ``account_id`` (RFC 8474 section 5.2): the thread of
    the first of its keys already filed there, else a new one; its keys are filed under it."""
    thread = None
    for key in keys:
        row = conn.execute(
            "SELECT thread_id FROM thread_keys WHERE account_id = ? AND key = ?",
            (account_id, key),
        ).fetchone()
        if row is not None:
            thread = str(row[0])
            break
    if thread is None:
        thread = own_thread(blob)
    conn.executemany(
        "INSERT OR IGNORE INTO thread_keys (account_id, key, thread_id) VALUES (?, ?, ?)",
        [(account_id, key, thread) for key in keys],
    )
    return thread
