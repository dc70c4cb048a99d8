"""Thread ids (RFC 8474 section 5.2) and save dates (RFC 8514) kept by every backend."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from test_mailstore import box, run, setup

from mailstead.core.errors import NotFound
from mailstead.core.message import summarize
from mailstead.storage.interfaces import IncomingMessage, LocalDelivery, Store
from storebackends import Opener, opened


async def put(store: Store, accounts: list[int], data: bytes, *, keys: bool = True) -> None:
    summary = summarize(data)
    await store.accept_message(IncomingMessage(
        data=data, queue_id="Q" + hashlib.sha256(data).hexdigest()[:8], mail_from="",
        local=[LocalDelivery(a) for a in accounts], remote=[], internal_date=1_600_000_000.0,
        envelope=summary.envelope, bodystructure=summary.bodystructure,
        thread_keys=summary.thread_keys if keys else (),
    ))


def mail(mid: str, subject: str, parent: str | None = None, refs: str = "") -> bytes:
    head = f"Message-ID: <{mid}@t.test>\r\nSubject: {subject}\r\n"
    if parent:
        head += f"In-Reply-To: <{parent}@t.test>\r\n"
    if refs:
        head += f"References: {refs}\r\n"
    return (head + "\r\nbody " + subject + "\r\n").encode()


def test_threads_follow_references(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            bob = await setup(store, "bob@example.test")
            await put(store, [alice, bob], mail("root", "root"))
            await put(store, [alice], mail("r1", "reply", "root", "<root@t.test>"))
            # Only References, the parent missing from In-Reply-To.
            await put(store, [alice], mail("r2", "deeper", None, "<root@t.test> <r1@t.test>"))
            await put(store, [alice], mail("other", "unrelated"))
            # The reply arrives before its parent: the parent joins the reply's thread.
            await put(store, [alice], mail("late-child", "c", "late-parent"))
            await put(store, [alice], mail("late-parent", "p"))
            # A caller that gives no keys is threaded on the envelope's In-Reply-To.
            await put(store, [alice], mail("r3", "envelope only", "r2"), keys=False)
            msgs = await store.list_messages_in((await box(store, alice)).id)
            t = [m.thread_id for m in msgs]
            assert t[0] == t[1] == t[2] == t[6]
            assert len({t[0], t[3], t[4]}) == 3
            assert t[4] == t[5]
            for thread in t:  # RFC 8474 section 4: objectid = 1*255(ALPHA / DIGIT / "_" / "-")
                assert 1 <= len(thread) <= 255
                assert thread.replace("_", "").replace("-", "").isalnum()
            # Threads are per account: bob's copy of the root is not in alice's thread table.
            bob_box = await box(store, bob)
            [bob_root] = await store.list_messages_in(bob_box.id)
            await put(store, [bob], mail("b1", "bob reply", "root"))
            bob_msgs = await store.list_messages_in(bob_box.id)
            assert bob_msgs[1].thread_id == bob_root.thread_id

    run(body())


def test_save_date_and_copies(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            before = time.time()
            await put(store, [alice], mail("s1", "saved"))
            inbox = await box(store, alice)
            [m] = await store.list_messages_in(inbox.id)
            # RFC 8514 section 3: the time it was saved here, not the internal date.
            assert m.internal_date == 1_600_000_000.0
            assert before - 1 <= m.saved_at <= time.time() + 1
            archive = await box(store, alice, "Archive")
            await store.copy_messages(inbox.id, [m.uid], archive.id)
            [c] = await store.list_messages_in(archive.id)
            assert c.thread_id == m.thread_id  # a copy stays in its thread
            assert c.saved_at >= m.saved_at
            assert c.internal_date == m.internal_date
            [g] = await store.get_messages(archive.id, [c.uid], envelope=False,
                                           bodystructure=False)
            assert (g.saved_at, g.thread_id) == (c.saved_at, c.thread_id)
            moved = await store.copy_messages(archive.id, [c.uid], inbox.id, move=True)
            [(_, new)] = moved
            [mv] = await store.get_messages(inbox.id, [new])
            assert mv.thread_id == m.thread_id
            assert mv.saved_at >= c.saved_at

    run(body())


def incoming(account: int, data: bytes, mailbox: str = "INBOX") -> IncomingMessage:
    summary = summarize(data)
    return IncomingMessage(
        data=data, queue_id="append", mail_from="", local=[LocalDelivery(account, mailbox)],
        remote=[], internal_date=1_600_000_000.0, envelope=summary.envelope,
        bodystructure=summary.bodystructure, thread_keys=summary.thread_keys,
    )


def test_accept_messages_all_or_none(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            inbox = await box(store, alice)
            results = await store.accept_messages(
                [incoming(alice, mail(f"b{i}", f"batch {i}")) for i in range(3)])
            assert [r.delivered[0][2] for r in results] == [1, 2, 3]  # consecutive UIDs
            # RFC 3502 section 6.3.11: if one cannot be appended, none is.
            try:
                await store.accept_messages([incoming(alice, mail("ok", "fine")),
                                             incoming(alice, mail("no", "x"), "Nowhere")])
            except NotFound:
                pass
            else:
                raise AssertionError("a batch with a missing mailbox was accepted")
            assert [m.uid for m in await store.list_messages_in(inbox.id)] == [1, 2, 3]
            # RFC 8508: the replacement and the removal of the old message are one step.
            before = (await box(store, alice)).highestmodseq
            [r] = await store.accept_messages([incoming(alice, mail("b1v2", "batch 1 v2"))],
                                              replace=(inbox.id, 2))
            assert [m.uid for m in await store.list_messages_in(inbox.id)] == [1, 3, 4]
            assert r.delivered[0][2] == 4
            changes = await store.changes_since(inbox.id, before)
            assert changes.vanished == (2,)
            assert await store.accept_messages([]) == []

    run(body())
