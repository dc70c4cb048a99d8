"""The embedded store: SQLite in WAL mode for everything but bodies, bodies as blob files.

Layout under the data directory: ``mailstead.db`` (with ``-wal``, ``-shm``) and
``blobs/ab/cd/<sha256>``.

Concurrency model:
- every write goes through one ``Writer`` thread and its connection (``synchronous=FULL``):
  deliveries are group-committed, admin changes run one transaction each;
- tiny indexed lookups done on every RCPT (domain, account, alias) run directly on the
  event-loop thread on a read-only connection: a WAL read of one B-tree page costs a few
  microseconds, far less than a hop to a thread and back; nothing is cached, so changes the
  CLI makes from another process are seen on the very next lookup. Each statement still
  takes a WAL read lock and hands the GIL to the writer thread and back, so the usual RCPT
  (an account) is answered by one statement, ``lookup_recipient``;
- reads that may be large (listings, message bodies) run in a small reader thread pool;
- after every commit the writer tells ``self.hub`` which accounts changed (``watch``).
The mailbox operations for IMAP and POP3 live in ``mailboxes.py``, ``messages.py`` and
``fts.py``; this class only routes them to the writer or a reader.
A second process (the CLI) uses this same class; ``busy_timeout`` makes the two writers wait
for each other instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from mailstead.core.errors import DiskFull, NotFound, StoreError
from mailstead.storage.blobs import BlobStore, blob_hash
from mailstead.storage.interfaces import (
    AcceptResult,
    Account,
    Alias,
    AppPassword,
    DkimKey,
    FlagOp,
    IncomingMessage,
    IpBlock,
    LoginRecord,
    MailboxChanges,
    MailboxCounts,
    MailboxInfo,
    MessageInfo,
    QueueEntry,
    QueueUpdate,
    Quota,
    ReceivedTlsReport,
    RecentInfo,
    SecondFactor,
    SieveScript,
    StoreFlagsResult,
    TlsResult,
    WebSessionRow,
    address_key,
)
from mailstead.storage.migrate import BACKUP_DIR, migrate_sqlite
from mailstead.storage.space import SpaceGuard
from mailstead.storage.sqlite import admin, check, fts, mailboxes, messages, outbound, security
from mailstead.storage.sqlite import admin as admin_sql
from mailstead.storage.sqlite import imports as imports_sql
from mailstead.storage.sqlite import shared as shared_sql
from mailstead.storage.sqlite import sieve as sieve_sql
from mailstead.storage.sqlite import spam as spam_sql
from mailstead.storage.sqlite import tlsreports as tlsrpt_sql
from mailstead.storage.sqlite import websessions as web_sql
from mailstead.storage.sqlite.writer import WireShape, Writer, inbox_name, wire_shape
from mailstead.storage.watch import Watch, WatchHub

T = TypeVar("T")

log = logging.getLogger(__name__)

DB_NAME = "mailstead.db"
BUSY_TIMEOUT_MS = 10_000
# Bodies larger than this are written and fsync'd by the caller (in a thread) before joining
# a batch, so one big message does not hold up the group commit of many small ones.
LARGE_BLOB = 256 * 1024


def connect(path: Path, *, writer: bool) -> sqlite3.Connection:
    """A connection with the store's pragmas; autocommit mode, transactions are explicit."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        if writer:
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: the WAL is fsync'd at every commit, so a commit is on disk when it returns.
            conn.execute("PRAGMA synchronous = FULL")
        else:
            conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error:
        conn.close()
        raise
    return conn


def _end_read(conn: sqlite3.Connection) -> None:
    """Ends a read transaction; after a failed statement (a damaged page) COMMIT may fail
    too, and then the snapshot is dropped with ROLLBACK so the connection stays usable."""
    try:
        conn.execute("COMMIT")
    except sqlite3.Error:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")


def _account(row: tuple[int, str, str, float]) -> Account:
    return Account(int(row[0]), row[1], row[2], float(row[3]))


class SQLiteStore:
    """Implements ``mailstead.storage.interfaces.Store``; create with ``await SQLiteStore.open``."""

    networked = False  # one node: see interfaces.Store.networked

    def start_indexing(self) -> None:
        """Nothing to start: the writer thread indexes whenever it is idle (fts.py)."""

    def __init__(
        self,
        data_dir: Path,
        writer: Writer,
        read_conn: sqlite3.Connection,
        blobs: BlobStore,
        hub: WatchHub | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.hub = hub if hub is not None else WatchHub()
        self._db_path = data_dir / DB_NAME
        self._writer = writer
        self._read = read_conn
        self.blobs = blobs
        self.integrity = blobs.integrity
        self.space = SpaceGuard(data_dir)
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="store-reader")
        self._closed = False

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        *,
        quick: bool = True,
        space: SpaceGuard | None = None,
        upgrade_backup: bool = True,
    ) -> SQLiteStore:
        """Opens (creating and migrating as needed) the store in ``data_dir``. A coroutine
        because it does file I/O; raises StoreError (e.g. for a newer schema), and
        CorruptData when ``PRAGMA quick_check`` (skipped when not ``quick``) finds damage.
        ``space`` guards the free-space reserve (default: 200 MiB or 1%, see space.py); with
        ``upgrade_backup`` a schema upgrade first copies the database to ``DATA/backups/``."""
        return await asyncio.to_thread(
            cls.open_blocking, data_dir, quick=quick, space=space, upgrade_backup=upgrade_backup
        )

    @classmethod
    def open_blocking(
        cls,
        data_dir: Path,
        *,
        quick: bool = True,
        space: SpaceGuard | None = None,
        upgrade_backup: bool = True,
    ) -> SQLiteStore:
        """``open`` without a running loop (a thread, or before ``asyncio.run``)."""
        try:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            blobs = BlobStore(data_dir / "blobs")
            db_path = data_dir / DB_NAME
            wconn = connect(db_path, writer=True)
            try:
                # A damaged file is refused before anything writes to it (migrations
                # included): the admin gets one line that says to run `mailstead verify`.
                if quick and (problems := check.quick_check(wconn)):
                    blobs.integrity.database_corrupt("the start-up check", problems[0])
                    raise check.startup_refusal(db_path, data_dir, problems)
                migrate_sqlite(
                    wconn, backup_dir=data_dir / BACKUP_DIR if upgrade_backup else None
                )
                os.chmod(db_path, 0o600)
                rconn = connect(db_path, writer=False)
            except BaseException:
                wconn.close()
                raise
        except sqlite3.Error as exc:
            if check.is_corruption(exc):
                raise check.startup_refusal(data_dir / DB_NAME, data_dir, [str(exc)]) from exc
            raise StoreError(f"cannot open the database in {data_dir}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"cannot open the data directory {data_dir}: {exc}") from exc
        hub = WatchHub()
        guard = space if space is not None else SpaceGuard(data_dir)
        writer = Writer(wconn, blobs, hub=hub, space=guard)
        store = cls(data_dir, writer, rconn, blobs, hub)
        store.space = guard
        return store

    async def close(self) -> None:
        """Writes everything already submitted, then closes every connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._writer.stop)
        self._readers.shutdown(wait=True)
        with self._reader_lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        self._read.close()

    # Helpers -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    def _lookup(self, sql: str, args: Sequence[object]) -> list[tuple[object, ...]]:
        """A tiny indexed read on the event-loop thread (see the module docstring)."""
        self._check_open()
        try:
            return self._read.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise check.store_error(exc, "read", self.integrity) from exc

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self._db_path, writer=False)
            self._local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn

    async def _in_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._check_open()

        def run() -> T:
            conn = self._reader_conn()
            try:
                conn.execute("BEGIN")  # one consistent snapshot for multi-statement reads
                try:
                    return fn(conn)
                finally:
                    _end_read(conn)
            except sqlite3.Error as exc:
                raise check.store_error(exc, "read", self.integrity) from exc

        return await asyncio.get_running_loop().run_in_executor(self._readers, run)

    async def _write(
        self, fn: Callable[[sqlite3.Connection], T], touched: set[int] | None = None
    ) -> T:
        self._check_open()
        return await self._writer.call(fn, touched)

    # Domains -----------------------------------------------------------------------------

    async def add_domain(self, name: str) -> None:
        await self._write(lambda c: admin.add_domain(c, name))

    async def remove_domain(self, name: str) -> None:
        await self._write(lambda c: admin.remove_domain(c, name))

    async def list_domains(self) -> list[str]:
        return [str(r[0]) for r in self._lookup("SELECT name FROM domains ORDER BY name", ())]

    async def is_local_domain(self, name: str) -> bool:
        return bool(self._lookup("SELECT 1 FROM domains WHERE name = ?", (name.lower(),)))

    # Accounts ----------------------------------------------------------------------------

    _ACCOUNT = "SELECT id, address, password_hash, created_at FROM accounts"

    async def add_account(self, address: str, password_hash: str) -> Account:
        return await self._write(lambda c: admin.add_account(c, address, password_hash))

    async def get_account(self, address: str) -> Account | None:
        rows = self._lookup(self._ACCOUNT + " WHERE address_key = ?", (address_key(address),))
        return _account(rows[0]) if rows else None  # type: ignore[arg-type]

    # One read for everything RCPT asks about an address (delivery/recipients.py,
    # RecipientLookup): is the domain ours, the account of the exact address, the room left
    # under its quota (RFC 9208 section 5.1; NULL for an unlimited one), and does it have an
    # active Sieve script. Every separate read on the loop thread pays a WAL read-lock
    # round trip and a GIL hand-over, so this replaces three or four of them per recipient.
    _RECIPIENT = (
        "SELECT (SELECT 1 FROM domains WHERE name = ?), a.id, a.address, a.password_hash,"
        " a.created_at, a.quota - a.used_bytes,"
        " (SELECT s.content FROM sieve_scripts s WHERE s.account_id = a.id AND s.active = 1)"
        " FROM (SELECT 1) LEFT JOIN accounts a ON a.address_key = ?"
    )

    async def lookup_recipient(
        self, domain: str, address: str
    ) -> tuple[bool, Account | None, int | None, str | None]:
        """(domain is local, account of ``address`` or None, octets left under its quota or
        None when unlimited, the text of the account's active Sieve script or None), read in
        one statement; the last two are None without an account. Nothing is cached: a change
        made by the CLI applies to the next call."""
        row = self._lookup(self._RECIPIENT, (domain.lower(), address_key(address)))[0]
        local = row[0] is not None
        if row[1] is None:
            return local, None, None, None
        script, room = row[6], row[5]
        return (local, _account(row[1:5]),  # type: ignore[arg-type]
                room if isinstance(room, int) else None,
                None if script is None else str(script))

    async def get_account_by_id(self, account_id: int) -> Account | None:
        rows = self._lookup(self._ACCOUNT + " WHERE id = ?", (account_id,))
        return _account(rows[0]) if rows else None  # type: ignore[arg-type]

    async def list_accounts(self, domain: str | None = None) -> list[Account]:
        def run(conn: sqlite3.Connection) -> list[Account]:
            if domain is None:
                rows = conn.execute(self._ACCOUNT + " ORDER BY address_key").fetchall()
            else:
                rows = conn.execute(
                    self._ACCOUNT + " WHERE domain_id = (SELECT id FROM domains WHERE name = ?)"  # noqa: S608
                    " ORDER BY address_key",
                    (domain.lower(),),
                ).fetchall()
            return [_account(r) for r in rows]

        return await self._in_reader(run)

    async def set_password(self, address: str, password_hash: str) -> None:
        await self._write(lambda c: admin.set_password(c, address, password_hash))

    async def remove_account(self, address: str) -> None:
        await self._write(lambda c: admin.remove_account(c, address))

    # Aliases -----------------------------------------------------------------------------

    async def add_alias(self, source: str, targets: Sequence[str]) -> None:
        wanted = tuple(targets)
        await self._write(lambda c: admin.add_alias(c, source, wanted))

    async def get_alias(self, source: str) -> tuple[str, ...] | None:
        rows = self._lookup(
            "SELECT target FROM aliases WHERE source_key = ? ORDER BY id", (address_key(source),)
        )
        return tuple(str(r[0]) for r in rows) if rows else None

    async def list_aliases(self) -> list[Alias]:
        def run(conn: sqlite3.Connection) -> list[Alias]:
            grouped: dict[str, tuple[str, list[str]]] = {}
            for source, key, target in conn.execute(
                "SELECT source, source_key, target FROM aliases ORDER BY source_key, id"
            ):
                grouped.setdefault(key, (source, []))[1].append(target)
            return [Alias(source, tuple(targets)) for source, targets in grouped.values()]

        return await self._in_reader(run)

    async def remove_alias(self, source: str, targets: Sequence[str] = ()) -> None:
        wanted = tuple(targets)
        await self._write(lambda c: admin.remove_alias(c, source, wanted))

    # Messages ----------------------------------------------------------------------------

    async def accept_message(self, message: IncomingMessage) -> AcceptResult:
        """Durable before it returns: blob fsync'd, rows committed in a group-commit batch.
        If the caller is cancelled after submitting, the delivery may still be committed."""
        self._check_open()
        if not message.local and not message.remote:
            raise StoreError("a message needs at least one local or remote recipient")
        # New mail stops at the reserve; what is left is for deleting (space.py). A message
        # costs its body plus rows and index text, counted as about as much again.
        self.space.check("a new message", 2 * len(message.data))
        data = message.data
        if len(data) > LARGE_BLOB:
            name, wire = await asyncio.to_thread(self._write_large, data)
            return await self._writer.accept(message, name, blob_durable=True, wire=wire)
        return await self._writer.accept(message, None, blob_durable=False)  # hashed there

    async def accept_messages(
        self, batch: Sequence[IncomingMessage], *, replace: tuple[int, int] | None = None
    ) -> list[AcceptResult]:
        """All of ``batch`` durable in one transaction, or none (RFC 3502 MULTIAPPEND);
        ``replace`` (mailbox id, UID) is removed in the same transaction (RFC 8508)."""
        self._check_open()
        if not batch:
            return []
        if any(not m.local or m.remote for m in batch):
            raise StoreError("a batch holds local deliveries only")
        self.space.check("new messages", 2 * sum(len(m.data) for m in batch))
        # The bodies first, each fsync'd: nothing references them before the commit.
        written = await asyncio.to_thread(lambda: [self._write_large(m.data) for m in batch])
        touched: set[int] = set()

        def run(conn: sqlite3.Connection) -> list[AcceptResult]:
            now = time.time()
            results = [self._writer.insert(conn, m, blob, wire, now)
                       for m, (blob, wire) in zip(batch, written, strict=True)]
            touched.update(d[0] for r in results for d in r.delivered)
            if replace is not None:
                messages.delete_messages(conn, touched, replace[0], [replace[1]])
            return results

        return await self._writer.call(run, touched)

    def _write_large(self, data: bytes) -> tuple[str, WireShape]:
        """Hashes, writes and fsyncs a large body, and measures it while it is at hand."""
        name = blob_hash(data)
        try:
            self.blobs.write(name, data)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull("the disk is full: could not write the message") from exc
            raise StoreError("could not write the message to disk") from exc
        return name, wire_shape(data)

    async def list_mailboxes(self, account_id: int) -> list[MailboxInfo]:
        def run(conn: sqlite3.Connection) -> list[MailboxInfo]:
            rows = conn.execute(
                "SELECT b.id, b.account_id, b.name, b.special_use, b.uidvalidity, b.uidnext,"
                " b.highestmodseq, (SELECT COUNT(*) FROM messages m WHERE m.mailbox_id = b.id)"
                " FROM mailboxes b WHERE b.account_id = ? ORDER BY b.id",
                (account_id,),
            ).fetchall()
            return [MailboxInfo(*r) for r in rows]

        return await self._in_reader(run)

    async def list_messages(self, account_id: int, mailbox: str) -> list[MessageInfo]:
        """Messages by ascending UID; raises NotFound when the mailbox does not exist."""
        name = inbox_name(mailbox)

        def run(conn: sqlite3.Connection, unmeasured: messages.Unmeasured) -> list[MessageInfo]:
            row = conn.execute(
                "SELECT id FROM mailboxes WHERE account_id = ? AND name = ?", (account_id, name)
            ).fetchone()
            if row is None:
                raise NotFound(f"no mailbox {name!r}")
            return messages.list_in(conn, int(row[0]), unmeasured)

        return await self._measured_read(run)

    async def _measured_read(
        self, fn: Callable[[sqlite3.Connection, messages.Unmeasured], T]
    ) -> T:
        """A read that lists messages: rows from before migration 0004 are measured in the
        reader thread (``messages.Unmeasured``) and their figures written back, so each is
        measured once. A failed write-back only costs a measurement next time."""
        unmeasured = messages.Unmeasured(self.blobs)
        result = await self._in_reader(lambda c: fn(c, unmeasured))
        if unmeasured.found:
            found = dict(unmeasured.found)
            try:
                await self._write(lambda c: messages.save_wire(c, found))
            except StoreError as exc:
                log.warning("cannot record the wire sizes of %d bodies: %s", len(found), exc)
        return result

    async def read_blob(self, blob: str) -> bytes:
        self._check_open()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._readers, self.blobs.read, blob
            )
        except OSError as exc:
            raise StoreError(f"cannot read blob {blob}: {exc}") from exc

    async def verify_bodies(self) -> tuple[int, list[str], list[str]]:
        return await self._in_reader(lambda conn: check.damaged_blobs(conn, self.blobs))

    async def read_blobs(self, blobs: Sequence[str]) -> dict[str, bytes]:
        self._check_open()

        def run() -> dict[str, bytes]:
            out: dict[str, bytes] = {}
            for name in dict.fromkeys(blobs):
                data = self.blobs.read_quiet(name)
                if data is not None:
                    out[name] = data
            return out

        try:  # one hop to a reader thread for the lot
            return await asyncio.get_running_loop().run_in_executor(self._readers, run)
        except OSError as exc:
            raise StoreError(f"cannot read message bodies: {exc}") from exc

    # Outbound queue ----------------------------------------------------------------------

    async def list_queue(self) -> list[QueueEntry]:
        return await self._in_reader(outbound.list_queue)

    # Outbound delivery (interfaces.OutboundStore, outbound.py) ------------------------------

    async def claim_due(
        self, now: float, limit: int, lease: float, owner: str = ""
    ) -> list[QueueEntry]:
        return await self._write(lambda c: outbound.claim_due(c, now, limit, lease, owner))

    async def update_queue(self, updates: Sequence[QueueUpdate]) -> None:
        wanted = tuple(updates)
        if wanted:
            ended = time.time()
            await self._write(lambda c: outbound.update_queue(c, wanted, ended))

    async def recover_active(self, now: float, owner: str | None = None) -> int:
        return await self._write(lambda c: outbound.recover_active(c, now, owner))

    async def queue_entries(self, queue_id: str) -> list[QueueEntry]:
        return await self._in_reader(lambda c: outbound.queue_entries(c, queue_id))

    async def retry_queue(self, queue_id: str | None, now: float) -> int:
        return await self._write(lambda c: outbound.retry_queue(c, queue_id, now))

    async def delete_queue(self, queue_id: str) -> int:
        return await self._write(lambda c: outbound.delete_queue(c, queue_id))

    async def purge_finished(self, before: float) -> int:
        return await self._write(lambda c: outbound.purge_finished(c, before))

    async def count_sent_since(self, account_id: int, since: float) -> int:
        rows = self._lookup(
            "SELECT COUNT(*) FROM queue WHERE auth_account_id = ? AND created_at >= ?",
            (account_id, since),
        )
        count = rows[0][0]
        assert isinstance(count, int)
        return count

    async def add_dkim_key(self, key: DkimKey) -> None:
        await self._write(lambda c: outbound.add_dkim_key(c, key))

    async def dkim_keys(self, domain: str) -> list[DkimKey]:
        return await self._in_reader(lambda c: outbound.dkim_keys(c, domain))

    async def set_dkim_active(self, domain: str, selectors: Sequence[str]) -> None:
        wanted = tuple(selectors)
        await self._write(lambda c: outbound.set_dkim_active(c, domain, wanted))

    async def remove_dkim_key(self, domain: str, selector: str) -> None:
        await self._write(lambda c: outbound.remove_dkim_key(c, domain, selector))

    # Maintenance -------------------------------------------------------------------------

    async def collect_garbage(self, grace: float = 3600.0) -> int:
        """Deletes blobs no message and no queue row references, last used more than
        ``grace`` seconds ago; returns how many. Mark and sweep, no reference counts: the
        ``blobs`` table lists every body, and the unlinks happen under the write lock, which
        ``accept_message`` re-checks under, so a concurrent delivery of the same bytes in
        another process never commits a reference to a deleted file."""
        cutoff = time.time() - grace

        def run(conn: sqlite3.Connection) -> int:
            names = [
                str(r[0])
                for r in conn.execute(
                    "SELECT hash FROM blobs b WHERE created_at < ?"
                    " AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob = b.hash)"
                    " AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.blob = b.hash)",
                    (cutoff,),
                ).fetchall()
            ]
            conn.executemany("DELETE FROM blobs WHERE hash = ?", [(n,) for n in names])
            fts.drop(conn, names)
            self.blobs.remove(names)
            return len(names)

        return await self._write(run)

    async def repair_contents(
        self, orphans: list[str], temps: list[str], grace: float = 3600.0
    ) -> list[str]:
        """``mailstead verify --repair``: counters, quota usage, dangling index documents and
        the given orphan bodies in one IMMEDIATE transaction of the writer (see
        ``check.repair``), then the temp leftovers; returns what was done."""
        done = await self._write(lambda c: check.repair(c, self.blobs, orphans, grace))
        return done + await asyncio.to_thread(check.remove_temps, temps, grace)

    # Mailbox access for IMAP and POP3 (interfaces.MailStore) -------------------------------

    async def get_mailbox(self, account_id: int, name: str) -> MailboxInfo | None:
        return await self._in_reader(lambda c: mailboxes.get_by_name(c, account_id, name))

    async def mailbox_by_id(self, mailbox_id: int) -> MailboxInfo | None:
        return await self._in_reader(lambda c: mailboxes.get_by_id(c, mailbox_id))

    async def recent_info(self, mailbox_id: int) -> RecentInfo:
        return await self._in_reader(lambda c: mailboxes.recent_info(c, mailbox_id))

    async def claim_recent(self, mailbox_id: int, upto: int) -> int:
        # It only ever rises: when it is at ``upto`` already there is nothing to take, and
        # no write (most SELECTs and NOOPs) is needed. Watchers are not woken: no message
        # changed.
        first = (await self.recent_info(mailbox_id)).first_uid
        if first >= upto:
            return first
        return await self._write(lambda c: mailboxes.claim_recent(c, mailbox_id, upto))

    async def create_mailbox(
        self, account_id: int, name: str, special_use: str | None = None,
        *, limit: int | None = None,
    ) -> MailboxInfo:
        touched: set[int] = set()
        return await self._write(
            lambda c: mailboxes.create(c, touched, account_id, name, special_use, limit),
            touched,
        )

    async def delete_mailbox(self, account_id: int, name: str) -> None:
        touched: set[int] = set()
        await self._write(lambda c: mailboxes.delete(c, touched, account_id, name), touched)

    async def rename_mailbox(
        self, account_id: int, old: str, new: str, *, limit: int | None = None
    ) -> None:
        touched: set[int] = set()
        await self._write(
            lambda c: mailboxes.rename(c, touched, account_id, old, new, limit), touched
        )

    async def set_subscribed(
        self, account_id: int, name: str, subscribed: bool, *, limit: int | None = None
    ) -> None:
        # The account's watchers hear of it: IMAP NOTIFY SubscriptionChange (RFC 5465
        # section 5.5) watches subscriptions.
        await self._write(
            lambda c: mailboxes.set_subscribed(c, account_id, name, subscribed, limit),
            {account_id},
        )

    async def list_subscriptions(self, account_id: int) -> list[str]:
        return await self._in_reader(lambda c: mailboxes.list_subscriptions(c, account_id))

    async def mailbox_counts(
        self, account_id: int, mailbox_id: int | None = None
    ) -> dict[int, MailboxCounts]:
        return await self._in_reader(lambda c: mailboxes.counts(c, account_id, mailbox_id))

    async def list_messages_in(self, mailbox_id: int) -> list[MessageInfo]:
        return await self._measured_read(lambda c, u: messages.list_in(c, mailbox_id, u))

    async def get_messages(
        self,
        mailbox_id: int,
        uids: Sequence[int] | None,
        *,
        envelope: bool = True,
        bodystructure: bool = True,
    ) -> list[MessageInfo]:
        wanted = None if uids is None else tuple(uids)
        return await self._measured_read(
            lambda c, u: messages.get_some(
                c, mailbox_id, wanted, u, envelope=envelope, bodystructure=bodystructure
            )
        )

    async def store_flags(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        op: FlagOp,
        flags: Sequence[str],
        unchanged_since: int | None = None,
    ) -> StoreFlagsResult:
        touched: set[int] = set()
        wanted, given = tuple(uids), tuple(flags)
        return await self._write(
            lambda c: messages.store_flags(
                c, touched, mailbox_id, wanted, op, given, unchanged_since
            ),
            touched,
        )

    async def expunge(self, mailbox_id: int, uids: Sequence[int] | None = None) -> list[int]:
        touched: set[int] = set()
        wanted = None if uids is None else tuple(uids)
        return await self._write(
            lambda c: messages.expunge(c, touched, mailbox_id, wanted), touched
        )

    async def delete_messages(self, mailbox_id: int, uids: Sequence[int]) -> list[int]:
        touched: set[int] = set()
        wanted = tuple(uids)
        return await self._write(
            lambda c: messages.delete_messages(c, touched, mailbox_id, wanted), touched
        )

    async def copy_messages(
        self, src_mailbox_id: int, uids: Sequence[int], dst_mailbox_id: int, *, move: bool = False
    ) -> list[tuple[int, int]]:
        if not move:  # a MOVE adds rows but removes as many; a COPY only adds
            self.space.check("a copy of messages")
        touched: set[int] = set()
        wanted = tuple(uids)
        return await self._write(
            lambda c: messages.copy(c, touched, src_mailbox_id, wanted, dst_mailbox_id, move=move),
            touched,
        )

    async def changes_since(self, mailbox_id: int, modseq: int) -> MailboxChanges:
        return await self._measured_read(
            lambda c, u: messages.changes_since(c, mailbox_id, modseq, u)
        )

    async def search_text(self, mailbox_id: int, text: str, *, part: str) -> set[int]:
        """See ``fts.py``: the mailbox's pending blobs are indexed first (read and extracted
        in a reader thread, inserted by the writer), then one read transaction searches."""
        fts.parse_part(part)  # StoreError for a bad part before any work
        while True:
            docs = await self._in_reader(lambda c: self._prepare_pending(c, mailbox_id))
            if not docs:
                break
            await self._write(functools.partial(fts.insert, docs=docs))
        return await self._in_reader(lambda c: fts.search(c, self.blobs, mailbox_id, text, part))

    def _prepare_pending(self, conn: sqlite3.Connection, mailbox_id: int) -> fts.Prepared:
        messages.state(conn, mailbox_id)  # NotFound for an unknown mailbox
        return fts.prepare(self.blobs, fts.pending_blobs(conn, 500, mailbox_id))

    async def get_quota(self, account_id: int) -> Quota:
        # On the loop thread (see _lookup): asked for every local recipient at RCPT, one row.
        self._check_open()
        try:
            return mailboxes.get_quota(self._read, account_id)
        except sqlite3.Error as exc:
            raise check.store_error(exc, "read", self.integrity) from exc

    async def set_quota(self, account_id: int, limit: int | None) -> None:
        await self._write(lambda c: mailboxes.set_quota(c, account_id, limit))

    async def swap_quota_warning(self, account_id: int, level: int) -> int:
        return await self._write(lambda c: mailboxes.swap_quota_warning(c, account_id, level))

    def watch(self, account_id: int) -> Watch:
        """A watch on this process's changes to the account (no I/O, so not a coroutine)."""
        return self.hub.watch(account_id)

    # Account security (interfaces.SecurityStore, security.py) ------------------------------

    async def get_second_factor(self, account_id: int) -> SecondFactor | None:
        return await self._in_reader(lambda c: security.get_second_factor(c, account_id))

    async def set_second_factor(
        self, account_id: int, secret: str, recovery_digests: Sequence[str], created_at: float
    ) -> None:
        digests = tuple(recovery_digests)
        await self._write(
            lambda c: security.set_second_factor(c, account_id, secret, digests, created_at)
        )

    async def remove_second_factor(self, account_id: int) -> bool:
        return await self._write(lambda c: security.remove_second_factor(c, account_id))

    async def use_totp_counter(self, account_id: int, counter: int) -> bool:
        return await self._write(lambda c: security.use_totp_counter(c, account_id, counter))

    async def use_recovery_code(self, account_id: int, digest: str) -> bool:
        return await self._write(lambda c: security.use_recovery_code(c, account_id, digest))

    async def add_app_password(
        self, account_id: int, name: str, digest: str, protocols: Sequence[str], created_at: float
    ) -> AppPassword:
        wanted = tuple(protocols)
        return await self._write(
            lambda c: security.add_app_password(c, account_id, name, digest, wanted, created_at)
        )

    async def list_app_passwords(self, account_id: int) -> list[AppPassword]:
        # On the loop thread (see _lookup): every login with an app password asks, and a
        # revocation by the CLI must be seen by the very next attempt.
        self._check_open()
        try:
            return security.list_app_passwords(self._read, account_id)
        except sqlite3.Error as exc:
            raise check.store_error(exc, "read", self.integrity) from exc

    async def revoke_app_password(self, account_id: int, name: str) -> None:
        await self._write(lambda c: security.revoke_app_password(c, account_id, name))

    async def security_key_record(self) -> tuple[str | None, str | None]:
        return await self._in_reader(security.security_key_record)

    async def record_security_key(self, check: str) -> str:
        return await self._write(lambda c: security.record_security_key(c, check))

    async def set_sealed_security_key(self, sealed: str | None) -> None:
        await self._write(lambda c: security.set_sealed_security_key(c, sealed))

    async def count_keyed_secrets(self) -> int:
        return await self._in_reader(security.count_keyed_secrets)

    async def add_login_records(self, records: Sequence[LoginRecord]) -> None:
        wanted = tuple(records)
        if wanted:
            await self._write(lambda c: security.add_login_records(c, wanted))

    async def list_logins(self, account_id: int, limit: int) -> list[LoginRecord]:
        return await self._in_reader(lambda c: security.list_logins(c, account_id, limit))

    async def prune_logins(self, before: float) -> int:
        return await self._write(lambda c: security.prune_logins(c, before))

    async def add_block(self, block: IpBlock) -> None:
        await self._write(lambda c: security.add_block(c, block))

    async def active_blocks(self, now: float) -> list[IpBlock]:
        self._check_open()
        try:
            return security.active_blocks(self._read, now)
        except sqlite3.Error as exc:
            raise check.store_error(exc, "read", self.integrity) from exc

    async def remove_block(self, network: str) -> bool:
        return await self._write(lambda c: security.remove_block(c, network))

    # Administrators (issue 7) --------------------------------------------------------------

    async def set_admin(self, address: str, admin: bool) -> None:
        await self._write(lambda c: admin_sql.set_admin(c, address, admin))

    async def is_admin(self, account_id: int) -> bool:
        self._check_open()
        try:
            return admin_sql.is_admin(self._read, account_id)
        except sqlite3.Error as exc:
            raise check.store_error(exc, "read", self.integrity) from exc

    async def list_admin_ids(self) -> list[int]:
        return await self._in_reader(admin_sql.list_admin_ids)

    async def recent_login_failures(self, limit: int) -> list[LoginRecord]:
        wanted = max(1, min(limit, 10_000))
        return await self._in_reader(lambda c: admin_sql.recent_login_failures(c, wanted))

    # Spam filtering (interfaces.SpamStore, spam.py) -------------------------------------

    async def greylist_touch(self, triplet: str, now: float) -> tuple[float, bool]:
        return await self._write(lambda c: spam_sql.greylist_touch(c, triplet, now))

    async def greylist_restart(self, triplet: str, now: float) -> None:
        await self._write(lambda c: spam_sql.greylist_restart(c, triplet, now))

    async def greylist_pass(self, triplet: str, network: str, now: float) -> None:
        await self._write(lambda c: spam_sql.greylist_pass(c, triplet, network, now))

    async def greylist_network_seen(self, network: str) -> float | None:
        self._check_open()
        try:
            return spam_sql.greylist_network_seen(self._read, network)  # one indexed row
        except sqlite3.Error as exc:
            raise check.store_error(exc, "read", self.integrity) from exc

    async def greylist_prune(self, before: float) -> int:
        return await self._write(lambda c: spam_sql.greylist_prune(c, before))

    async def bayes_totals(self, account_id: int) -> tuple[int, int]:
        return await self._in_reader(lambda c: spam_sql.bayes_totals(c, account_id))

    async def bayes_tokens(
        self, account_id: int, tokens: Sequence[int]
    ) -> dict[int, tuple[int, int]]:
        wanted = list(tokens)
        return await self._in_reader(lambda c: spam_sql.bayes_tokens(c, account_id, wanted))

    async def bayes_learn(
        self, account_id: int, message: str, tokens: Sequence[int], spam: bool
    ) -> bool:
        wanted = list(tokens)
        return await self._write(
            lambda c: spam_sql.bayes_learn(c, account_id, message, wanted, spam)
        )

    # Sieve (interfaces.SieveStore, sieve.py) --------------------------------------------

    async def put_sieve_script(self, account_id: int, name: str, content: str) -> None:
        now = time.time()
        await self._write(lambda c: sieve_sql.put_script(c, account_id, name, content, now))

    async def get_sieve_script(self, account_id: int, name: str) -> SieveScript | None:
        return await self._in_reader(lambda c: sieve_sql.get_script(c, account_id, name))

    async def list_sieve_scripts(self, account_id: int) -> list[SieveScript]:
        return await self._in_reader(lambda c: sieve_sql.list_scripts(c, account_id))

    async def active_sieve_script(self, account_id: int) -> SieveScript | None:
        # On the loop thread (see _lookup): asked once per local copy at delivery, one row.
        self._check_open()
        try:
            return sieve_sql.active_script(self._read, account_id)
        except sqlite3.Error as exc:
            raise check.store_error(exc, "read", self.integrity) from exc

    async def sieve_mailbox_exists(self, account_id: int, name: str) -> bool:
        """Whether a fileinto target exists (not part of ``SieveStore``: ``SieveRunner`` uses
        it when the backend has it, ``get_mailbox`` otherwise)."""
        # On the loop thread (see _lookup): asked for each fileinto target at delivery, one
        # index probe, where get_mailbox would count the mailbox's messages in a reader.
        self._check_open()
        try:
            return sieve_sql.mailbox_exists(self._read, account_id, name)
        except sqlite3.Error as exc:
            raise check.store_error(exc, "read", self.integrity) from exc

    async def set_active_sieve_script(self, account_id: int, name: str | None) -> None:
        await self._write(lambda c: sieve_sql.set_active(c, account_id, name))

    async def delete_sieve_script(self, account_id: int, name: str) -> None:
        await self._write(lambda c: sieve_sql.delete_script(c, account_id, name))

    async def rename_sieve_script(self, account_id: int, old: str, new: str) -> None:
        await self._write(lambda c: sieve_sql.rename_script(c, account_id, old, new))

    async def count_sieve_events(
        self, account_id: int, kind: str, key: str | None, since: float
    ) -> int:
        return await self._in_reader(
            lambda c: sieve_sql.count_events(c, account_id, kind, key, since))

    async def add_sieve_event(self, account_id: int, kind: str, key: str, at: float) -> None:
        await self._write(lambda c: sieve_sql.add_event(c, account_id, kind, key, at))

    async def prune_sieve_events(self, before: float) -> int:
        return await self._write(lambda c: sieve_sql.prune_events(c, before))

    # State shared by nodes (interfaces.SharedStateStore, shared.py) ------------------------

    async def acquire_lease(self, name: str, owner: str, now: float, ttl: float) -> bool:
        return await self._write(lambda c: shared_sql.acquire_lease(c, name, owner, now, ttl))

    async def release_lease(self, name: str, owner: str) -> None:
        await self._write(lambda c: shared_sql.release_lease(c, name, owner))

    async def add_auth_failure(self, network: str, account: str, at: float) -> None:
        await self._write(lambda c: shared_sql.add_auth_failure(c, network, account, at))

    async def auth_failures(self, network: str, account: str, since: float) -> tuple[int, int]:
        return await self._in_reader(
            lambda c: shared_sql.auth_failures(c, network, account, since))

    async def clear_auth_failures(self, network: str) -> None:
        await self._write(lambda c: shared_sql.clear_auth_failures(c, network))

    async def prune_auth_failures(self, before: float) -> int:
        return await self._write(lambda c: shared_sql.prune_auth_failures(c, before))

    # Import origins (interfaces.ImportStore, imports.py) ---------------------------------

    async def import_origins(self, mailbox_id: int, source: str) -> dict[str, str]:
        return await self._in_reader(lambda c: imports_sql.origins(c, mailbox_id, source))

    async def add_import_origins(
        self, mailbox_id: int, source: str, rows: Sequence[tuple[str, str]]
    ) -> None:
        await self._write(lambda c: imports_sql.add(c, mailbox_id, source, rows))

    # Web sessions (interfaces.WebSessionStore, websessions.py) ---------------------------

    async def put_web_session(
        self, key: str, account_id: int | None, data: str, created: float, last_seen: float
    ) -> None:
        await self._write(lambda c: web_sql.put(c, key, account_id, data, created, last_seen))

    async def update_web_session(self, key: str, data: str, last_seen: float) -> bool:
        return await self._write(lambda c: web_sql.update(c, key, data, last_seen))

    async def get_web_session(self, key: str) -> WebSessionRow | None:
        # On the loop thread (see _lookup): one primary-key probe for every web request.
        self._check_open()
        try:
            return web_sql.get(self._read, key)
        except sqlite3.Error as exc:
            raise check.store_error(exc, "read", self.integrity) from exc

    async def touch_web_session(self, key: str, last_seen: float) -> None:
        await self._write(lambda c: web_sql.touch(c, key, last_seen))

    async def drop_web_sessions(self, keys: Sequence[str]) -> None:
        await self._write(lambda c: web_sql.drop(c, keys))

    async def drop_account_web_sessions(self, account_id: int, except_key: str | None) -> int:
        return await self._write(lambda c: web_sql.drop_account(c, account_id, except_key))

    async def count_web_sessions(self) -> tuple[int, int]:
        return await self._in_reader(web_sql.count)

    async def prune_web_sessions(
        self, idle_before: float, created_before: float, max_anonymous: int, max_signed_in: int
    ) -> int:
        return await self._write(lambda c: web_sql.prune(
            c, idle_before, created_before, max_anonymous, max_signed_in))

    # SMTP TLS reporting (interfaces.TlsReportStore, tlsreports.py) -------------------------

    async def add_tls_results(self, rows: Sequence[TlsResult]) -> None:
        if rows:
            await self._write(lambda c: tlsrpt_sql.add_results(c, rows))

    async def tls_results(self, day: str) -> list[TlsResult]:
        return await self._in_reader(lambda c: tlsrpt_sql.results(c, day))

    async def claim_tls_report(self, day: str, policy_domain: str, now: float) -> bool:
        return await self._write(lambda c: tlsrpt_sql.claim(c, day, policy_domain, now))

    async def prune_tls_results(self, before_day: str) -> int:
        return await self._write(lambda c: tlsrpt_sql.prune(c, before_day))

    async def add_received_tls_report(self, report: ReceivedTlsReport) -> bool:
        return await self._write(lambda c: tlsrpt_sql.add_received(c, report))

    async def received_tls_reports(self, limit: int) -> list[ReceivedTlsReport]:
        return await self._in_reader(lambda c: tlsrpt_sql.received(c, limit))
