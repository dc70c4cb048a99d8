"""Unit tests of the pieces behind MailStore: text extraction, flags, the watch hub, migration
0002 on an existing store, and the writer's background indexing."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import tracemalloc
from pathlib import Path

import pytest

from mailstead.core.errors import StoreError
from mailstead.storage.flags import apply, canonical_flags, same
from mailstead.storage.interfaces import FlagOp, IncomingMessage, LocalDelivery
from mailstead.storage.migrate import load_migrations, migrate_sqlite
from mailstead.storage.sqlite import writer
from mailstead.storage.sqlite.store import SQLiteStore
from mailstead.storage.textindex import decode_header_value, extract, fold, header_contains
from mailstead.storage.watch import WatchHub

# Text extraction ------------------------------------------------------------------------


def test_encoded_words() -> None:
    assert decode_header_value(b"=?utf-8?q?caf=C3=A9?= =?utf-8?b?w6k=?=") == "caféé"  # 6.2
    assert decode_header_value(b"a =?iso-8859-1?q?=E9t=E9?= b") == "a été b"
    assert decode_header_value(b"=?bogus-cs?q?plain?=") == "plain"
    assert decode_header_value(b"=?utf-8?b?!!?=") == "=?utf-8?b?!!?="  # malformed: kept
    assert decode_header_value("raw ünïcode".encode()) == "raw ünïcode"  # RFC 6532
    assert decode_header_value(b"latin \xe9") == "latin é"
    assert decode_header_value(b"=?utf-8?q?line=0Abreak?=") == "line break"


def test_extract_limits_and_folding() -> None:
    text = extract(b"Subject: BIG\r\n\r\n" + b"Word " * 1000, limit=500)
    assert not text.complete
    assert len(text.header) + len(text.body) <= 500
    small = extract(b"Subject: Hello\r\nX-A: b\r\n\r\nStra\xc3\x9fe  \t end\r\n")
    assert small.complete
    assert small.header == "subject: hello\nx-a: b"
    assert "strasse end" in small.body  # case-folded, white space runs collapsed
    assert fold("STRASSE\r\n") == "strasse\n"
    assert header_contains(small.header, "SUBJECT", "ell")
    assert not header_contains(small.header, "x-a", "hello")


def test_extract_never_raises_on_garbage() -> None:
    for data in (b"", b"\r\n\r\n", b"\x00" * 100, b":\r\n :\r\n\r\n", bytes(range(256)) * 4):
        result = extract(data)
        assert "\x00" not in result.header + result.body


# Flags ----------------------------------------------------------------------------------


def test_canonical_flags() -> None:
    assert canonical_flags(["\\seen", "\\RECENT", "$Junk", "\\Seen", "$junk", "\\draft"]) == (
        "\\Seen",
        "$Junk",
        "\\Draft",
    )
    for bad in ("", "a b", "x\x00", "a{", "é", "x" * 300):
        with pytest.raises(StoreError):
            canonical_flags([bad])
    assert apply(("\\Seen", "A"), FlagOp.ADD, ("a", "B")) == ("\\Seen", "A", "B")
    assert apply(("\\Seen", "A"), FlagOp.REMOVE, ("a",)) == ("\\Seen",)
    assert apply(("\\Seen",), FlagOp.REPLACE, ()) == ()
    assert same(("A", "\\Seen"), ("\\Seen", "a"))


# Watch hub ------------------------------------------------------------------------------


def test_publish_from_another_thread_wakes_the_loop() -> None:
    async def body() -> None:
        hub = WatchHub()
        watch = hub.watch(1)
        waiter = asyncio.create_task(watch.wait(5))
        await asyncio.sleep(0.01)
        thread = threading.Thread(target=hub.publish, args=([1, 2],))
        thread.start()
        assert await asyncio.wait_for(waiter, 5) is True
        thread.join()
        watch.close()
        assert hub.watchers(1) == 0

    asyncio.run(body())


def test_cancelled_wait_keeps_a_pending_change() -> None:
    async def body() -> None:
        hub = WatchHub()
        watch = hub.watch(1)
        waiter = asyncio.create_task(watch.wait(5))
        await asyncio.sleep(0)
        waiter.cancel()  # the cancellation is delivered before the wake-up
        hub.publish([1])
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert await watch.wait(0) is True

    asyncio.run(body())


def test_idle_watchers_are_cheap_and_isolated() -> None:
    async def body() -> None:
        hub = WatchHub()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        watches = [hub.watch(n) for n in range(5000)]
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert used / len(watches) < 400, f"{used / len(watches):.0f} bytes per idle watcher"
        tasks = [asyncio.create_task(w.wait(5)) for w in watches[:100]]
        await asyncio.sleep(0.01)
        hub.publish([7])
        done, pending = await asyncio.wait(tasks, timeout=0.2)
        assert [t.result() for t in done] == [True]
        assert tasks[7] in done
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for watch in watches:
            watch.close()
        assert hub.watchers(7) == 0

    asyncio.run(body())


# Migration 0002 and background indexing --------------------------------------------------


def test_migration_0002_backfills_quota_and_index(tmp_path: Path) -> None:
    db = tmp_path / "mailstead.db"
    conn = sqlite3.connect(db, isolation_level=None)
    migrate_sqlite(conn, load_migrations()[:1])
    conn.executescript(
        "INSERT INTO domains VALUES (1, 'example.test', 0);"
        "INSERT INTO accounts VALUES (1, 1, 'a@example.test', 'a@example.test', 'h', 0);"
        "INSERT INTO mailboxes (id, account_id, name, uidvalidity, uidnext, highestmodseq)"
        " VALUES (1, 1, 'INBOX', 1, 3, 3);"
        "INSERT INTO blobs VALUES ('" + "a" * 64 + "', 10, 0);"
        "INSERT INTO messages (mailbox_id, uid, modseq, internal_date, size, blob, envelope,"
        " bodystructure) VALUES (1, 1, 2, 0, 10, '" + "a" * 64 + "', '{}', '{}'),"
        " (1, 2, 3, 0, 10, '" + "a" * 64 + "', '{}', '{}');"
    )
    assert migrate_sqlite(conn) == len(load_migrations())
    assert conn.execute("SELECT used_bytes, used_messages, quota FROM accounts").fetchone() == (
        20,
        2,
        None,
    )
    assert conn.execute("SELECT COUNT(*) FROM fts_pending").fetchone()[0] == 1
    conn.close()


def test_writer_indexes_in_the_background(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer, "INDEX_IDLE", 0.01)

    async def body() -> None:
        store = await SQLiteStore.open(tmp_path)
        try:
            await store.add_domain("example.test")
            alice = (await store.add_account("a@example.test", "h")).id
            for i in range(20):
                data = f"Subject: n{i}\r\n\r\nbackground words {i}\r\n".encode()
                await store.accept_message(
                    IncomingMessage(data, "Q", "", [LocalDelivery(alice)], [], 0.0, "{}", "{}")
                )
            conn = sqlite3.connect(tmp_path / "mailstead.db")
            for _ in range(200):
                if conn.execute("SELECT COUNT(*) FROM fts_pending").fetchone()[0] == 0:
                    break
                await asyncio.sleep(0.02)
            assert conn.execute("SELECT COUNT(*) FROM fts_pending").fetchone()[0] == 0
            assert conn.execute("SELECT COUNT(*) FROM fts_docs").fetchone()[0] == 20
            conn.close()
            inbox = await store.get_mailbox(alice, "INBOX")
            assert inbox is not None
            found = await store.search_text(inbox.id, "background words 1", part="body")
            assert found == {2} | set(range(11, 21))
            removed = await store.delete_messages(inbox.id, list(range(1, 21)))
            assert len(removed) == 20
            assert await store.collect_garbage(grace=-1) == 20
            conn = sqlite3.connect(tmp_path / "mailstead.db")
            assert conn.execute("SELECT COUNT(*) FROM fts_docs").fetchone()[0] == 0
            assert conn.execute("SELECT COUNT(*) FROM fts").fetchone()[0] == 0
            conn.close()
        finally:
            await store.close()

    asyncio.run(body())
