"""Upgrades of an existing SQLite store: the version stamp, the refusal of a newer store, the
pre-upgrade backup and its free-space check, and resuming after a step was interrupted."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from mailstead import __version__
from mailstead.core.errors import StoreError
from mailstead.storage import migrate
from mailstead.storage.migrate import Migration, migrate_sqlite, newer_store_message

STEPS = [
    Migration(1, "one", "CREATE TABLE a (x INTEGER);"),
    Migration(2, "two", "CREATE TABLE b (y INTEGER);\nINSERT INTO b VALUES (1);\n"),
    Migration(3, "three", "CREATE TABLE c (z INTEGER);"),
]


def _conn(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM store_meta").fetchall())


def test_open_stamps_the_writer(tmp_path: Path) -> None:
    conn = _conn(tmp_path / "db")
    try:
        assert migrate_sqlite(conn, STEPS) == 3
        assert _meta(conn) == {"written_by": __version__, "schema": "3", "min_reader": __version__}
    finally:
        conn.close()


def test_refusal_names_the_version_needed() -> None:
    line = newer_store_message({"written_by": "9.1.0", "min_reader": "9.0.0"}, 40, 11)
    assert line == (
        f"this store was written by Mailstead 9.1.0 (schema 40); this is Mailstead "
        f"{__version__} (schema 11): install 9.0.0 or newer"
    )
    assert "\n" not in line
    bare = newer_store_message({}, 40, 11)
    assert "schema 40" in bare
    assert f"Mailstead {__version__} (schema 11)" in bare


def test_newer_store_refused_and_unchanged(tmp_path: Path) -> None:
    conn = _conn(tmp_path / "db")
    try:
        migrate_sqlite(conn, STEPS)
        conn.execute(
            "UPDATE store_meta SET value = '7.0.0' WHERE key IN ('written_by', 'min_reader')"
        )
        conn.execute("INSERT INTO schema_version VALUES (4, 'future', 0)")
        before = (tmp_path / "db").read_bytes()
        refusal = r"written by Mailstead 7\.0\.0 \(schema 4\).*install 7\.0\.0 or newer$"
        with pytest.raises(StoreError, match=refusal):
            migrate_sqlite(conn, STEPS, backup_dir=tmp_path / "backups")
        assert (tmp_path / "db").read_bytes() == before
        assert not (tmp_path / "backups").exists()
    finally:
        conn.close()


def test_upgrade_backs_up_first(tmp_path: Path) -> None:
    conn = _conn(tmp_path / "db")
    try:
        migrate_sqlite(conn, STEPS[:2])
        assert migrate_sqlite(conn, STEPS, backup_dir=tmp_path / "backups") == 3
        (copy,) = (tmp_path / "backups").iterdir()
        assert copy.name.startswith("pre-upgrade-2-to-3-")
        assert copy.suffix == ".db"
        old = _conn(copy)
        try:
            assert old.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 2
            assert old.execute("SELECT y FROM b").fetchall() == [(1,)]
        finally:
            old.close()
        # A store already at the newest schema, and a fresh one, are not copied.
        migrate_sqlite(conn, STEPS, backup_dir=tmp_path / "backups")
        fresh = _conn(tmp_path / "fresh")
        try:
            migrate_sqlite(fresh, STEPS, backup_dir=tmp_path / "backups")
        finally:
            fresh.close()
        assert len(list((tmp_path / "backups").iterdir())) == 1
    finally:
        conn.close()


def test_no_room_for_the_backup_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = _conn(tmp_path / "db")
    try:
        migrate_sqlite(conn, STEPS[:1])

        def tiny(path: Any) -> Any:
            return shutil._ntuple_diskusage(10**9, 10**9 - 1024, 1024)  # type: ignore[attr-defined]

        monkeypatch.setattr(migrate.shutil, "disk_usage", tiny)
        needs = r"needs \d+ MB free in .*backups.*upgrade_backup = false"
        with pytest.raises(StoreError, match=needs):
            migrate_sqlite(conn, STEPS, backup_dir=tmp_path / "backups")
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 1
    finally:
        conn.close()


def test_interrupted_step_resumes(tmp_path: Path) -> None:
    conn = _conn(tmp_path / "db")

    def die_at_two(step: Migration) -> None:
        if step.version == 2:
            raise KeyboardInterrupt  # stands in for a kill half-way through step 2

    try:
        with pytest.raises(KeyboardInterrupt):
            migrate_sqlite(conn, STEPS, before_step=die_at_two)
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 1
        assert migrate_sqlite(conn, STEPS) == 3
        assert conn.execute("SELECT y FROM b").fetchall() == [(1,)]
    finally:
        conn.close()
