"""SQLite-specific behaviour: migrations, pragmas, blob modes, batch failure, garbage collection."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from mailstead.core.errors import NotFound, StoreError
from mailstead.storage.blobs import BlobStore
from mailstead.storage.interfaces import IncomingMessage, LocalDelivery
from mailstead.storage.migrate import Migration, load_migrations, migrate_sqlite, split_statements
from mailstead.storage.sqlite.store import SQLiteStore


def msg(data: bytes, account: int) -> IncomingMessage:
    return IncomingMessage(data, "Q1", "", [LocalDelivery(account)], [], 1.0, "{}", "{}")


def test_migrations_apply_once(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "db", isolation_level=None)
    latest = load_migrations()[-1].version
    assert migrate_sqlite(conn) == latest
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"domains", "accounts", "aliases", "mailboxes", "messages", "queue", "blobs"} <= tables
    assert migrate_sqlite(conn) == latest  # no-op
    assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == latest


def test_newer_database_refused(tmp_path: Path) -> None:
    async def body() -> None:
        store = await SQLiteStore.open(tmp_path)
        await store.close()
        conn = sqlite3.connect(tmp_path / "mailstead.db", isolation_level=None)
        conn.execute("INSERT INTO schema_version VALUES (999, 'future', 0)")
        conn.close()
        with pytest.raises(StoreError, match=r"written by Mailstead .* \(schema 999\); this is"):
            await SQLiteStore.open(tmp_path)

    asyncio.run(body())


def test_failed_migration_rolls_back(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "db", isolation_level=None)
    steps = [
        Migration(1, "ok", "CREATE TABLE a (x INTEGER);"),
        Migration(2, "bad", "CREATE TABLE b (x INTEGER);\nINSERT INTO nope VALUES (1);"),
    ]
    with pytest.raises(StoreError, match="migration 2"):
        migrate_sqlite(conn, steps)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "a" in tables
    assert "b" not in tables
    assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 1


def test_split_statements() -> None:
    sql = (
        "-- c\nCREATE TABLE t (x);\n"
        "CREATE TRIGGER g AFTER INSERT ON t BEGIN\n  SELECT 1;\nEND;\n-- end\n"
    )
    assert len(split_statements(sql)) == 2
    with pytest.raises(StoreError):
        split_statements("CREATE TABLE t (x")


def test_pragmas(tmp_path: Path) -> None:
    async def body() -> None:
        store = await SQLiteStore.open(tmp_path)
        try:
            conn = store._writer._conn
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
            assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
            assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
            assert (tmp_path / "mailstead.db").stat().st_mode & 0o777 == 0o600
        finally:
            await store.close()

    asyncio.run(body())


@pytest.mark.parametrize("mode", ["fsync", "syncfs"])
def test_blob_modes(tmp_path: Path, mode: Any) -> None:
    try:
        blobs = BlobStore(tmp_path / "blobs", sync=mode)
    except OSError:
        pytest.skip("syncfs not available")
    items = [(hashlib.sha256(d).hexdigest(), d) for d in (b"a", b"b", b"a")]
    blobs.write_many(items)
    for name, data in items:
        assert blobs.read(name) == data
        path = blobs.path(name)
        assert path.parent.parent.name == name[:2]
        assert path.parent.name == name[2:4]
    assert not list((tmp_path / "blobs").rglob(".tmp-*"))


def test_corrupt_leftover_blob_is_replaced(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    data = b"complete message"
    name = hashlib.sha256(data).hexdigest()
    path = blobs.path(name)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"compl")  # a crash left a partial file under the final name
    blobs.write_many([(name, data)])
    assert blobs.read(name) == data


def test_bad_blob_names(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    for bad in ("", "../x", "A" * 64, "0" * 63, "0" * 64 + "/"):
        with pytest.raises(NotFound):
            blobs.read(bad)


def test_blob_failure_fails_whole_batch(tmp_path: Path) -> None:
    async def body() -> None:
        store = await SQLiteStore.open(tmp_path)
        try:
            await store.add_domain("e.test")
            account = (await store.add_account("a@e.test", "h")).id
            with mock.patch.object(BlobStore, "write_many", side_effect=OSError(28, "No space")):
                results = await asyncio.gather(
                    *(store.accept_message(msg(b"m%d" % i, account)) for i in range(5)),
                    return_exceptions=True,
                )
            assert all(isinstance(r, StoreError) for r in results)
            assert await store.list_messages(account, "INBOX") == []
            ok = await store.accept_message(msg(b"after", account))  # the writer survived
            assert ok.delivered[0][2] == 1
        finally:
            await store.close()

    asyncio.run(body())


def test_large_message_written_outside_batch(tmp_path: Path) -> None:
    async def body() -> None:
        store = await SQLiteStore.open(tmp_path)
        try:
            await store.add_domain("e.test")
            account = (await store.add_account("a@e.test", "h")).id
            big = b"x" * (1024 * 1024)
            result = await store.accept_message(msg(big, account))
            assert await store.read_blob(result.blob) == big
        finally:
            await store.close()

    asyncio.run(body())


def test_collect_garbage(tmp_path: Path) -> None:
    async def body() -> None:
        store = await SQLiteStore.open(tmp_path)
        try:
            await store.add_domain("e.test")
            keep = (await store.add_account("keep@e.test", "h")).id
            drop = (await store.add_account("drop@e.test", "h")).id
            kept = await store.accept_message(msg(b"kept", keep))
            gone = await store.accept_message(msg(b"gone", drop))
            await store.remove_account("drop@e.test")
            assert await store.collect_garbage(grace=3600) == 0  # too recent
            assert await store.collect_garbage(grace=-1) == 1
            assert await store.read_blob(kept.blob) == b"kept"
            with pytest.raises(NotFound):
                await store.read_blob(gone.blob)
        finally:
            await store.close()

    asyncio.run(body())


def test_close_drains_pending_writes(tmp_path: Path) -> None:
    async def body() -> None:
        store = await SQLiteStore.open(tmp_path)
        await store.add_domain("e.test")
        account = (await store.add_account("a@e.test", "h")).id
        tasks = [
            asyncio.ensure_future(store.accept_message(msg(b"d%d" % i, account))) for i in range(50)
        ]
        await asyncio.sleep(0)  # all submitted
        await store.close()
        results = await asyncio.gather(*tasks)
        assert len(results) == 50
        again = await SQLiteStore.open(tmp_path)
        try:
            assert len(await again.list_messages(account, "INBOX")) == 50
        finally:
            await again.close()

    asyncio.run(body())
