"""``storage/transfer.py``: an embedded store copied into PostgreSQL row for row, checked, and
refused or rolled back when it cannot be copied faithfully. Every test uses a fresh database
of the private test server (tests/pgserver.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mailstead.storage.blobs import blob_hash
from mailstead.storage.interfaces import (
    DkimKey,
    FlagOp,
    IncomingMessage,
    IpBlock,
    LocalDelivery,
    LoginRecord,
    ReceivedTlsReport,
    TlsResult,
)
from mailstead.storage.sqlite.store import DB_NAME, SQLiteStore
from mailstead.storage.sqlite.writer import wire_shape
from mailstead.storage.transfer import (
    DROPPED,
    SKIPPED,
    SQLITE_ONLY,
    TABLES,
    Progress,
    TransferError,
    _Transfer,
    copy_to_postgres,
    processes_using,
    safe_dsn,
    sqlite_tables,
)
from pgserver import PgUnavailable, shared_server


@pytest.fixture
def dsn() -> str:
    try:
        return shared_server().new_database("transfer")
    except PgUnavailable as exc:
        pytest.skip(str(exc))


def _message(n: int, body: bytes | None = None) -> bytes:
    text = body if body is not None else b"hello number %d\r\n" % n
    return b"From: <s@remote.test>\r\nSubject: message %d\r\n\r\n" % n + text


async def _populate(data_dir: Path) -> None:
    """A store with a row in every table, written through the store API."""
    store = await SQLiteStore.open(data_dir)
    try:
        now = time.time()
        await store.add_domain("example.test")
        alice = await store.add_account("alice@example.test", "$argon2id$alice")
        bob = await store.add_account("bob@example.test", "$argon2id$bob")
        await store.add_alias("info@example.test", ["alice@example.test", "bob@example.test"])
        await store.set_admin("alice@example.test", True)
        await store.create_mailbox(alice.id, "Projects")
        await store.set_subscribed(alice.id, "Projects", True)
        for n in range(12):
            # Message 0 goes to both accounts: one body, two message rows.
            local = [LocalDelivery(alice.id)] + ([LocalDelivery(bob.id)] if n == 0 else [])
            await store.accept_message(IncomingMessage(
                _message(n), f"Q{n}", "s@remote.test", local,
                ["far@remote.test"] if n == 1 else [], now + n, f'{{"e": {n}}}', "{}",
                auth_account_id=alice.id if n == 1 else None,
                thread_keys=(f"<m{n}@remote.test>", "<root@remote.test>"),
            ))
        inbox = await store.get_mailbox(alice.id, "INBOX")
        projects = await store.get_mailbox(alice.id, "Projects")
        assert inbox is not None
        assert projects is not None
        await store.store_flags(inbox.id, [1, 2, 3], FlagOp.ADD, ["\\Seen", "$Label1"])
        await store.store_flags(inbox.id, [4], FlagOp.ADD, ["\\Deleted"])
        await store.expunge(inbox.id)
        await store.copy_messages(inbox.id, [5, 6], projects.id, move=True)
        await store.add_import_origins(projects.id, "imap://a@old.test", [("7/1", "f" * 64)])
        await store.add_tls_results([TlsResult("2026-12-07", "b.test", "sts", "mode: enforce",
                                               "", "mx.b.test", "192.0.2.1", 3)])
        await store.claim_tls_report("2026-12-06", "b.test", now)
        await store.add_received_tls_report(ReceivedTlsReport(
            now, "Org", "r1", "2026-12-06T00:00:00Z", "2026-12-06T23:59:59Z", "example.test",
            1, 0, "{}"))
        assert await store.search_text(inbox.id, "number 7", part="body") == {8}
        await store.add_dkim_key(DkimKey("example.test", "ms1r", "rsa-sha256", "PEM", "pub",
                                         now, True))
        await store.set_second_factor(alice.id, "enc-secret", ["d1", "d2"], now)
        app = await store.add_app_password(alice.id, "Phone", "digest", ["imap"], now)
        await store.add_login_records([
            LoginRecord(now, alice.id, "alice@example.test", "imap", "127.0.0.1", "PLAIN",
                        True, "ok", "Phone", app.id),
            LoginRecord(now, None, "nobody@example.test", "smtp", "127.0.0.2", "LOGIN",
                        False, "bad_credentials"),
        ])
        await store.add_block(IpBlock("192.0.2.1", now + 900, 10, now, "failures"))
        await store.greylist_touch("net|a|b", now)
        await store.greylist_pass("net|a|b", "192.0.2.0/24", now)
        await store.bayes_learn(alice.id, "m" * 64, [1, 2, 2**62], True)
        await store.put_sieve_script(alice.id, "main", 'keep;\n')
        await store.set_active_sieve_script(alice.id, "main")
        await store.add_sieve_event(alice.id, "vacation", "s@remote.test", now)
        await store.acquire_lease("pop3:1", "node-a", now, 600)
        await store.add_auth_failure("192.0.2.7", "alice@example.test", now)
    finally:
        await store.close()


def _sqlite_rows(data_dir: Path, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    conn = sqlite3.connect(data_dir / DB_NAME)
    try:
        if table == "fts_docs":
            cols = ["blob", "complete", "header", "body"]
            rows = conn.execute("SELECT d.blob, d.complete, f.header, f.body FROM fts_docs d"
                                " JOIN fts f ON f.rowid = d.id").fetchall()
        else:
            info = conn.execute(f"PRAGMA table_info({table})").fetchall()
            cols = [r[1] for r in info if r[1] not in DROPPED.get(table, ())]
            rows = conn.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()
        return cols, sorted(rows, key=repr)
    finally:
        conn.close()


async def _pg_rows(dsn: str, table: str, cols: list[str]) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f"SELECT {', '.join(cols)} FROM {table}")
        return sorted((tuple(r) for r in rows), key=repr)
    finally:
        await conn.close()


async def _pg(dsn: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def _open_and_close(data_dir: Path) -> None:
    store = await SQLiteStore.open(data_dir)
    await store.close()


def test_tables_cover_both_schemas(tmp_path: Path, dsn: str) -> None:
    """A migration that adds a table must add it to TABLES, or the transfer would drop it."""
    asyncio.run(_open_and_close(tmp_path))
    conn = sqlite3.connect(tmp_path / DB_NAME)
    try:
        assert sqlite_tables(conn) == set(TABLES)
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert names >= SQLITE_ONLY
    finally:
        conn.close()

    async def pg_tables() -> set[str]:
        from mailstead.storage.postgres.store import PostgresStore

        store = await PostgresStore.open(dsn, pool_size=1)
        await store.close()
        rows = await _pg(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}

    assert asyncio.run(pg_tables()) - {"schema_version"} - SKIPPED <= set(TABLES)


def test_every_row_is_copied_unchanged(tmp_path: Path, dsn: str) -> None:
    asyncio.run(_populate(tmp_path))
    seen: list[Progress] = []
    report = asyncio.run(copy_to_postgres(tmp_path, dsn, seen.append))

    for table in TABLES:
        cols, want = _sqlite_rows(tmp_path, table)
        got = asyncio.run(_pg_rows(dsn, table, cols))
        assert [tuple(r) for r in got] == [tuple(r) for r in want], table
        assert report.rows[table] == len(want), table
        assert want or table in ("vanished", "fts_pending"), f"the test left {table} empty"
    # 13 deliveries (message 0 to two accounts) less one expunged; the expunged body stays
    # until the garbage collector takes it.
    assert (report.messages, report.blobs, report.accounts) == (12, 12, 2)
    assert (report.measured, report.skipped_blobs, report.cleaned_values) == (0, [], 0)

    # The bodies are the files' bytes, named by their SHA-256.
    for name, data in asyncio.run(_pg(dsn, "SELECT hash, data FROM blobs")):
        assert blob_hash(data) == name
        assert (tmp_path / "blobs" / name[:2] / name[2:4] / name).read_bytes() == data
    assert report.blob_bytes == sum(len(_message(n)) for n in range(12))
    assert {p.table for p in seen if p.step == "copying"} == set(TABLES)
    assert any(p.step == "verifying" and p.table == "blobs" and p.done == 12 for p in seen)

    # Identity sequences continue after the copied ids; the user triggers are back on.
    rows = asyncio.run(_pg(
        dsn, "INSERT INTO domains (name, created_at) VALUES ('new.test', 0) RETURNING id"))
    assert rows[0][0] == 2
    disabled = asyncio.run(_pg(
        dsn, "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled = 'D'"))
    assert disabled == []


def test_rows_from_before_the_wire_size_are_measured(tmp_path: Path, dsn: str) -> None:
    body = b"line one\nline two\r\nno end"
    asyncio.run(_populate(tmp_path))
    store = asyncio.run(SQLiteStore.open(tmp_path))
    account = asyncio.run(store.get_account("bob@example.test"))
    assert account is not None
    asyncio.run(store.accept_message(IncomingMessage(
        _message(99, body), "Q99", "", [LocalDelivery(account.id)], [], 0.0, "{}", "{}")))
    asyncio.run(store.close())
    conn = sqlite3.connect(tmp_path / DB_NAME)
    with conn:
        conn.execute("UPDATE messages SET wire_size = NULL, unterminated = NULL")
    conn.close()

    report = asyncio.run(copy_to_postgres(tmp_path, dsn))

    assert report.measured == report.messages == 13
    rows = asyncio.run(_pg(dsn, "SELECT b.data, m.wire_size, m.unterminated FROM messages m"
                                " JOIN blobs b ON b.hash = m.blob"))
    for data, wire, unterminated in rows:
        shape = wire_shape(data)
        assert (wire, bool(unterminated)) == (shape.size, shape.unterminated)
    assert any(unterminated for _, _, unterminated in rows)


def test_a_database_with_data_is_refused(tmp_path: Path, dsn: str) -> None:
    asyncio.run(_populate(tmp_path))
    asyncio.run(copy_to_postgres(tmp_path, dsn))
    with pytest.raises(TransferError, match=r"not empty \(2 account\(s\)\).*createdb"):
        asyncio.run(copy_to_postgres(tmp_path, dsn))
    assert asyncio.run(_pg(dsn, "SELECT COUNT(*) FROM messages"))[0][0] == 12


def test_a_store_in_use_is_refused(tmp_path: Path, dsn: str) -> None:
    asyncio.run(_populate(tmp_path))
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1]);"
         " c.execute('SELECT 1 FROM meta').fetchall(); print('open', flush=True);"
         " time.sleep(60)", str(tmp_path / DB_NAME)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "open\n"
        assert processes_using(tmp_path) == [holder.pid]
        with pytest.raises(TransferError, match=rf"in use by process {holder.pid} .*serve"):
            asyncio.run(copy_to_postgres(tmp_path, dsn))
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert processes_using(tmp_path) == []


def test_lost_bodies(tmp_path: Path, dsn: str) -> None:
    """An unreferenced body whose file is gone (a collector crashed) is left out; a body a
    message needs stops the copy, and nothing is committed."""
    asyncio.run(_populate(tmp_path))
    conn = sqlite3.connect(tmp_path / DB_NAME)
    garbage = "0" * 64
    with conn:
        conn.execute("INSERT INTO blobs (hash, size, created_at) VALUES (?, 5, 0)", (garbage,))
    needed = conn.execute("SELECT blob FROM messages LIMIT 1").fetchone()[0]
    conn.close()
    victim = tmp_path / "blobs" / needed[:2] / needed[2:4] / needed
    saved = victim.read_bytes()
    victim.write_bytes(saved + b"tampered")

    with pytest.raises(TransferError, match=rf"{victim.name} is damaged.*restore it"):
        asyncio.run(copy_to_postgres(tmp_path, dsn))
    assert asyncio.run(_pg(dsn, "SELECT COUNT(*) FROM accounts"))[0][0] == 0
    victim.unlink()
    with pytest.raises(TransferError, match=rf"{victim.name} cannot be read"):
        asyncio.run(copy_to_postgres(tmp_path, dsn))

    victim.write_bytes(saved)
    report = asyncio.run(copy_to_postgres(tmp_path, dsn))
    assert report.skipped_blobs == [garbage]
    assert report.rows["blobs"] == 12


def test_a_copy_that_does_not_verify_is_rolled_back(
    tmp_path: Path, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that lost a row (simulated: the last message row is dropped on the way) must be
    caught by the verification, and roll the whole copy back."""
    asyncio.run(_populate(tmp_path))
    original = _Transfer._row_batches

    def lossy(self: _Transfer, table: Any) -> Iterator[list[tuple[Any, ...]]]:
        for batch in original(self, table):
            yield batch[:-1] if table.name == "messages" else batch

    monkeypatch.setattr(_Transfer, "_row_batches", lossy)
    with pytest.raises(TransferError, match=r"nothing was committed: messages: 12 rows to "
                                            r"copy, 11 copied; mailbox \d+: messages"):
        asyncio.run(copy_to_postgres(tmp_path, dsn))
    assert asyncio.run(_pg(dsn, "SELECT COUNT(*) FROM domains"))[0][0] == 0
    assert asyncio.run(_pg(dsn, "SELECT value FROM meta"))[0][0] == 0


def test_text_postgresql_cannot_hold_is_replaced(tmp_path: Path, dsn: str) -> None:
    asyncio.run(_populate(tmp_path))
    conn = sqlite3.connect(tmp_path / DB_NAME)
    with conn:
        conn.execute("UPDATE sieve_scripts SET content = ?", ("keep;\0",))
    conn.close()
    report = asyncio.run(copy_to_postgres(tmp_path, dsn))
    assert report.cleaned_values == 1
    assert asyncio.run(_pg(dsn, "SELECT content FROM sieve_scripts"))[0][0] == "keep;\ufffd"


def test_messages_name_no_password_and_a_missing_store(tmp_path: Path) -> None:
    assert safe_dsn("postgresql://u:secret@h:5/db") == "postgresql://u@h:5/db"
    assert safe_dsn("postgresql://h/db") == "postgresql://h/db"
    with pytest.raises(TransferError, match="no embedded store"):
        asyncio.run(copy_to_postgres(tmp_path, "postgresql://u:secret@127.0.0.1:1/db"))
