"""SQLite specifics of the wire size: the measurement itself, migration 0004 on an existing
store, and the lazy measurement of rows written before it (bodies are files SQL cannot
read, so those rows are measured on first listing and written back)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstead.proto.imap.fetch import crlf_text
from mailstead.proto.pop3.framing import wire_form
from mailstead.proto.pop3.framing import wire_size as pop3_wire_size
from mailstead.storage.blobs import BlobStore, blob_hash
from mailstead.storage.interfaces import IncomingMessage, LocalDelivery, MessageInfo
from mailstead.storage.migrate import load_migrations, migrate_sqlite
from mailstead.storage.sqlite.store import SQLiteStore
from mailstead.storage.sqlite.writer import WireShape, wire_shape

BARE = b"Subject: legacy\n\nbare line\nno final newline"
BARE_WIRE = len(BARE) + 3  # three bare LFs, each sent as CRLF
CRLF = b"Subject: fine\r\n\r\nbody\r\n"

# The measurement ------------------------------------------------------------------------


@given(st.binary(max_size=300) | st.lists(st.sampled_from(
    [b"\r", b"\n", b"\r\n", b".", b"a", b"\r\n.\r\n"]), max_size=40).map(b"".join))
def test_wire_shape_matches_what_pop3_and_imap_send(data: bytes) -> None:
    shape = wire_shape(data)
    assert shape.size == len(crlf_text(data))  # IMAP BODY[] and RFC822.SIZE
    assert shape.size + 2 * shape.unterminated == len(wire_form(data)) == pop3_wire_size(data)


def test_wire_shape_examples() -> None:
    assert wire_shape(b"") == WireShape(0, False)
    assert wire_shape(b"a\r\n") == WireShape(3, False)
    assert wire_shape(b"a\n") == WireShape(3, False)
    assert wire_shape(b"a") == WireShape(1, True)
    assert wire_shape(b"a\r") == WireShape(2, True)  # a bare CR is no line break
    assert wire_shape(b"\r\n\n\r") == WireShape(5, True)


def test_message_info_defaults_keep_old_callers_working() -> None:
    old = MessageInfo(1, 2, 3, 4, (), 0.0, 120, "b", "{}", "{}")
    assert (old.wire_size, old.unterminated) == (120, False)
    new = MessageInfo(1, 2, 3, 4, (), 0.0, 120, "b", "{}", "{}", 125, True)
    assert (new.wire_size, new.unterminated) == (125, True)


# Migration 0004 -------------------------------------------------------------------------


def test_migration_0004_leaves_existing_rows_to_measure(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "mailstead.db", isolation_level=None)
    migrate_sqlite(conn, load_migrations()[:3])
    conn.executescript(
        "INSERT INTO domains VALUES (1, 'example.test', 0);"
        "INSERT INTO accounts (id, domain_id, address, address_key, password_hash, created_at)"
        " VALUES (1, 1, 'a@example.test', 'a@example.test', 'h', 0);"
        "INSERT INTO mailboxes (id, account_id, name, uidvalidity, uidnext, highestmodseq)"
        " VALUES (1, 1, 'INBOX', 1, 2, 2);"
        "INSERT INTO blobs VALUES ('" + "a" * 64 + "', 10, 0);"
        "INSERT INTO messages (mailbox_id, uid, modseq, internal_date, size, blob, envelope,"
        " bodystructure) VALUES (1, 1, 2, 0, 10, '" + "a" * 64 + "', '{}', '{}');"
    )
    assert migrate_sqlite(conn) == len(load_migrations())
    assert conn.execute("SELECT size, wire_size, unterminated FROM messages").fetchall() == [
        (10, None, None)]
    conn.close()


# Lazy measurement of rows from before migration 0004 -------------------------------------


async def _legacy_store(path: Path, bodies: list[bytes]) -> tuple[SQLiteStore, int, int]:
    """A store whose messages look as if delivered before migration 0004."""
    store = await SQLiteStore.open(path)
    await store.add_domain("example.test")
    account = (await store.add_account("a@example.test", "h")).id
    for data in bodies:
        await store.accept_message(IncomingMessage(
            data, "Q", "", [LocalDelivery(account)], [], 0.0, "{}", "{}"))
    with sqlite3.connect(path / "mailstead.db") as conn:
        conn.execute("UPDATE messages SET wire_size = NULL, unterminated = NULL")
    conn.close()
    inbox = await store.get_mailbox(account, "INBOX")
    assert inbox is not None
    return store, account, inbox.id


def _stored(path: Path) -> list[tuple[int, int | None, int | None]]:
    conn = sqlite3.connect(path / "mailstead.db")
    try:
        return conn.execute(
            "SELECT uid, wire_size, unterminated FROM messages ORDER BY mailbox_id, uid"
        ).fetchall()
    finally:
        conn.close()


def test_legacy_rows_measured_once_and_written_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body() -> None:
        store, _, inbox = await _legacy_store(tmp_path, [BARE, CRLF])
        try:
            reads: list[str] = []
            original = BlobStore.read

            def counting(self: BlobStore, name: str) -> bytes:
                # Only listings count: the writer's background indexer reads bodies too.
                if threading.current_thread().name.startswith("store-reader"):
                    reads.append(name)
                return original(self, name)

            monkeypatch.setattr(BlobStore, "read", counting)
            first = await store.list_messages_in(inbox)
            assert [(m.wire_size, m.unterminated) for m in first] == [
                (BARE_WIRE, True), (len(CRLF), False)]
            assert sorted(reads) == sorted([blob_hash(BARE), blob_hash(CRLF)])
            assert _stored(tmp_path) == [(1, BARE_WIRE, 1), (2, len(CRLF), 0)]
            reads.clear()
            again = await store.list_messages_in(inbox)
            changes = await store.changes_since(inbox, 0)
            assert again == first
            assert list(changes.changed) == first
            assert reads == []  # measured once: now read from the rows
        finally:
            await store.close()

    asyncio.run(body())


def test_legacy_copy_is_measured_later_through_its_shared_body(tmp_path: Path) -> None:
    async def body() -> None:
        store, account, inbox = await _legacy_store(tmp_path, [BARE])
        try:
            archive = await store.get_mailbox(account, "Archive")
            assert archive is not None
            await store.copy_messages(inbox, [1], archive.id)
            assert [row[1] for row in _stored(tmp_path)] == [None, None]  # NULL goes along
            [info] = await store.list_messages(account, "Archive")
            assert (info.wire_size, info.unterminated) == (BARE_WIRE, True)
            # Filled by blob, so the INBOX row that shares the body is done as well.
            assert [row[1] for row in _stored(tmp_path)] == [BARE_WIRE] * 2
        finally:
            await store.close()

    asyncio.run(body())


def test_legacy_row_with_missing_body_reports_stored_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body() -> None:
        store, _, inbox = await _legacy_store(tmp_path, [BARE])
        try:
            store.blobs.path(blob_hash(BARE)).unlink()
            with caplog.at_level(logging.WARNING, "mailstead.storage.sqlite.messages"):
                [info] = await store.list_messages_in(inbox)
            assert (info.size, info.wire_size, info.unterminated) == (len(BARE), len(BARE), False)
            assert "cannot measure message body" in caplog.text
            assert _stored(tmp_path) == [(1, None, None)]  # no guess is recorded
        finally:
            await store.close()

    asyncio.run(body())


def test_new_deliveries_never_read_bodies_to_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body() -> None:
        store = await SQLiteStore.open(tmp_path)
        try:
            await store.add_domain("example.test")
            account = (await store.add_account("a@example.test", "h")).id
            await store.accept_message(IncomingMessage(
                BARE, "Q", "", [LocalDelivery(account)], [], 0.0, "{}", "{}"))

            original = BlobStore.read

            def refuse(self: BlobStore, name: str) -> bytes:
                if threading.current_thread().name.startswith("store-reader"):
                    raise AssertionError(f"listing read the body {name}")
                return original(self, name)  # the background indexer may

            monkeypatch.setattr(BlobStore, "read", refuse)
            [info] = await store.list_messages(account, "INBOX")
            assert (info.wire_size, info.unterminated) == (BARE_WIRE, True)
        finally:
            await store.close()

    asyncio.run(body())
