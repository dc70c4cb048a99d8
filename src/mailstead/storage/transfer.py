"""Copies the embedded store (``DATA/mailstead.db`` and the blob files) into an empty PostgreSQL
database and proves the copy before anything is committed (``mailstead store migrate``,
issue 10).

How it works:
- the SQLite database is read in one read transaction (a consistent snapshot), the blob files
  beside it; the server must be stopped (``processes_using`` finds one that is not);
- the target is opened with ``PostgresStore.open`` (so its schema is the newest), then one
  transaction on a dedicated connection copies every table of ``TABLES`` (not the web
  sessions, ``SKIPPED``: they end with the move) with
  ``copy_records_to_table`` (binary COPY) in batches, ids unchanged, bodies into
  ``blobs.data``; the user triggers (quota totals, FTS pending rows) are off meanwhile because
  the copied rows already carry their results; identity sequences are moved past the
  highest id;
- still inside that transaction it verifies row counts per table, the SHA-256 and size of
  every body as PostgreSQL holds it, and per mailbox UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, the
  message count and the sum of sizes; any difference rolls everything back, so the target is
  either a verified copy or as empty as before.
Memory stays bounded: rows go in batches of ``ROW_BATCH``, bodies in batches of at most
``BLOB_BATCH_BYTES`` (plus one body), with the next batch read in a thread while the previous
one is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from mailstead.core.errors import CorruptData, NotFound, StoreError
from mailstead.storage.blobs import BlobStore
from mailstead.storage.postgres.base import MIGRATION_LOCK
from mailstead.storage.sqlite.store import DB_NAME, SQLiteStore, connect
from mailstead.storage.sqlite.writer import wire_shape

# Every table of the schema, referenced tables before the tables that reference them.
TABLES: tuple[str, ...] = (
    "meta", "domains", "accounts", "aliases", "mailboxes", "subscriptions", "vanished",
    "blobs", "messages", "queue", "fts_docs", "fts_pending", "dkim_keys", "totp",
    "recovery_codes", "app_passwords", "login_audit", "ip_blocks", "greylist",
    "greylist_networks", "bayes_tokens", "bayes_learned", "sieve_scripts", "sieve_log",
    "leases", "auth_failures", "import_origins", "tls_results", "tls_reports_sent",
    "tls_reports_received", "thread_keys",
)
# SQLite tables that are not copied as such: the migration log (PostgreSQL keeps its own) and
# the FTS5 index with its shadow tables (its text goes into PostgreSQL's fts_docs).
SQLITE_ONLY = frozenset(
    {"schema_version", "fts", "fts_data", "fts_idx", "fts_content", "fts_docsize", "fts_config"}
)
# Tables of both schemas that are deliberately not copied: web sessions are short-lived and
# worth nothing after the move (people sign in again on the new store); store_meta is the
# version stamp each store writes for itself when it is opened.
SKIPPED = frozenset({"web_sessions", "store_meta"})
# Source columns with no PostgreSQL counterpart: fts_docs.id only links a document to its
# FTS5 row in SQLite.
DROPPED: dict[str, tuple[str, ...]] = {"fts_docs": ("id",)}
# Target columns the transfer fills itself rather than from a column of the same name.
SUPPLIED: dict[str, tuple[str, ...]] = {"blobs": ("data",), "fts_docs": ("header", "body")}

ROW_BATCH = 5000
BLOB_BATCH_BYTES = 16 * 1024 * 1024
BLOB_BATCH_ROWS = 1000
VERIFY_BATCH = 500
# sha256() in SQL appeared in PostgreSQL 11.
MIN_SERVER_MAJOR = 11


class TransferError(StoreError):
    """The store cannot be copied, or the copy did not verify; the text says what to do."""


@dataclass(frozen=True, slots=True)
class Progress:
    """Where the transfer is, for a progress display: ``step`` is "copying" or "verifying"."""

    step: str
    table: str
    done: int
    total: int
    nbytes: int = 0
    total_bytes: int = 0


ProgressFn = Callable[[Progress], None]


@dataclass
class TransferReport:
    """What was copied and verified."""

    rows: dict[str, int] = field(default_factory=dict)
    accounts: int = 0
    mailboxes: int = 0
    messages: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    measured: int = 0  # messages from before migration 0004 whose wire size was computed
    skipped_blobs: list[str] = field(default_factory=list)  # unreferenced and unreadable
    cleaned_values: int = 0  # text values PostgreSQL could not hold (NUL, lone surrogates)
    seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def safe_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    head, sep, tail = dsn.partition("@")
    if not sep or "://" not in head:
        return dsn
    scheme, _, userinfo = head.partition("://")
    return f"{scheme}://{userinfo.split(':', 1)[0]}@{tail}"


def processes_using(data_dir: Path) -> list[int]:
    """Other processes with the SQLite database of ``data_dir`` open (a running ``mailstead
    serve``, a CLI command), found through ``/proc/PID/fd``; only processes this user may
    inspect are seen, and nothing on systems without /proc."""
    targets = {str((data_dir / name).resolve()) for name in (DB_NAME, f"{DB_NAME}-wal")}
    me = os.getpid()
    found: list[int] = []
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{entry.name}/fd/{fd}")
            except OSError:
                continue
            if link in targets:
                found.append(int(entry.name))
                break
    return sorted(found)


def sqlite_tables(conn: sqlite3.Connection) -> set[str]:
    """The data tables of a SQLite store to copy (without SQLite's own, ``SQLITE_ONLY`` and
    ``SKIPPED``)."""
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    names = {str(r[0]) for r in rows if not str(r[0]).startswith("sqlite_")}
    return names - SQLITE_ONLY - SKIPPED


async def copy_to_postgres(
    data_dir: Path, dsn: str, progress: ProgressFn | None = None
) -> TransferReport:
    """Copies the embedded store of ``data_dir`` into the empty PostgreSQL database ``dsn``
    and verifies the copy before committing it. Raises TransferError (refused, or the copy
    did not verify: then nothing was committed) or StoreError (database failures)."""
    started = time.monotonic()
    if not (data_dir / DB_NAME).is_file():
        raise TransferError(f"no embedded store in {data_dir} ({DB_NAME} is missing)")
    users = processes_using(data_dir)
    if users:
        raise TransferError(
            f"the store in {data_dir} is in use by process {', '.join(map(str, users))} "
            "(is `mailstead serve` running?): stop the server first, then run this again"
        )
    # An installation upgraded but not started since has an older schema: migrate it first,
    # so the source has every column the target has.
    store = await SQLiteStore.open(data_dir)
    await store.close()

    from mailstead.storage.postgres.store import PostgresStore

    target = await PostgresStore.open(dsn, pool_size=1)  # creates or upgrades the schema
    await target.close()
    try:
        conn: asyncpg.Connection = await asyncpg.connect(dsn)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise StoreError(f"cannot connect to PostgreSQL at {safe_dsn(dsn)}: {exc}") from exc
    source = connect(data_dir / DB_NAME, writer=False)
    try:
        job = _Transfer(source, BlobStore(data_dir / "blobs"), conn, progress)
        await job.run()
    finally:
        source.close()
        with contextlib.suppress(Exception):
            await conn.close()
    job.report.seconds = time.monotonic() - started
    return job.report


@dataclass
class _Table:
    """How one table is read from SQLite and written to PostgreSQL."""

    name: str
    columns: list[str]  # target columns, in the order of the rows
    select: str  # SQLite query producing rows in that order
    convert: list[Callable[[Any], Any] | None]


class _Transfer:
    """One run of the copy: the source snapshot, the target connection and the tallies."""

    def __init__(
        self,
        source: sqlite3.Connection,
        blobs: BlobStore,
        conn: asyncpg.Connection,
        progress: ProgressFn | None,
    ) -> None:
        self.source = source
        self.blobs = blobs
        self.conn = conn
        self.progress = progress or (lambda _p: None)
        self.report = TransferReport()
        self.expected: dict[str, int] = {}
        self.shapes: dict[str, tuple[int, int]] = {}  # blob -> (wire size, unterminated)
        self.unmeasured: set[str] = set()

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            return self.source.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"reading the embedded store failed: {exc}") from exc

    async def run(self) -> None:
        version = self.conn.get_server_version()
        if version.major < MIN_SERVER_MAJOR:
            raise TransferError(
                f"PostgreSQL {MIN_SERVER_MAJOR} or newer is needed (this server is "
                f"{version.major}.{version.minor})"
            )
        self._read("BEGIN")  # one snapshot for every read below
        try:
            tables = await self._plan()
            for name in TABLES:
                self.expected[name] = int(self._read(f"SELECT COUNT(*) FROM {name}")[0][0])  # noqa: S608
            self.unmeasured = {
                str(r[0])
                for r in self._read("SELECT DISTINCT blob FROM messages WHERE wire_size IS NULL")
            }
            async with _pg("copying into PostgreSQL"), self.conn.transaction():
                # Nodes starting meanwhile wait in their schema migration until the commit.
                await self.conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                await self._check_empty()
                triggered = await self._user_triggers()
                for name in triggered:
                    await self.conn.execute(f"ALTER TABLE {_q(name)} DISABLE TRIGGER USER")
                await self.conn.execute("DELETE FROM meta")  # the schema's initial counters
                for table in tables:
                    await self._copy(table)
                await self._reset_identities()
                for name in triggered:
                    await self.conn.execute(f"ALTER TABLE {_q(name)} ENABLE TRIGGER USER")
                await self._verify()
        finally:
            with contextlib.suppress(sqlite3.Error):
                self.source.execute("ROLLBACK")
        r = self.report
        r.rows = {name: self.expected[name] for name in TABLES}
        r.accounts, r.mailboxes = r.rows["accounts"], r.rows["mailboxes"]
        r.messages, r.blobs = r.rows["messages"], r.rows["blobs"]

    # Planning --------------------------------------------------------------------------

    async def _plan(self) -> list[_Table]:
        """Matches every source table and column with the target's; refuses a schema the
        transfer does not know (a table added without updating ``TABLES``)."""
        unknown = sqlite_tables(self.source) - set(TABLES)
        if unknown:
            raise TransferError(
                f"the embedded store has tables this version cannot copy: {sorted(unknown)}"
            )
        rows = await self.conn.fetch(
            "SELECT table_name, column_name, data_type, is_nullable, column_default,"
            " is_identity FROM information_schema.columns"
            " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
        )
        target: dict[str, dict[str, Any]] = {}
        for row in rows:
            target.setdefault(row["table_name"], {})[row["column_name"]] = row
        plans = []
        for name in TABLES:
            if name not in target:
                raise TransferError(f"the PostgreSQL schema has no table {name}")
            info = self._read(f"PRAGMA table_info({name})")
            source_cols = [str(r[1]) for r in info if str(r[1]) not in DROPPED.get(name, ())]
            missing = [c for c in source_cols if c not in target[name]]
            if missing:
                raise TransferError(f"the PostgreSQL table {name} lacks columns {missing}")
            columns = [*source_cols, *SUPPLIED.get(name, ())]
            for col, meta in target[name].items():
                required = meta["is_nullable"] == "NO" and meta["column_default"] is None
                if col not in columns and required and meta["is_identity"] != "YES":
                    raise TransferError(f"nothing to copy into {name}.{col} (NOT NULL)")
            plans.append(
                _Table(
                    name,
                    columns,
                    self._select(name, source_cols),
                    [self._converter(target[name][c]["data_type"]) for c in columns],
                )
            )
        return plans

    @staticmethod
    def _select(name: str, columns: list[str]) -> str:
        """The SQLite query giving a table's rows in the order of the target columns."""
        if name == "fts_docs":
            # The document text lives in the FTS5 table under the document's id.
            return (
                "SELECT d.blob, d.complete, f.header, f.body FROM fts_docs d"
                " LEFT JOIN fts f ON f.rowid = d.id"
            )
        return f"SELECT {', '.join(_q(c) for c in columns)} FROM {name}"  # noqa: S608

    def _converter(self, data_type: str) -> Callable[[Any], Any] | None:
        """SQLite's loose typing to what asyncpg's binary COPY expects for ``data_type``."""
        if data_type in ("bigint", "integer", "smallint"):
            return int
        if data_type in ("double precision", "real"):
            return float
        if data_type == "boolean":
            return bool
        if data_type in ("text", "character varying", "character"):
            return self._text
        return None

    def _text(self, value: Any) -> str:
        """A str PostgreSQL accepts: TEXT cannot hold NUL, and UTF-8 cannot hold a lone
        surrogate; such characters become U+FFFD (counted in the report)."""
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        if "\x00" in text or (not text.isascii() and _has_surrogate(text)):
            self.report.cleaned_values += 1
            text = text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
        return text

    async def _check_empty(self) -> None:
        """Refuses a database holding anything but the schema's initial counters: merging
        two installations would mix ids, UIDVALIDITYs and accounts."""
        used = []
        for name in TABLES:
            if name != "meta" and await self.conn.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {_q(name)})"  # noqa: S608
            ):
                used.append(name)
        if used:
            accounts = await self.conn.fetchval("SELECT COUNT(*) FROM accounts")
            what = f"{accounts} account(s)" if accounts else f"rows in {', '.join(used[:5])}"
            raise TransferError(
                f"the PostgreSQL database is not empty ({what}): store migrate copies only "
                "into an empty database; create one (createdb -O USER NAME) and give its URI"
            )

    async def _user_triggers(self) -> list[str]:
        """Tables with triggers of ours (quota totals, FTS pending rows): the copied rows
        carry their effects already, so the triggers must not fire again."""
        rows = await self.conn.fetch(
            "SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace"
        )
        return sorted(str(r[0]) for r in rows if r[0] in TABLES)

    # Copying ---------------------------------------------------------------------------

    async def _copy(self, table: _Table) -> None:
        """Streams one table into PostgreSQL in batches, reporting progress."""
        total = self.expected[table.name]
        if table.name == "blobs":
            total_bytes = int(self._read("SELECT COALESCE(SUM(size), 0) FROM blobs")[0][0])
            batches = self._blob_batches(table)
        else:
            total_bytes = 0
            batches = self._row_batches(table)
        done = nbytes = 0
        self.progress(Progress("copying", table.name, 0, total, 0, total_bytes))
        async for batch in _prefetched(batches):
            async with _pg(f"copying the table {table.name}"):
                await self.conn.copy_records_to_table(
                    table.name, records=batch, columns=table.columns
                )
            done += len(batch)
            if table.name == "blobs":
                nbytes += sum(len(row[-1]) for row in batch)
            self.progress(Progress("copying", table.name, done, total, nbytes, total_bytes))
        if table.name == "blobs":
            self.report.blob_bytes = nbytes
            self.expected["blobs"] -= len(self.report.skipped_blobs)

    def _row_batches(self, table: _Table) -> Iterator[list[tuple[Any, ...]]]:
        """Rows of an ordinary table, ROW_BATCH at a time, converted for COPY."""
        cursor = self.source.execute(table.select)
        measure = table.name == "messages"
        if measure:
            blob, wire, unterminated = (
                table.columns.index(c) for c in ("blob", "wire_size", "unterminated")
            )
        while rows := cursor.fetchmany(ROW_BATCH):
            batch = []
            for row in rows:
                values = list(row)
                if table.name == "fts_docs" and values[2] is None:
                    # A document without its text: marked incomplete, searches read the body.
                    values[1:4] = [0, "", ""]
                if measure and values[wire] is None:
                    # Migration 0004 left older rows unmeasured; their bodies were measured
                    # while the blobs were copied.
                    values[wire], values[unterminated] = self.shapes[str(values[blob])]
                    self.report.measured += 1
                batch.append(_converted(values, table.convert))
            yield batch

    def _blob_batches(self, table: _Table) -> Iterator[list[tuple[Any, ...]]]:
        """Blob rows with their bodies, at most BLOB_BATCH_BYTES (or one body) at a time."""
        cursor = self.source.execute(table.select)
        batch: list[tuple[Any, ...]] = []
        size = 0
        while rows := cursor.fetchmany(BLOB_BATCH_ROWS):
            for row in rows:
                name = str(row[0])
                data = self._blob(name, int(row[1]))
                if data is None:
                    continue
                if name in self.unmeasured:
                    shape = wire_shape(data)
                    self.shapes[name] = (shape.size, int(shape.unterminated))
                batch.append(_converted([*row, data], table.convert))
                size += len(data)
                if size >= BLOB_BATCH_BYTES or len(batch) >= BLOB_BATCH_ROWS:
                    yield batch
                    batch, size = [], 0
        if batch:
            yield batch

    def _blob(self, name: str, size: int) -> bytes | None:
        """The checked bytes of one body, or None for a lost body nothing refers to (the
        garbage collector deletes files inside its transaction, so a crash can leave such a
        row behind); a lost or damaged body a message or queue row needs stops the copy."""
        try:
            data = self.blobs.read(name)
        except CorruptData:
            problem = "is damaged (its SHA-256 differs from its name)"
        except (NotFound, OSError) as exc:
            problem = f"cannot be read ({exc})"
        else:
            if hashlib.sha256(data).hexdigest() == name and len(data) == size:
                return data
            problem = "is damaged (its SHA-256 or size differs from its name and record)"
        referenced = self.source.execute(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE blob = ?)"
            " OR EXISTS (SELECT 1 FROM queue WHERE blob = ?)",
            (name, name),
        ).fetchone()
        if referenced is not None and referenced[0]:
            raise TransferError(
                f"message body {self.blobs.path(name)} {problem}: restore it from a backup, "
                "then run the migration again"
            )
        self.report.skipped_blobs.append(name)
        return None

    async def _reset_identities(self) -> None:
        """Identity columns were given explicit ids: the next generated id must follow the
        highest copied one."""
        rows = await self.conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND is_identity = 'YES'"
        )
        for row in rows:
            table, column = str(row[0]), str(row[1])
            await self.conn.execute(
                f"SELECT setval(pg_get_serial_sequence($1, $2),"  # noqa: S608
                f" COALESCE((SELECT MAX({_q(column)}) FROM {_q(table)}), 0) + 1, false)",
                _q(table), column,
            )

    # Verifying -------------------------------------------------------------------------

    async def _verify(self) -> None:
        """Compares the copy with the snapshot inside the copy's transaction; raises
        TransferError (rolling everything back) listing the first differences."""
        problems: list[str] = []
        for name in TABLES:
            self.progress(Progress("verifying", name, 0, self.expected[name]))
            got = await self.conn.fetchval(f"SELECT COUNT(*) FROM {_q(name)}")  # noqa: S608
            if got != self.expected[name]:
                problems.append(f"{name}: {self.expected[name]} rows to copy, {got} copied")
        problems += await self._verify_blobs()
        mailbox_sql = (
            "SELECT b.id, b.uidvalidity, b.uidnext, b.highestmodseq, COUNT(m.id),"
            " COALESCE(SUM(m.size), 0) FROM mailboxes b"
            " LEFT JOIN messages m ON m.mailbox_id = b.id GROUP BY b.id ORDER BY b.id"
        )
        want = {int(r[0]): tuple(int(x) for x in r[1:]) for r in self._read(mailbox_sql)}
        have = {
            int(r[0]): tuple(int(x) for x in tuple(r)[1:])
            for r in await self.conn.fetch(mailbox_sql)
        }
        labels = ("uidvalidity", "uidnext", "highestmodseq", "messages", "bytes")
        for mailbox in sorted(set(want) | set(have)):
            a, b = want.get(mailbox), have.get(mailbox)
            if a != b:
                pairs = zip(labels, a or (), b or (), strict=False)
                shown = [f"{k} {x} != {y}" for k, x, y in pairs if x != y] or ["missing"]
                problems.append(f"mailbox {mailbox}: {', '.join(shown)}")
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise TransferError(
                "the copy did not verify, nothing was committed: "
                + "; ".join(problems[:5]) + more
            )

    async def _verify_blobs(self) -> list[str]:
        """Recomputes every body's SHA-256 in PostgreSQL, in keyset-paged batches."""
        problems: list[str] = []
        last, done, nbytes = "", 0, 0
        total, total_bytes = self.expected["blobs"], self.report.blob_bytes
        while True:
            rows = await self.conn.fetch(
                "SELECT hash, encode(sha256(data), 'hex') = hash AND octet_length(data) = size,"
                " octet_length(data) FROM blobs WHERE hash > $1 ORDER BY hash LIMIT $2",
                last, VERIFY_BATCH,
            )
            if not rows:
                return problems
            for name, ok, length in rows:
                if not ok:
                    problems.append(f"body {name} differs in PostgreSQL")
                nbytes += int(length)
            done += len(rows)
            last = str(rows[-1][0])
            self.progress(Progress("verifying", "blobs", done, total, nbytes, total_bytes))


async def _prefetched(
    batches: Iterator[list[tuple[Any, ...]]],
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Yields the batches of ``batches``, reading the next one in a thread (SQLite rows, blob
    files) while the caller sends the current one to PostgreSQL."""
    pending = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
    try:
        while True:
            batch = await pending
            if batch is None:
                return
            pending = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
            yield batch
    finally:
        # The generator must not be left running in a thread when the caller gives up.
        if not pending.done():
            await asyncio.wait([pending])
        if not pending.cancelled():
            pending.exception()


def _converted(values: list[Any], convert: list[Callable[[Any], Any] | None]) -> tuple[Any, ...]:
    return tuple(
        v if v is None or fn is None else fn(v) for v, fn in zip(values, convert, strict=True)
    )


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


@contextlib.asynccontextmanager
async def _pg(what: str) -> Any:
    """asyncpg and connection errors as StoreError naming the step."""
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise StoreError(f"{what} failed: {exc}") from exc
