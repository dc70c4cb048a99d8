"""Mailbox access with several nodes on one PostgreSQL database (issue 10): two store
instances storing flags, copying, moving and delivering into one mailbox at once keep UIDs
unique and ascending and MODSEQs strictly increasing, so a client that follows
``changes_since`` never misses a change; a change on one node wakes watchers on the other.
Also what only this backend has to care about: rows copied from an old store without wire
sizes, documents cut at the indexing limit, and text PostgreSQL cannot hold."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from mailstead.core.errors import StoreError
from mailstead.storage.interfaces import FlagOp, IncomingMessage, LocalDelivery, MailboxInfo
from mailstead.storage.postgres.store import PostgresStore
from pgserver import shared_server

_counter = itertools.count()


def message(text: str = "hello") -> bytes:
    return (
        f"From: s@remote.test\r\nSubject: {text}\r\nMessage-ID: <{next(_counter)}@remote.test>"
        f"\r\n\r\n{text} body\r\n"
    ).encode()


async def deliver(store: PostgresStore, account: int, data: bytes, mailbox: str = "INBOX") -> int:
    result = await store.accept_message(IncomingMessage(
        data=data, queue_id="Q" + hashlib.sha256(data).hexdigest()[:8],
        mail_from="s@remote.test", local=[LocalDelivery(account, mailbox)], remote=[],
        internal_date=1_700_000_000.0, envelope="{}", bodystructure="{}",
    ))
    return result.delivered[0][2]


async def mailbox(store: PostgresStore, account: int, name: str) -> MailboxInfo:
    info = await store.get_mailbox(account, name)
    assert info is not None
    return info


Body = Callable[[str, PostgresStore, PostgresStore, int], Awaitable[None]]


def two_nodes(body: Body) -> None:
    """Runs ``body(dsn, a, b, account)`` with two stores ("nodes") open on one fresh database
    holding one account."""
    dsn = shared_server().new_database()

    async def main() -> None:
        a = await PostgresStore.open(dsn, pool_size=6)
        b = await PostgresStore.open(dsn, pool_size=6)
        try:
            await a.add_domain("example.test")
            account = (await a.add_account("alice@example.test", "hash")).id
            await body(dsn, a, b, account)
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def test_concurrent_flags_and_copies_keep_modseq_and_uids() -> None:
    async def body(dsn: str, a: PostgresStore, b: PostgresStore, alice: int) -> None:
        for i in range(20):
            await deliver(a, alice, message(f"m{i}"))
        inbox = await mailbox(a, alice, "INBOX")
        archive = await mailbox(a, alice, "Archive")
        flag_modseqs: list[int] = []
        copied: list[int] = []

        async def flagger(store: PostgresStore, keyword: str) -> None:
            for round_ in range(15):
                result = await store.store_flags(
                    inbox.id, range(1, 21), FlagOp.ADD if round_ % 2 == 0 else FlagOp.REMOVE,
                    [keyword],
                )
                assert len({c.modseq for c in result.changed}) == 1  # one command, one modseq
                flag_modseqs.append(result.changed[0].modseq)

        async def copier(store: PostgresStore) -> None:
            for round_ in range(10):
                pairs = await store.copy_messages(inbox.id, [round_ + 1, round_ + 2], archive.id)
                assert [old for old, _ in pairs] == [round_ + 1, round_ + 2]
                assert pairs[1][1] == pairs[0][1] + 1  # consecutive (RFC 4315 COPYUID)
                copied.extend(new for _, new in pairs)

        async def deliverer(store: PostgresStore) -> None:
            for i in range(10):
                copied.append(await deliver(store, alice, message(f"d{i}"), "Archive"))

        await asyncio.gather(
            flagger(a, "$A"), flagger(b, "$B"), flagger(b, "$C"),
            copier(a), copier(b), copier(b), deliverer(a), deliverer(b),
        )
        # Every STORE got a MODSEQ of its own: 3 flaggers x 15 rounds, all distinct.
        assert len(flag_modseqs) == len(set(flag_modseqs)) == 45
        after = await mailbox(b, alice, "INBOX")
        assert after.highestmodseq == max(flag_modseqs)
        # No update was lost: each keyword's last STORE (round 14) added it everywhere.
        assert {frozenset(m.flags) for m in await a.list_messages_in(inbox.id)} == {
            frozenset({"$A", "$B", "$C"})
        }
        # Copies and deliveries into Archive from both nodes: unique, no gaps, UIDNEXT past.
        assert sorted(copied) == list(range(1, 81))  # 3 x 10 copies of 2, 2 x 10 deliveries
        box = await mailbox(b, alice, "Archive")
        assert box.uidnext == 81
        msgs = await b.list_messages_in(archive.id)
        assert [m.uid for m in msgs] == list(range(1, 81))
        assert max(m.modseq for m in msgs) == box.highestmodseq
        assert (await a.get_quota(alice)).messages == 20 + 80

    two_nodes(body)


def test_a_follower_never_misses_a_change() -> None:
    """RFC 7162 section 3.1: MODSEQs become visible in increasing order, so polling
    ``changes_since(last HIGHESTMODSEQ seen)`` on one node while the other writes ends with
    exactly the mailbox's final state."""
    async def body(dsn: str, a: PostgresStore, b: PostgresStore, alice: int) -> None:
        for i in range(10):
            await deliver(a, alice, message(f"m{i}"))
        inbox = await mailbox(a, alice, "INBOX")
        view: dict[int, tuple[str, ...]] = {}
        seen = 0
        done = asyncio.Event()

        async def follow() -> None:
            nonlocal seen
            while True:
                finished = done.is_set()
                changes = await b.changes_since(inbox.id, seen)
                assert all(m.modseq > seen for m in changes.changed)
                for info in changes.changed:
                    view[info.uid] = info.flags
                for uid in changes.vanished:
                    view.pop(uid, None)
                seen = changes.highestmodseq
                if finished:
                    return
                await asyncio.sleep(0)

        async def write(store: PostgresStore, keyword: str) -> None:
            for i in range(30):
                await store.store_flags(inbox.id, [i % 10 + 1, (i * 3) % 10 + 1],
                                        FlagOp.ADD if i % 3 else FlagOp.REMOVE, [keyword])
                if i % 10 == 9:
                    await deliver(store, alice, message(f"{keyword}{i}"))
                    await store.store_flags(inbox.id, [i // 10 + 1], FlagOp.ADD, ["\\Deleted"])
                    await store.expunge(inbox.id)

        follower = asyncio.create_task(follow())
        await asyncio.gather(write(a, "$A"), write(b, "$B"), write(a, "$C"))
        done.set()
        await follower
        final = {m.uid: m.flags for m in await a.list_messages_in(inbox.id)}
        assert {u: set(f) for u, f in view.items()} == {u: set(f) for u, f in final.items()}

    two_nodes(body)


def test_opposite_moves_do_not_deadlock() -> None:
    async def body(dsn: str, a: PostgresStore, b: PostgresStore, alice: int) -> None:
        for i in range(30):
            await deliver(a, alice, message(f"i{i}"))
            await deliver(b, alice, message(f"a{i}"), "Archive")
        inbox = await mailbox(a, alice, "INBOX")
        archive = await mailbox(a, alice, "Archive")

        async def mover(store: PostgresStore, src: int, dst: int) -> None:
            for _ in range(10):
                uids = [m.uid for m in await store.list_messages_in(src)][:3]
                await store.copy_messages(src, uids, dst, move=True)

        await asyncio.wait_for(asyncio.gather(
            mover(a, inbox.id, archive.id), mover(b, archive.id, inbox.id),
            mover(b, inbox.id, archive.id), mover(a, archive.id, inbox.id),
        ), 60)
        both = await a.list_messages_in(inbox.id) + await a.list_messages_in(archive.id)
        assert len(both) == 60  # every message is in exactly one of the two
        assert len({m.blob for m in both}) == 60

    two_nodes(body)


def test_a_change_on_one_node_wakes_the_other() -> None:
    async def body(dsn: str, a: PostgresStore, b: PostgresStore, alice: int) -> None:
        await deliver(a, alice, message())
        inbox = await mailbox(a, alice, "INBOX")
        watch = b.watch(alice)
        try:
            # The delivery's notification may reach node B after the watch exists: drain it.
            await asyncio.sleep(0.3)
            await watch.wait(0)
            assert await watch.wait(0.2) is False
            changes: list[Callable[[], Awaitable[object]]] = [
                lambda: a.store_flags(inbox.id, [1], FlagOp.ADD, ["\\Seen"]),
                lambda: a.create_mailbox(alice, "Work"),
                lambda: a.copy_messages(inbox.id, [1], inbox.id, move=True),
                lambda: a.rename_mailbox(alice, "Work", "Play"),
                lambda: a.delete_messages(inbox.id, [2]),
                lambda: a.delete_mailbox(alice, "Play"),
            ]
            for change in changes:
                waiter = asyncio.create_task(watch.wait(5))
                await asyncio.sleep(0.01)
                await change()
                # Issue 10: IDLE on node B learns of the change within 1 s.
                assert await asyncio.wait_for(waiter, 1) is True
            # A subscription change wakes the account's watchers too: NOTIFY's
            # SubscriptionChange event (RFC 5465 section 5.4) reaches other nodes that way.
            waiter = asyncio.create_task(watch.wait(5))
            await asyncio.sleep(0.01)
            await a.set_subscribed(alice, "INBOX", True)
            assert await asyncio.wait_for(waiter, 1) is True
        finally:
            watch.close()

    two_nodes(body)


def test_get_messages_by_ranges_and_loose_uids() -> None:
    """Long runs of UIDs are read as ranges, the rest by index probes; any mix of the two
    (only runs, only loose UIDs, both) returns exactly the rows asked for."""
    async def body(dsn: str, a: PostgresStore, b: PostgresStore, alice: int) -> None:
        for i in range(80):
            await deliver(a, alice, message(f"m{i}"))
        inbox = await mailbox(a, alice, "INBOX")
        await a.delete_messages(inbox.id, [50])
        every = {m.uid: m for m in await b.list_messages_in(inbox.id)}
        for wanted in (range(1, 81), range(3, 45), [*range(1, 40), *range(41, 81)],
                       [2, 9, 77], [*range(10, 60), 70, 2**33, -1], range(60, 200)):
            got = await b.get_messages(inbox.id, wanted, envelope=False)
            expected = sorted({u for u in wanted if u in every})
            assert [m.uid for m in got] == expected
            assert all(m.envelope == "" and m.bodystructure == "{}" for m in got)
            assert [m.flags for m in got] == [every[u].flags for u in expected]

    two_nodes(body)


def test_copy_refused_when_out_of_uids() -> None:
    """RFC 9051 section 2.3.1.1: UIDs are 32-bit; a copy past the last one writes nothing."""
    async def body(dsn: str, a: PostgresStore, b: PostgresStore, alice: int) -> None:
        for i in range(3):
            await deliver(a, alice, message(f"m{i}"))
        inbox = await mailbox(a, alice, "INBOX")
        junk = await mailbox(a, alice, "Junk")
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("UPDATE mailboxes SET uidnext = $1 WHERE id = $2",
                               2**32 - 2, junk.id)
        finally:
            await conn.close()
        before = await mailbox(a, alice, "Junk")
        with pytest.raises(StoreError):
            await b.copy_messages(inbox.id, [1, 2, 3], junk.id, move=True)
        assert [m.uid for m in await a.list_messages_in(inbox.id)] == [1, 2, 3]
        assert await mailbox(a, alice, "Junk") == before
        assert await b.copy_messages(inbox.id, [1], junk.id) == [(1, 2**32 - 2)]
        assert await b.copy_messages(inbox.id, [2], junk.id) == [(2, 2**32 - 1)]

    two_nodes(body)


def test_vanished_rows_are_compacted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same limit as SQLite (one setting, messages.VANISHED_KEEP): whole MODSEQs beyond
    it are forgotten and ``vanished_floor`` rises, so answers below it are conservative."""
    from mailstead.storage.sqlite import messages

    monkeypatch.setattr(messages, "VANISHED_KEEP", 4)

    async def body(dsn: str, a: PostgresStore, b: PostgresStore, alice: int) -> None:
        for i in range(10):
            await deliver(a, alice, message(f"m{i}"))
        inbox = await mailbox(a, alice, "INBOX")
        marks = []
        for uids in ([1, 2], [3], [4, 5], [6]):
            await b.delete_messages(inbox.id, uids)
            marks.append((await mailbox(a, alice, "INBOX")).highestmodseq)
        conn = await asyncpg.connect(dsn)
        try:
            kept = await conn.fetch("SELECT uid FROM vanished ORDER BY uid")
            floor = await conn.fetchval("SELECT vanished_floor FROM mailboxes WHERE id = $1",
                                        inbox.id)
        finally:
            await conn.close()
        # The third delete made 5 rows, over a limit of 4: the MODSEQ of [1, 2] went whole.
        assert [r[0] for r in kept] == [3, 4, 5, 6]
        assert floor == marks[0]
        assert (await a.changes_since(inbox.id, marks[0])).vanished == (3, 4, 5, 6)
        # Below the floor: every absent UID under UIDNEXT, a superset of the truth.
        assert (await a.changes_since(inbox.id, marks[0] - 1)).vanished == (1, 2, 3, 4, 5, 6)

    two_nodes(body)


def test_rows_without_wire_size_are_measured_once() -> None:
    """Rows copied by ``store migrate`` from a store older than migration 0004."""
    data = b"Subject: old\n\nbare\nlines\nno end"

    async def body(dsn: str, a: PostgresStore, b: PostgresStore, alice: int) -> None:
        await deliver(a, alice, data)
        inbox = await mailbox(a, alice, "INBOX")
        await a.copy_messages(inbox.id, [1], inbox.id)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("UPDATE messages SET wire_size = NULL, unterminated = NULL")
            for read in (b.list_messages_in(inbox.id), b.get_messages(inbox.id, [2]),
                         b.changes_since(inbox.id, 0)):
                result = await read
                infos = result.changed if hasattr(result, "changed") else result
                assert {(m.wire_size, m.unterminated) for m in infos} == {(len(data) + 4, True)}
            stored = await conn.fetch("SELECT wire_size, unterminated FROM messages")
            assert [tuple(r) for r in stored] == [(len(data) + 4, 1)] * 2
        finally:
            await conn.close()

    two_nodes(body)


def test_search_reads_cut_documents_in_full() -> None:
    async def body(dsn: str, a: PostgresStore, b: PostgresStore, alice: int) -> None:
        await deliver(a, alice, b"Subject: long\r\n\r\nstart " + b"filler " * 50 + b"needle\r\n")
        await deliver(a, alice, message("plain"))
        inbox = await mailbox(a, alice, "INBOX")
        assert await b.search_text(inbox.id, "needle", part="body") == {1}  # indexes both
        conn = await asyncpg.connect(dsn)
        try:
            # What the indexer stores for a body past textindex.MAX_TEXT: cut, incomplete.
            await conn.execute(
                "UPDATE fts_docs SET body = left(body, 20), complete = 0"
                " WHERE strpos(body, 'needle') > 0"
            )
        finally:
            await conn.close()
        assert await b.search_text(inbox.id, "needle", part="body") == {1}
        assert await b.search_text(inbox.id, "NEEDLE", part="text") == {1}
        assert await b.search_text(inbox.id, "needle", part="header:subject") == set()
        assert await b.search_text(inbox.id, "plain", part="text") == {2}

    two_nodes(body)


def test_text_postgresql_cannot_hold() -> None:
    """NUL and lone surrogates never reach a statement: they name nothing, or are refused
    as SQLite refuses them, never a driver error."""
    async def body(dsn: str, a: PostgresStore, b: PostgresStore, alice: int) -> None:
        await deliver(a, alice, b"Subject: x\r\n\r\nzero\x00byte text\r\n")
        inbox = await mailbox(a, alice, "INBOX")
        assert await a.get_mailbox(alice, "a\x00b") is None
        assert await a.get_mailbox(alice, "\ud800") is None
        for name in ("a\x00b", "bad\ud800"):
            with pytest.raises(StoreError):
                await a.create_mailbox(alice, name)
            with pytest.raises(StoreError):
                await a.set_subscribed(alice, name, True)
        with pytest.raises(StoreError):
            await a.delete_mailbox(alice, "\ud800")
        assert await a.search_text(inbox.id, "zero\x00byte", part="body") == {1}
        assert await a.search_text(inbox.id, "\ud800", part="body") == set()

    two_nodes(body)


def test_searches_on_two_nodes_share_the_indexing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Searches of one mailbox started at once on two nodes index each pending body once
    between them (claimed with SKIP LOCKED, the rest waited for), and both find everything."""
    from mailstead.storage.postgres import fts

    monkeypatch.setattr(fts, "PENDING_CHUNK", 5)
    extracted: list[str] = []
    real = fts._extract_all

    def counting(bodies: list[tuple[str, bytes | None]]) -> list[tuple[str, fts.IndexText]]:
        extracted.extend(name for name, _ in bodies)
        return real(bodies)

    monkeypatch.setattr(fts, "_extract_all", counting)

    async def body(dsn: str, a: PostgresStore, b: PostgresStore, alice: int) -> None:
        for i in range(60):
            await deliver(a, alice, message(f"common word{i}"))
        inbox = await mailbox(a, alice, "INBOX")
        found = await asyncio.gather(*(store.search_text(inbox.id, "common", part="body")
                                       for store in (a, b, a, b)))
        assert found == [set(range(1, 61))] * 4
        assert len(extracted) == 60
        assert len(set(extracted)) == 60

    two_nodes(body)


def test_the_background_indexer_empties_the_pending_list(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Started by the server (``start_indexing``), a node indexes what was delivered soon
    after, whichever node delivered it, so searches find nothing left to index."""
    from mailstead.storage.postgres import fts

    monkeypatch.setattr(fts, "INDEX_DELAY", 0.05)
    monkeypatch.setattr(fts, "PENDING_CHUNK", 7)

    async def pending(dsn: str) -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT COUNT(*) FROM fts_pending"))
        finally:
            await conn.close()

    async def body(dsn: str, a: PostgresStore, b: PostgresStore, alice: int) -> None:
        for i in range(20):
            await deliver(b, alice, message(f"early{i}"))  # before anyone indexes
        assert await pending(dsn) == 20
        a.start_indexing()
        for _ in range(200):
            if await pending(dsn) == 0:
                break
            await asyncio.sleep(0.05)
        assert await pending(dsn) == 0
        await deliver(a, alice, message("late"))  # wakes a's indexer
        for _ in range(200):
            if await pending(dsn) == 0:
                break
            await asyncio.sleep(0.05)
        assert await pending(dsn) == 0
        inbox = await mailbox(a, alice, "INBOX")
        assert await b.search_text(inbox.id, "late", part="body") == {21}

    two_nodes(body)
