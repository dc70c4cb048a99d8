"""The consistency rules of ``mailstead verify`` (pure), and the SQLite check and repair on a
store in a temp dir: the grace period for orphans, counters only ever raised, quota usage
recomputed, lost bodies named by message."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from mailstead.storage.consistency import AccountUsage, MailboxCounters, MessageRow, size_faults
from mailstead.storage.interfaces import IncomingMessage, LocalDelivery
from mailstead.storage.sqlite.store import DB_NAME, SQLiteStore
from mailstead.storage.sqlite.writer import wire_shape
from mailstead.storage.verify import repair_store, verify_store

OLD = time.time() - 7200


def _row(data: bytes, **kw: object) -> MessageRow:
    shape = wire_shape(data)
    fields: dict[str, object] = {"account": "a@e.test", "mailbox": "INBOX", "uid": 7,
                                 "blob": "0" * 64, "size": len(data),
                                 "wire_size": shape.size, "unterminated": shape.unterminated}
    fields.update(kw)
    return MessageRow(**fields)  # type: ignore[arg-type]


@given(st.binary(max_size=300))
def test_a_row_written_as_the_writer_does_agrees_with_its_body(data: bytes) -> None:
    assert size_faults(_row(data), data) == []
    assert size_faults(_row(data, wire_size=None, unterminated=None), data) == []


@given(st.binary(min_size=1, max_size=300), st.integers(1, 5))
def test_any_wrong_size_is_a_fault(data: bytes, skew: int) -> None:
    faults = size_faults(_row(data, size=len(data) + skew), data)
    assert faults == [f"message a@e.test 'INBOX' UID 7: size {len(data) + skew}, its body has "
                      f"{len(data)} bytes"]
    assert len(size_faults(_row(data, wire_size=wire_shape(data).size + skew), data)) == 1


def test_counter_rules() -> None:
    assert MailboxCounters("a", "INBOX", 5, 9, 4, 9).faults() == []
    assert MailboxCounters("a", "INBOX", 1, 1, 0, 0).faults() == []  # empty mailbox
    uid, modseq = MailboxCounters("a", "INBOX", 4, 8, 4, 9).faults()
    assert "UIDNEXT 4 is not above its highest UID 4" in uid
    assert "HIGHESTMODSEQ 8 is below its highest MODSEQ 9" in modseq
    assert AccountUsage("a", 10, 2, 10, 2).faults() == []
    assert AccountUsage("a", 11, 2, 10, 2).faults() == [
        "account a: quota usage says 11 bytes in 2 messages, its messages hold 10 bytes in 2"]


def _msg(data: bytes, account: int) -> IncomingMessage:
    return IncomingMessage(data, "Q1", "", [LocalDelivery(account)], [], 1.0, "{}", "{}")


def test_sqlite_verify_and_repair(tmp_path: Path) -> None:
    async def body() -> None:
        store = await SQLiteStore.open(tmp_path)
        try:
            await store.add_domain("e.test")
            account = (await store.add_account("a@e.test", "h")).id
            for n in range(3):
                await store.accept_message(_msg(b"Subject: %d\r\n\r\nbody %d\r\n" % (n, n),
                                                account))
            listed = await store.list_messages(account, "INBOX")
            blobs = store.blobs
        finally:
            await store.close()
        clean = await verify_store(tmp_path)
        assert clean.ok, clean
        # Six mailboxes: INBOX and the default special-use ones.
        assert (clean.accounts, clean.mailboxes, clean.messages, clean.bodies) == (1, 6, 3, 3)

        # An old orphan is reported; a young one (a delivery in progress) is not.
        old, young = b"old orphan", b"young orphan"
        for data, when in ((old, OLD), (young, time.time())):
            path = blobs.path(hashlib.sha256(data).hexdigest())
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.utime(path, (when, when))
        blobs.path(listed[0].blob).unlink()
        conn = sqlite3.connect(tmp_path / DB_NAME)
        with conn:
            conn.execute("UPDATE mailboxes SET uidnext = 1, highestmodseq = 1"
                         " WHERE name = 'INBOX'")
            conn.execute("UPDATE accounts SET used_bytes = 0, used_messages = 0")
            # Far above what the rows need: repair must never lower it.
            conn.execute("UPDATE mailboxes SET uidnext = 900 WHERE name = 'Sent'")
        conn.close()

        report = await verify_store(tmp_path)
        assert report.orphans == [hashlib.sha256(old).hexdigest()]
        assert report.missing == [listed[0].blob]
        assert report.lost == [f"message a@e.test 'INBOX' UID {listed[0].uid}: body "
                               f"{listed[0].blob} is missing"]
        assert len(report.counters) == 2
        assert len(report.usage) == 1
        done = await repair_store(tmp_path, report)
        assert any("UIDNEXT 1 -> 4" in line for line in done), done
        assert "removed 1 orphan bodies" in done
        after = await verify_store(tmp_path)
        assert (after.counters, after.usage, after.orphans) == ([], [], [])
        assert after.missing == [listed[0].blob]
        assert blobs.path(hashlib.sha256(young).hexdigest()).exists()
        conn = sqlite3.connect(tmp_path / DB_NAME)
        try:
            assert conn.execute("SELECT uidnext FROM mailboxes WHERE name = 'Sent'"
                                ).fetchone()[0] == 900
            assert conn.execute("SELECT used_messages FROM accounts").fetchone()[0] == 3
        finally:
            conn.close()

    asyncio.run(body())
