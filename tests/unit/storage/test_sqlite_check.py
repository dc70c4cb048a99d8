"""Damage to the SQLite file: told apart from passing failures, found at open (the store
refuses to start with the verify advice) and by ``verify_store``."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from mailstead.core.errors import CorruptData, StoreError
from mailstead.storage.integrity import Integrity
from mailstead.storage.sqlite import check
from mailstead.storage.sqlite.store import DB_NAME, SQLiteStore
from mailstead.storage.verify import verify_store

PAGE = 4096


def _exc(code: int, text: str) -> sqlite3.DatabaseError:
    exc = sqlite3.DatabaseError(text)
    exc.sqlite_errorcode = code  # type: ignore[attr-defined]
    return exc


def test_corruption_is_told_from_passing_failures() -> None:
    assert check.is_corruption(_exc(11, "database disk image is malformed"))
    assert check.is_corruption(_exc(26, "file is not a database"))
    assert check.is_corruption(_exc(11 | (1 << 8), "malformed"))  # an extended code
    assert not check.is_corruption(_exc(13, "database or disk is full"))  # SQLITE_FULL
    assert not check.is_corruption(sqlite3.OperationalError("database is locked"))
    assert check.is_corruption(sqlite3.DatabaseError("database disk image is malformed"))
    integrity = Integrity()
    assert isinstance(check.store_error(_exc(11, "malformed"), "read", integrity), CorruptData)
    assert integrity.corrupt_database == 1
    plain = check.store_error(_exc(5, "database is locked"), "read", integrity)
    assert type(plain) is StoreError
    assert integrity.corrupt_database == 1


def _filled_store(data_dir: Path) -> None:
    async def fill() -> None:
        store = await SQLiteStore.open(data_dir)
        try:
            await store.add_domain("example.test")
            for n in range(300):
                await store.add_account(f"user{n:04d}-padding-padding@example.test", "h" * 60)
        finally:
            await store.close()

    asyncio.run(fill())


def _damage_middle(db: Path) -> None:
    raw = bytearray(db.read_bytes())
    pages = len(raw) // PAGE
    assert pages > 4
    for page in range(2, pages):
        start = page * PAGE
        if raw[start] in (0x0D, 0x05):  # b-tree table pages (fileformat2.html 1.6)
            raw[start] = 0xFF
            raw[start + 8 : start + 40] = b"\xa5" * 32
    db.write_bytes(bytes(raw))


def test_open_refuses_a_damaged_file_and_verify_reports_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _filled_store(data_dir)
    report = asyncio.run(verify_store(data_dir))
    assert report.ok
    assert report.database == []
    _damage_middle(data_dir / DB_NAME)
    with pytest.raises(CorruptData, match=r"is damaged.*mailstead verify"):
        SQLiteStore.open_blocking(data_dir)
    report = asyncio.run(verify_store(data_dir))
    assert not report.ok
    assert report.database


def test_a_file_that_is_no_database_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / DB_NAME).write_bytes(b"\x00garbage" * 2000)
    with pytest.raises(CorruptData, match="mailstead verify"):
        SQLiteStore.open_blocking(data_dir)
