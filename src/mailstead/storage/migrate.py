"""Versioned schema migrations: numbered ``NNNN_name.sql`` files applied in order, one
transaction each, recorded in ``schema_version``.

Every release must open every older store (DESIGN.md "Storage"), and a store written by a
newer release must be refused rather than misread. ``store_meta`` records the program version
that last wrote the store and the oldest one able to read it, so the refusal can name it.

Each step is one transaction, so a process killed half-way leaves the store at the previous
step and the next start carries on. SQLite's DDL is transactional, CREATE VIRTUAL TABLE ... fts5
included (its shadow tables are ordinary tables); no migration may use a PRAGMA or VACUUM,
which would not roll back.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mailstead import __version__
from mailstead.core.errors import StoreError

log = logging.getLogger(__name__)

# Bookkeeping beside schema_version, outside the numbered migrations: it must be readable before
# any migration runs (to refuse a newer store), and v0.1.0 stores simply lack it.
STORE_META_DDL = "CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
# Free space asked beyond the database's own size for the pre-upgrade copy (VACUUM INTO writes
# at most the live pages, plus its journal).
BACKUP_MARGIN = 16 * 1024 * 1024
# Where both backends put their pre-upgrade backup, inside the data directory.
BACKUP_DIR = "backups"

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: ``version`` is its number, ``sql`` the statements to run."""

    version: int
    name: str
    sql: str


def load_migrations(
    package: str = "mailstead.storage", folder: str = "migrations"
) -> list[Migration]:
    """The migrations shipped in ``package/folder``, sorted; numbering must be 1, 2, 3, ..."""
    root = resources.files(package).joinpath(folder)
    found: list[Migration] = []
    for entry in root.iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise StoreError(f"migration numbering has a gap or duplicate at {migration.version}")
    return found


def split_statements(sql: str) -> list[str]:
    """Splits a script into complete statements (triggers with BEGIN...END stay whole)."""
    statements: list[str] = []
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    rest = "\n".join(
        line for line in buffer.splitlines() if line.strip() and not line.strip().startswith("--")
    )
    if rest.strip():
        raise StoreError(f"incomplete SQL statement in migration: {rest.strip()[:60]!r}")
    return statements


def current_version(conn: sqlite3.Connection) -> int:
    """The highest applied migration, 0 for an empty database."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


def newer_store_message(meta: dict[str, str], schema: int, latest: int) -> str:
    """The one-line refusal of a store whose schema is newer than this program knows."""
    needed = meta.get("min_reader") or meta.get("written_by")
    if needed:
        return (
            f"this store was written by Mailstead {meta.get('written_by', needed)} (schema "
            f"{schema}); this is Mailstead {__version__} (schema {latest}): install {needed} "
            "or newer"
        )
    return (
        f"this store has schema {schema}; this is Mailstead {__version__} (schema {latest}): "
        "install the newer Mailstead that wrote it"
    )


def stamp_values(meta: dict[str, str], schema: int, migrated: bool) -> dict[str, str]:
    """The store_meta rows after this program opened the store: who wrote it last, and the
    oldest program able to read it (this one once it has changed the schema)."""
    values = {"written_by": __version__, "schema": str(schema)}
    keep = not migrated and "min_reader" in meta
    values["min_reader"] = meta["min_reader"] if keep else __version__
    return values


def read_meta_sqlite(conn: sqlite3.Connection) -> dict[str, str]:
    """The store_meta rows, empty for a store that predates them."""
    conn.execute(STORE_META_DDL)
    return {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM store_meta")}


def pre_upgrade_backup_sqlite(
    conn: sqlite3.Connection, backup_dir: Path, old: int, new: int
) -> Path:
    """Copies the database to ``backup_dir`` with VACUUM INTO before a schema upgrade, after
    checking there is room; returns the copy's path. Message bodies need no copy: they are
    files named by their SHA-256, never rewritten, and no migration touches them (migrations
    are SQL only)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    needed = int(pages) * int(page_size) + BACKUP_MARGIN
    backup_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    free = shutil.disk_usage(backup_dir).free
    if free < needed:
        raise StoreError(
            f"the upgrade from schema {old} to {new} needs {-(-needed // 2**20)} MB free in "
            f"{backup_dir} for the pre-upgrade backup ({free // 2**20} MB free); free space or "
            "set [store] upgrade_backup = false"
        )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = backup_dir / f"pre-upgrade-{old}-to-{new}-{stamp}.db"
    tmp = target.with_suffix(".db.part")
    # A copy interrupted half-way (a killed process) is left as .part, never mistaken for a
    # whole backup; the next attempt clears it away.
    for stale in backup_dir.glob("pre-upgrade-*.db.part"):
        stale.unlink(missing_ok=True)
    conn.execute("VACUUM INTO ?", (str(tmp),))
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    tmp.rename(target)
    log.warning("store.pre_upgrade_backup", extra={"path": str(target), "from": old, "to": new})
    return target


def migrate_sqlite(
    conn: sqlite3.Connection,
    migrations: list[Migration] | None = None,
    *,
    backup_dir: Path | None = None,
    before_step: Callable[[Migration], None] | None = None,
) -> int:
    """Brings the database up to the newest migration; returns the resulting version.

    ``conn`` must be in autocommit mode (``isolation_level=None``). Each migration runs in its
    own ``BEGIN IMMEDIATE`` transaction and re-checks the version inside it, so two processes
    opening the same fresh store at once apply each step exactly once. An existing store is
    first copied to ``backup_dir`` (when given); ``before_step`` runs inside each step's
    transaction, before its statements.
    """
    steps = load_migrations() if migrations is None else migrations
    latest = steps[-1].version if steps else 0
    version = current_version(conn)
    meta = read_meta_sqlite(conn)
    if version > latest:
        raise StoreError(newer_store_message(meta, version, latest))
    start = version
    if backup_dir is not None and 0 < version < latest:
        pre_upgrade_backup_sqlite(conn, backup_dir, version, latest)
    for step in steps:
        if step.version <= version:
            continue
        statements = split_statements(step.sql)
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            if row is not None and row[0] is not None and int(row[0]) >= step.version:
                conn.execute("ROLLBACK")
                version = int(row[0])
                continue
            if before_step is not None:
                before_step(step)
            for statement in statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                (step.version, step.name, time.time()),
            )
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"migration {step.version} ({step.name}) failed: {exc}") from exc
            raise
        version = step.version
    values = stamp_values(meta, version, version != start)
    if values != meta:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO store_meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                sorted(values.items()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return version
