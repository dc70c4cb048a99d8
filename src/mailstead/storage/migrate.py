"""Versioned schema migrations: numbered ``NNNN_name.sql`` files applied in order, one
transaction each, recorded in ``schema_version``.

Every release must open every older store (DESIGN.md "Storage"), and a store written by a
newer release must be refused rather than misread.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources

from mailstead.core.errors import StoreError

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


def migrate_sqlite(conn: sqlite3.Connection, migrations: list[Migration] | None = None) -> int:
    """Brings the database up to the newest migration; returns the resulting version.

    ``conn`` must be in autocommit mode (``isolation_level=None``). Each migration runs in its
    own ``BEGIN IMMEDIATE`` transaction and re-checks the version inside it, so two processes
    opening the same fresh store at once apply each step exactly once.
    """
    steps = load_migrations() if migrations is None else migrations
    latest = steps[-1].version if steps else 0
    version = current_version(conn)
    if version > latest:
        raise StoreError(
            f"database is from a newer Mailstead (schema version {version}, this program knows "
            f"up to {latest}); upgrade Mailstead or restore a matching backup"
        )
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
    return version
