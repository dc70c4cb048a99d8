"""Backup and restore of a PostgreSQL store: every table dumped with binary COPY inside one
``REPEATABLE READ READ ONLY`` transaction (one snapshot of the whole database while the nodes
go on writing; bodies included, since they live in ``blobs.data``), and loaded back with COPY
into an empty database whose schema ``PostgresStore.open`` has just made."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from mailstead import __version__
from mailstead.storage import backup as layout
from mailstead.storage.backup import BackupError, CheckReport, FileEntry, Manifest
from mailstead.storage.postgres.store import PostgresStore

DATABASE_DIR = "database"
# The migration log is not copied: the target writes its own when its schema is made.
_NOT_COPIED = frozenset({"schema_version"})
# The first bytes of every binary COPY file (PostgreSQL docs, "COPY", Binary Format).
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
Tick = Callable[[int, int], None]


@dataclass
class PgBackupReport:
    """What one ``backup`` of a PostgreSQL store did."""

    snapshot: Path
    files: int = 0
    tables: int = 0
    copied_bytes: int = 0
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _connect(dsn: str) -> Any:
    try:
        return await asyncpg.connect(dsn)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise BackupError(f"cannot connect to PostgreSQL: {exc}") from None


async def _tables(conn: Any) -> list[str]:
    """Every table of the schema, each after the tables its foreign keys point to."""
    names = [str(r[0]) for r in await conn.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        " AND table_type = 'BASE TABLE' ORDER BY table_name")]
    edges = await conn.fetch(
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c"
        " WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace")
    needs: dict[str, set[str]] = {n: set() for n in names}
    for child, parent in edges:
        child, parent = str(child).strip('"'), str(parent).strip('"')
        if child in needs and parent in needs and child != parent:
            needs[child].add(parent)
    ordered: list[str] = []
    while needs:
        ready = sorted(n for n, deps in needs.items() if not deps - set(ordered))
        if not ready:  # a cycle: COPY order cannot satisfy it, leave the rest alphabetical
            ready = sorted(needs)
        for n in ready:
            ordered.append(n)
            del needs[n]
    return ordered


async def _counts(conn: Any) -> dict[str, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT COUNT(*) FROM accounts), (SELECT COUNT(*) FROM mailboxes),"
        " (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM queue),"
        " (SELECT COUNT(*) FROM blobs)")
    keys = ("accounts", "mailboxes", "messages", "queue", "blobs")
    return dict(zip(keys, (int(v) for v in row), strict=True))


async def dump(dsn: str, target: Path) -> tuple[int, dict[str, int], list[str]]:
    """Writes every table of ``dsn`` as ``target/<table>.copy`` from one snapshot; returns
    (schema version, counts, tables in load order)."""
    conn = await _connect(dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            schema = int(await conn.fetchval(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version"))
            tables = [t for t in await _tables(conn) if t not in _NOT_COPIED]
            counts = await _counts(conn)
            for table in tables:
                await conn.copy_from_table(table, output=str(target / f"{table}.copy"),
                                           format="binary")
    finally:
        await conn.close()
    for table in tables:
        with (target / f"{table}.copy").open("rb") as f:
            os.fsync(f.fileno())
    return schema, counts, tables


async def take_backup(
    dsn: str, data_dir: Path, dest: Path, *, clock: Callable[[], float] = time.monotonic,
) -> PgBackupReport:
    """Snapshots the PostgreSQL store ``dsn`` and the files of ``data_dir`` into ``dest``."""
    started = clock()
    snaps = dest / layout.SNAPSHOTS
    for d in (dest, snaps):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = time.time()
    name = layout.snapshot_name(now)
    partial = snaps / f"{layout.PARTIAL_PREFIX}{name}.{secrets.token_hex(4)}"
    (partial / DATABASE_DIR).mkdir(mode=0o700, parents=True)
    try:
        schema, counts, tables = await dump(dsn, partial / DATABASE_DIR)
        entries = [FileEntry(f"{DATABASE_DIR}/{t}.copy",
                             *layout.sha256_file(partial / DATABASE_DIR / f"{t}.copy"))
                   for t in tables]
        report = PgBackupReport(snapshot=snaps / name, tables=len(tables), counts=counts,
                                copied_bytes=sum(e.size for e in entries))
        entries += layout.copy_data_files(data_dir, partial)
        manifest = Manifest(
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            backend="postgresql", program_version=__version__, schema_version=schema,
            counts=counts, files=entries, tables=tables,
        )
        layout.finish_snapshot(partial, report.snapshot, manifest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    report.files = len(entries) + 1
    report.seconds = clock() - started
    return report


async def pre_upgrade_backup(dsn: str, data_dir: Path, backups: Path, old: int,
                             new: int) -> Path:
    """A whole ``mailstead backup`` of the database (and the data dir's files) into
    ``backups/pre-upgrade-OLD-to-NEW/`` before a schema upgrade, after checking there is room;
    returns the snapshot. A run killed half-way leaves only a partial snapshot, which
    ``backup --verify`` never counts and the next attempt replaces."""
    conn = await _connect(dsn)
    try:
        size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()
    dest = backups / f"pre-upgrade-{old}-to-{new}"
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    # COPY's binary files are about the size of the live rows; the database's own size
    # (indexes and free pages included) bounds them.
    needed = size + 16 * 1024 * 1024
    free = shutil.disk_usage(dest).free
    if free < needed:
        raise BackupError(
            f"the upgrade from schema {old} to {new} needs {-(-needed // 2**20)} MB free in "
            f"{dest} for the pre-upgrade backup ({free // 2**20} MB free); free space or "
            "set [store] upgrade_backup = false"
        )
    snaps = dest / layout.SNAPSHOTS
    if snaps.is_dir():
        for stale in snaps.glob(f"{layout.PARTIAL_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
    report = await take_backup(dsn, data_dir, dest)
    return report.snapshot


def check_dump(snapshot: Path, manifest: Manifest, report: CheckReport) -> None:
    """Every table the manifest lists has a dump file that starts like binary COPY."""
    for table in manifest.tables:
        path = snapshot / DATABASE_DIR / f"{table}.copy"
        try:
            with path.open("rb") as f:
                head = f.read(len(_SIGNATURE))
        except OSError:
            report.database.append(f"the dump of table {table} is missing")
            continue
        if head != _SIGNATURE:
            report.database.append(f"the dump of table {table} is not a binary COPY file")


# Tables a fresh schema already fills (the UIDVALIDITY counter, the version stamp of the
# program that made it): the backup's rows replace them.
_OWN_ROWS = ("meta", "store_meta")


async def _check_empty(conn: Any, tables: list[str]) -> None:
    used = [t for t in tables if t not in _OWN_ROWS
            and await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {_q(t)})")]  # noqa: S608
    if used:
        raise BackupError(
            f"the PostgreSQL database is not empty (rows in {', '.join(used[:5])}): restore "
            "only into an empty database (createdb -O USER NAME) and give it with --store")


async def load(dsn: str, snapshot: Path, manifest: Manifest) -> None:
    """Loads the dump of ``snapshot`` into the empty database ``dsn`` in one transaction."""
    store = await PostgresStore.open(dsn, pool_size=1)  # makes the newest schema
    await store.close()
    conn = await _connect(dsn)
    try:
        version = int(await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version"))
        if version != manifest.schema_version:
            raise BackupError(
                f"the backup has schema version {manifest.schema_version}, this program "
                f"makes {version}: restore it with mailstead {manifest.program_version}")
        existing = set(await _tables(conn))
        unknown = [t for t in manifest.tables if t not in existing]
        if unknown:
            raise BackupError(f"the backup has tables this schema lacks: {', '.join(unknown)}")
        async with conn.transaction():
            await _check_empty(conn, manifest.tables)
            # The copied rows carry their triggers' effects (quota totals, text-index queue).
            for t in manifest.tables:
                await conn.execute(f"ALTER TABLE {_q(t)} DISABLE TRIGGER USER")
            for t in _OWN_ROWS:
                if t in existing:
                    await conn.execute(f"TRUNCATE {_q(t)}")
            for t in manifest.tables:
                await conn.copy_to_table(t, source=str(snapshot / DATABASE_DIR / f"{t}.copy"),
                                         format="binary")
            for t in manifest.tables:
                await conn.execute(f"ALTER TABLE {_q(t)} ENABLE TRIGGER USER")
            rows = await conn.fetch(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND is_identity = 'YES'")
            for row in rows:
                table, column = str(row[0]), str(row[1])
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence($1, $2),"  # noqa: S608
                    f" COALESCE((SELECT MAX({_q(column)}) FROM {_q(table)}), 0) + 1, false)",
                    _q(table), column)
    except asyncpg.PostgresError as exc:
        raise BackupError(f"restore into PostgreSQL failed, nothing loaded: {exc}") from None
    finally:
        await conn.close()


async def restore_backup(src: Path, data_dir: Path, dsn: str, name: str | None) -> CheckReport:
    """Restores a PostgreSQL snapshot: its files into the empty ``data_dir``, its dump into
    the empty database ``dsn``; the files are checked against the manifest first."""
    snapshot = layout.pick_snapshot(src, name)
    manifest = layout.load_manifest(snapshot)
    layout.check_restore_target(data_dir, manifest)
    report = CheckReport(snapshot.name)
    layout.check_files(snapshot, manifest, report)
    check_dump(snapshot, manifest, report)
    if report.bad_files or report.database:
        first = (report.bad_files + report.database)[0]
        raise BackupError(f"the backup is damaged, nothing restored: {first}")
    await load(dsn, snapshot, manifest)
    layout.restore_files(snapshot, manifest, data_dir)
    return report


def verify_backup(dest: Path, name: str | None = None) -> CheckReport:
    """Checks one PostgreSQL snapshot without restoring it: every file (the dump's included)
    against the manifest, and every table's dump file present as binary COPY."""
    snapshot = layout.pick_snapshot(dest, name)
    manifest = layout.load_manifest(snapshot)
    report = CheckReport(snapshot.name)
    layout.check_files(snapshot, manifest, report)
    check_dump(snapshot, manifest, report)
    return report
