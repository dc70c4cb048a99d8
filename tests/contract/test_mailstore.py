"""The MailStore contract (mailbox access for IMAP and POP3), run against every backend."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from mailstead.core.errors import AlreadyExists, LimitExceeded, NotFound, StoreError
from mailstead.storage.interfaces import (
    FlagOp,
    IncomingMessage,
    LocalDelivery,
    MailboxInfo,
    Store,
)
from mailstead.storage.sqlite.store import SQLiteStore
from storebackends import Opener, opened

_counter = itertools.count()


def run(coro: Awaitable[Any]) -> Any:
    async def wrap() -> Any:
        return await coro

    return asyncio.run(wrap())


def plain(subject: str = "hello", body: str = "body text", **headers: str) -> bytes:
    """A distinct small message (a counter keeps blobs apart unless asked otherwise)."""
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return (
        f"From: Sender <sender@remote.test>\r\nSubject: {subject}\r\n{extra}"
        f"Message-ID: <{next(_counter)}@remote.test>\r\n\r\n{body}\r\n"
    ).encode()


async def deliver(
    store: Store, account: int, data: bytes, mailbox: str = "INBOX", flags: tuple[str, ...] = ()
) -> int:
    result = await store.accept_message(
        IncomingMessage(
            data=data,
            queue_id="Q" + hashlib.sha256(data).hexdigest()[:8],
            mail_from="sender@remote.test",
            local=[LocalDelivery(account, mailbox, flags)],
            remote=[],
            internal_date=1_700_000_000.0,
            envelope='{"subject":"x"}',
            bodystructure='{"type":"text"}',
        )
    )
    return result.delivered[0][2]


async def setup(store: Store, address: str = "alice@example.test") -> int:
    if not await store.is_local_domain("example.test"):
        await store.add_domain("example.test")
    return (await store.add_account(address, "hash")).id


async def box(store: Store, account: int, name: str = "INBOX") -> MailboxInfo:
    info = await store.get_mailbox(account, name)
    assert info is not None
    return info


# Mailboxes ------------------------------------------------------------------------------


def test_get_create_delete_mailbox(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            inbox = await store.get_mailbox(alice, "inbox")  # RFC 3501 5.1: any case
            assert inbox is not None
            assert inbox.name == "INBOX"
            assert await store.get_mailbox(alice, "sent") is None  # other names are exact
            assert await store.mailbox_by_id(inbox.id) == inbox
            assert await store.mailbox_by_id(999_999) is None
            created = await store.create_mailbox(alice, "Work/Projects", "\\Flagged")
            assert (created.name, created.special_use, created.uidnext, created.messages) == (
                "Work/Projects",
                "\\Flagged",
                1,
                0,
            )
            assert created.uidvalidity not in {b.uidvalidity for b in [inbox]}
            with pytest.raises(AlreadyExists):
                await store.create_mailbox(alice, "Work/Projects")
            with pytest.raises(AlreadyExists):
                await store.create_mailbox(alice, "iNbOx")
            with pytest.raises(StoreError):
                await store.create_mailbox(alice, "")
            with pytest.raises(StoreError):
                await store.create_mailbox(alice, "bad\r\nname")
            with pytest.raises(NotFound):
                await store.create_mailbox(424242, "X")
            await deliver(store, alice, plain(), "Work/Projects")
            await store.delete_mailbox(alice, "Work/Projects")
            assert await store.get_mailbox(alice, "Work/Projects") is None
            with pytest.raises(NotFound):
                await store.delete_mailbox(alice, "Work/Projects")
            with pytest.raises(StoreError):
                await store.delete_mailbox(alice, "INBOX")  # RFC 9051 6.3.5
            again = await store.create_mailbox(alice, "Work/Projects")
            assert again.uidvalidity != created.uidvalidity  # RFC 3501 2.3.1.1
            assert again.messages == 0

    run(body())


def test_mailbox_limit(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            bob = await setup(store, "bob@example.test")
            start = len(await store.list_mailboxes(alice))  # the default ones
            limit = start + 5
            # Concurrent creates: exactly as many succeed as the limit leaves room for.
            results = await asyncio.gather(
                *(store.create_mailbox(alice, f"m{i}", limit=limit) for i in range(20)),
                return_exceptions=True,
            )
            assert sum(isinstance(r, MailboxInfo) for r in results) == 5
            assert all(isinstance(r, (MailboxInfo, LimitExceeded)) for r in results)
            assert len(await store.list_mailboxes(alice)) == limit
            with pytest.raises(LimitExceeded):
                await store.create_mailbox(alice, "one/more", limit=limit)
            # Renaming INBOX adds a mailbox; renaming another does not.
            with pytest.raises(LimitExceeded):
                await store.rename_mailbox(alice, "INBOX", "Old", limit=limit)
            await store.rename_mailbox(alice, "m0", "renamed", limit=limit)
            assert await store.get_mailbox(alice, "renamed") is not None
            # Without a limit (the CLI, delivery) and for another account, creation goes on.
            await store.create_mailbox(alice, "admin-made")
            await store.create_mailbox(bob, "fine", limit=limit)
            await store.delete_mailbox(alice, "admin-made")
            await store.delete_mailbox(alice, "renamed")
            await store.create_mailbox(alice, "room-again", limit=limit)

    run(body())


def test_subscription_limit(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            for i in range(3):
                await store.set_subscribed(alice, f"s{i}", True, limit=3)
            with pytest.raises(LimitExceeded):
                await store.set_subscribed(alice, "one-more", True, limit=3)
            await store.set_subscribed(alice, "s1", True, limit=3)  # already there: fine
            await store.set_subscribed(alice, "one-more", False, limit=3)  # never refused
            await store.set_subscribed(alice, "s0", False, limit=3)
            await store.set_subscribed(alice, "one-more", True, limit=3)
            assert await store.list_subscriptions(alice) == ["one-more", "s1", "s2"]

    run(body())


def test_mailbox_counts(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            bob = await setup(store, "bob@example.test")
            work = await store.create_mailbox(alice, "Work")
            await deliver(store, alice, plain("a"), flags=("\\Seen",))
            await deliver(store, alice, plain("b"), flags=("\\Deleted", "$Seen", "\\Flagged"))
            await deliver(store, alice, plain("c"), "Work", flags=("\\Seen", "\\Deleted"))
            await deliver(store, bob, plain("d"))
            inbox = await box(store, alice)
            sizes = {mailbox: sum(m.size for m in await store.list_messages_in(mailbox))
                     for mailbox in (inbox.id, work.id)}
            counts = await store.mailbox_counts(alice)
            # Empty mailboxes (Drafts, Sent, ...) are absent; "$Seen" is a keyword, not \Seen.
            assert set(counts) == {inbox.id, work.id}
            assert (counts[inbox.id].unseen, counts[inbox.id].deleted) == (1, 1)
            assert (counts[work.id].unseen, counts[work.id].deleted) == (0, 1)
            assert counts[inbox.id].size == sizes[inbox.id]
            assert counts[work.id].size == sizes[work.id]
            assert await store.mailbox_counts(alice, work.id) == {work.id: counts[work.id]}
            bob_inbox = await box(store, bob)
            assert await store.mailbox_counts(alice, bob_inbox.id) == {}  # not alice's

    run(body())


def test_delete_mailbox_keeps_children_and_frees_blobs(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            await store.create_mailbox(alice, "a")
            await store.create_mailbox(alice, "a/b")
            await deliver(store, alice, plain("gone"), "a")
            await deliver(store, alice, plain("kept"), "a/b")
            await store.delete_mailbox(alice, "a")
            assert await store.get_mailbox(alice, "a/b") is not None
            assert (await store.get_quota(alice)).messages == 1
            if isinstance(store, SQLiteStore):
                assert await store.collect_garbage(grace=-1) == 1

    run(body())


def test_rename_with_children(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            for name in ("a", "a/b", "a/b/c", "ab", "x/y"):
                await store.create_mailbox(alice, name)
            before = await box(store, alice, "a/b")
            await deliver(store, alice, plain(), "a/b")
            with pytest.raises(AlreadyExists):
                await store.rename_mailbox(alice, "a", "ab")
            with pytest.raises(NotFound):
                await store.rename_mailbox(alice, "nope", "other")
            with pytest.raises(StoreError):
                await store.rename_mailbox(alice, "a", "a/inside")
            await store.rename_mailbox(alice, "a", "x")
            names = {b.name for b in await store.list_mailboxes(alice)}
            assert {"x", "x/b", "x/b/c", "ab", "x/y"} <= names
            assert not {"a", "a/b", "a/b/c"} & names
            after = await box(store, alice, "x/b")
            # The same mailbox under a new name: identity, UIDs and messages kept.
            assert (after.id, after.uidvalidity, after.messages) == (
                before.id,
                before.uidvalidity,
                1,
            )

    run(body())


def test_rename_refused_when_a_child_target_exists(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            for name in ("a", "a/b", "q/b"):
                await store.create_mailbox(alice, name)
            with pytest.raises(AlreadyExists):  # "a/b" would become the existing "q/b"
                await store.rename_mailbox(alice, "a", "q")
            names = {b.name for b in await store.list_mailboxes(alice)}
            assert {"a", "a/b", "q/b"} <= names  # all or nothing

    run(body())


def test_rename_inbox_moves_messages(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            await store.create_mailbox(alice, "INBOX/child")
            for i in range(3):
                await deliver(store, alice, plain(f"m{i}"), flags=("\\Flagged",) if i else ())
            inbox = await box(store, alice)
            used = (await store.get_quota(alice)).used
            await store.rename_mailbox(alice, "inbox", "Old Mail")
            after = await box(store, alice)
            # RFC 3501 6.3.5: INBOX stays, same identity, empty; messages are in the new one.
            assert (after.id, after.uidvalidity, after.messages) == (inbox.id, inbox.uidvalidity, 0)
            assert after.uidnext == inbox.uidnext
            moved = await box(store, alice, "Old Mail")
            msgs = await store.list_messages_in(moved.id)
            assert [m.uid for m in msgs] == [1, 2, 3]
            assert [m.flags for m in msgs] == [(), ("\\Flagged",), ("\\Flagged",)]
            assert await store.get_mailbox(alice, "INBOX/child") is not None  # unaffected
            changes = await store.changes_since(inbox.id, inbox.highestmodseq)
            assert changes.vanished == (1, 2, 3)
            assert (await store.get_quota(alice)).used == used
            with pytest.raises(AlreadyExists):
                await store.rename_mailbox(alice, "Old Mail", "INBOX")

    run(body())


def test_subscriptions(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            bob = await setup(store, "bob@example.test")
            await store.set_subscribed(alice, "inbox", True)
            await store.set_subscribed(alice, "Does/Not/Exist", True)  # RFC 3501 6.3.6
            await store.set_subscribed(alice, "Sent", True)
            await store.set_subscribed(alice, "Sent", True)  # idempotent
            assert await store.list_subscriptions(alice) == ["Does/Not/Exist", "INBOX", "Sent"]
            assert await store.list_subscriptions(bob) == []
            await store.set_subscribed(alice, "Sent", False)
            await store.set_subscribed(alice, "never", False)
            assert await store.list_subscriptions(alice) == ["Does/Not/Exist", "INBOX"]
            await store.create_mailbox(alice, "Tmp")
            await store.set_subscribed(alice, "Tmp", True)
            await store.delete_mailbox(alice, "Tmp")  # the subscription outlives the mailbox
            assert "Tmp" in await store.list_subscriptions(alice)
            with pytest.raises(NotFound):
                await store.set_subscribed(777_777, "INBOX", True)
            with pytest.raises(NotFound):
                await store.list_subscriptions(777_777)

    run(body())


# Messages and flags ---------------------------------------------------------------------


def test_list_messages_in(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            for i in range(5):
                await deliver(store, alice, plain(f"m{i}"), flags=("\\seen", "$Label1", "\\SEEN"))
            inbox = await box(store, alice)
            msgs = await store.list_messages_in(inbox.id)
            assert [m.uid for m in msgs] == [1, 2, 3, 4, 5]
            assert all(m.flags == ("\\Seen", "$Label1") for m in msgs)  # canonical, no dups
            assert all(m.mailbox_id == inbox.id and m.envelope for m in msgs)
            with pytest.raises(NotFound):
                await store.list_messages_in(123_456)

    run(body())


def test_get_messages_reads_the_uids_asked(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            for i in range(120):
                await deliver(store, alice, plain(f"m{i}"), flags=("\\Seen",) if i % 2 else ())
            inbox = await box(store, alice)
            await store.expunge(inbox.id, None)  # nothing flagged \Deleted: nothing goes
            await store.store_flags(inbox.id, [7, 8, 9], FlagOp.ADD, ["\\Deleted"])
            await store.expunge(inbox.id, None)
            every = {m.uid: m for m in await store.list_messages_in(inbox.id)}
            assert len(every) == 117
            # Loose UIDs, a long run and a short one, out of order, with duplicates, gaps,
            # expunged (7-9) and never-used UIDs (0, 500, 2**40): only what exists comes back,
            # ascending, equal to what list_messages_in says of it.
            wanted = [100, 3, 1, *range(40, 90), 3, 0, 7, 8, 9, 500, 2**40, 118, 119, 120]
            got = await store.get_messages(inbox.id, wanted)
            expected = sorted({u for u in wanted if u in every})
            assert [m.uid for m in got] == expected
            assert got == [every[u] for u in expected]
            assert await store.get_messages(inbox.id, []) == []
            assert await store.get_messages(inbox.id, [7, 500]) == []
            assert await store.get_messages(inbox.id, None) == list(every.values())
            # Over the IN-list chunk size: every other UID of the mailbox.
            odd = [u for u in range(1, 2001, 2)]
            assert [m.uid for m in await store.get_messages(inbox.id, odd)] == [
                u for u in odd if u in every
            ]
            # Without the JSON columns the rest is the same.
            light = await store.get_messages(inbox.id, [1, 2, 50], envelope=False,
                                             bodystructure=False)
            assert [(m.envelope, m.bodystructure) for m in light] == [("", "")] * 3
            assert [(m.uid, m.flags, m.modseq, m.internal_date, m.size, m.wire_size, m.blob)
                    for m in light] == [
                (m.uid, m.flags, m.modseq, m.internal_date, m.size, m.wire_size, m.blob)
                for m in (every[1], every[2], every[50])
            ]
            only_env = await store.get_messages(inbox.id, [2], bodystructure=False)
            assert only_env[0].envelope == every[2].envelope
            assert only_env[0].bodystructure == ""
            # Another mailbox's messages are never returned.
            other = await store.create_mailbox(alice, "Elsewhere")
            assert await store.get_messages(other.id, [1, 2, 3]) == []
            with pytest.raises(NotFound):
                await store.get_messages(123_456, [1])

    run(body())


def test_store_flags_ops_and_modseq(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            for i in range(4):
                await deliver(store, alice, plain(f"m{i}"))
            inbox = await box(store, alice)
            top = inbox.highestmodseq
            result = await store.store_flags(
                inbox.id, [3, 1, 99, 2], FlagOp.ADD, ["\\SEEN", "\\Recent", "Work", "work"]
            )
            assert [c.uid for c in result.changed] == [1, 2, 3]  # 99 is ignored
            assert {c.modseq for c in result.changed} == {top + 1}  # one command, one modseq
            assert all(c.flags == ("\\Seen", "Work") for c in result.changed)
            assert result.modified == ()
            assert (await box(store, alice)).highestmodseq == top + 1
            # Adding flags already there changes nothing and takes no new modseq.
            noop = await store.store_flags(inbox.id, [1], FlagOp.ADD, ["\\Seen", "WORK"])
            assert noop.changed == ()
            assert (await box(store, alice)).highestmodseq == top + 1
            removed = await store.store_flags(inbox.id, [1, 2], FlagOp.REMOVE, ["work"])
            assert [(c.uid, c.flags, c.modseq) for c in removed.changed] == [
                (1, ("\\Seen",), top + 2),
                (2, ("\\Seen",), top + 2),
            ]
            replaced = await store.store_flags(inbox.id, [1, 4], FlagOp.REPLACE, ["\\Draft"])
            assert [(c.uid, c.flags) for c in replaced.changed] == [
                (1, ("\\Draft",)),
                (4, ("\\Draft",)),
            ]
            msgs = {m.uid: m for m in await store.list_messages_in(inbox.id)}
            assert msgs[1].flags == ("\\Draft",)
            assert msgs[2].flags == ("\\Seen",)
            assert msgs[3].flags == ("\\Seen", "Work")
            assert msgs[1].modseq == top + 3
            for bad in (["a b"], [""], ["x(y"], ["caf\u00e9"]):
                with pytest.raises(StoreError):
                    await store.store_flags(inbox.id, [1], FlagOp.ADD, bad)
            with pytest.raises(NotFound):
                await store.store_flags(987_654, [1], FlagOp.ADD, ["\\Seen"])
            empty = await store.store_flags(inbox.id, [], FlagOp.ADD, ["\\Seen"])
            assert empty.changed == ()

    run(body())


def test_unchangedsince_partial_failure(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            for i in range(3):
                await deliver(store, alice, plain(f"m{i}"))
            inbox = await box(store, alice)
            seen = inbox.highestmodseq
            await store.store_flags(inbox.id, [2], FlagOp.ADD, ["$Other"])  # a newer change
            # RFC 7162 3.1.3: 2 fails (modified since), 1 and 3 are stored.
            result = await store.store_flags(
                inbox.id, [1, 2, 3], FlagOp.ADD, ["\\Flagged"], unchanged_since=seen
            )
            assert [c.uid for c in result.changed] == [1, 3]
            assert result.modified == (2,)
            msgs = {m.uid: m.flags for m in await store.list_messages_in(inbox.id)}
            assert msgs == {1: ("\\Flagged",), 2: ("$Other",), 3: ("\\Flagged",)}
            # UNCHANGEDSINCE 0 fails for every message (RFC 7162 3.1.3 example).
            zero = await store.store_flags(
                inbox.id, [1, 2], FlagOp.ADD, ["\\Seen"], unchanged_since=0
            )
            assert (zero.changed, zero.modified) == ((), (1, 2))

    run(body())


def test_expunge_and_vanished(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            for i in range(6):
                await deliver(store, alice, plain(f"m{i}"))
            inbox = await box(store, alice)
            mark = inbox.highestmodseq
            await store.store_flags(inbox.id, [2, 3, 5], FlagOp.ADD, ["\\Deleted"])
            assert await store.expunge(inbox.id, [3, 5, 6]) == [3, 5]  # UID EXPUNGE
            after_first = (await box(store, alice)).highestmodseq
            assert await store.expunge(inbox.id) == [2]
            assert await store.expunge(inbox.id) == []
            state = await box(store, alice)
            assert state.highestmodseq == after_first + 1
            assert [m.uid for m in await store.list_messages_in(inbox.id)] == [1, 4, 6]
            changes = await store.changes_since(inbox.id, mark)
            assert changes.vanished == (2, 3, 5)
            assert [m.uid for m in changes.changed] == []  # flags of 2/3/5 changed, but gone
            assert (await store.changes_since(inbox.id, after_first)).vanished == (2,)
            assert (await store.changes_since(inbox.id, state.highestmodseq)).vanished == ()
            assert (changes.uidvalidity, changes.uidnext, changes.highestmodseq) == (
                inbox.uidvalidity,
                7,
                state.highestmodseq,
            )
            with pytest.raises(NotFound):
                await store.expunge(55_555)

    run(body())


def test_changes_since_reports_new_and_flag_changes(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            await deliver(store, alice, plain("a"))
            await deliver(store, alice, plain("b"))
            inbox = await box(store, alice)
            mark = inbox.highestmodseq
            await store.store_flags(inbox.id, [1], FlagOp.ADD, ["\\Seen"])
            await deliver(store, alice, plain("c"))
            changes = await store.changes_since(inbox.id, mark)
            assert [(m.uid, m.flags) for m in changes.changed] == [(1, ("\\Seen",)), (3, ())]
            modseqs = [m.modseq for m in changes.changed]
            assert all(m > mark for m in modseqs)
            assert changes.highestmodseq == max(modseqs)
            everything = await store.changes_since(inbox.id, 0)
            assert [m.uid for m in everything.changed] == [1, 2, 3]
            with pytest.raises(NotFound):
                await store.changes_since(31_337, 0)

    run(body())


def test_vanished_compaction_is_conservative(
    opener: Opener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailstead.storage.sqlite import messages

    monkeypatch.setattr(messages, "VANISHED_KEEP", 3)

    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            for i in range(8):
                await deliver(store, alice, plain(f"m{i}"))
            inbox = await box(store, alice)
            start = inbox.highestmodseq
            marks = []
            for uid in (1, 2, 3, 4, 5):
                await store.delete_messages(inbox.id, [uid])
                marks.append((await box(store, alice)).highestmodseq)
            # Recent history is exact...
            assert (await store.changes_since(inbox.id, marks[2])).vanished == (4, 5)
            # ...and older history reports every absent UID, a superset of the truth.
            old = await store.changes_since(inbox.id, start)
            assert set(old.vanished) >= {1, 2, 3, 4, 5}
            assert not set(old.vanished) & {6, 7, 8}

    run(body())


def test_delete_messages_ignores_flags(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            for i in range(3):
                await deliver(store, alice, plain(f"m{i}"))
            inbox = await box(store, alice)
            assert await store.delete_messages(inbox.id, [3, 1, 42]) == [1, 3]
            assert [m.uid for m in await store.list_messages_in(inbox.id)] == [2]
            assert (await store.changes_since(inbox.id, inbox.highestmodseq)).vanished == (1, 3)
            assert await store.delete_messages(inbox.id, []) == []

    run(body())


def test_copy_and_move(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            for i in range(4):
                await deliver(store, alice, plain(f"m{i}"), flags=("\\Seen",) if i == 2 else ())
            inbox = await box(store, alice)
            archive = await box(store, alice, "Archive")
            await deliver(store, alice, plain("already"), "Archive")
            pairs = await store.copy_messages(inbox.id, [4, 2, 3, 77], archive.id)
            assert pairs == [(2, 2), (3, 3), (4, 4)]  # COPYUID order: ascending source UID
            copied = await store.list_messages_in(archive.id)
            src = {m.uid: m for m in await store.list_messages_in(inbox.id)}
            assert [m.uid for m in copied] == [1, 2, 3, 4]
            assert copied[2].flags == ("\\Seen",)
            assert copied[1].blob == src[2].blob  # bodies shared
            assert copied[1].internal_date == src[2].internal_date
            assert len({m.modseq for m in copied[1:]}) == 1
            assert len(src) == 4  # a copy leaves the source alone
            moved = await store.copy_messages(inbox.id, [1, 2], archive.id, move=True)
            assert moved == [(1, 5), (2, 6)]
            assert [m.uid for m in await store.list_messages_in(inbox.id)] == [3, 4]
            vanished = (await store.changes_since(inbox.id, inbox.highestmodseq)).vanished
            assert vanished == (1, 2)
            assert await store.copy_messages(inbox.id, [99], archive.id) == []
            with pytest.raises(NotFound):
                await store.copy_messages(inbox.id, [3], 424_242)

    run(body())


def test_copy_into_same_mailbox(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            await deliver(store, alice, plain("a"))
            await deliver(store, alice, plain("b"))
            inbox = await box(store, alice)
            assert await store.copy_messages(inbox.id, [1, 2], inbox.id) == [(1, 3), (2, 4)]
            msgs = await store.list_messages_in(inbox.id)
            assert [m.uid for m in msgs] == [1, 2, 3, 4]
            assert msgs[0].blob == msgs[2].blob
            assert await store.copy_messages(inbox.id, [1], inbox.id, move=True) == [(1, 5)]
            assert [m.uid for m in await store.list_messages_in(inbox.id)] == [2, 3, 4, 5]

    run(body())


def test_move_is_atomic(opener: Opener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            for i in range(3):
                await deliver(store, alice, plain(f"m{i}"))
            inbox = await box(store, alice)
            trash = await box(store, alice, "Trash")
            if isinstance(store, SQLiteStore):
                # A failure after the copies are written but before the source expunge leaves
                # both mailboxes as they were.
                from mailstead.storage.sqlite import messages

                def broken(*args: Any) -> None:
                    raise StoreError("disk on fire")

                with monkeypatch.context() as patch:
                    patch.setattr(messages, "_remove", broken)
                    with pytest.raises(StoreError, match="disk on fire"):
                        await store.copy_messages(inbox.id, [1, 2, 3], trash.id, move=True)
                assert [m.uid for m in await store.list_messages_in(inbox.id)] == [1, 2, 3]
                assert await store.list_messages_in(trash.id) == []
                assert await box(store, alice, "Trash") == trash
                assert (await box(store, alice)).highestmodseq == inbox.highestmodseq
            # Out of UIDs in the destination: refused, nothing written.
            if isinstance(store, SQLiteStore):
                from mailstead.storage.sqlite import writer

                junk = await box(store, alice, "Junk")

                def exhaust(conn: Any) -> None:
                    conn.execute(
                        "UPDATE mailboxes SET uidnext = ? WHERE id = ?",
                        (writer.MAX_UID - 1, junk.id),
                    )

                await store._write(exhaust)
                with pytest.raises(StoreError):
                    await store.copy_messages(inbox.id, [1, 2, 3], junk.id, move=True)
                assert [m.uid for m in await store.list_messages_in(inbox.id)] == [1, 2, 3]
            # Concurrent moves of the same messages: each message lands exactly once.
            results = await asyncio.gather(
                *(store.copy_messages(inbox.id, [1, 2, 3], trash.id, move=True) for _ in range(4))
            )
            assert sorted(p[0] for r in results for p in r) == [1, 2, 3]
            assert await store.list_messages_in(inbox.id) == []
            assert len(await store.list_messages_in(trash.id)) == 3

    run(body())


def test_uids_and_modseq_monotonic(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            inbox = await box(store, alice)
            seen_modseq = inbox.highestmodseq
            seen_uidnext = inbox.uidnext
            for step in range(12):
                if step % 3 == 0:
                    await deliver(store, alice, plain(f"s{step}"))
                elif step % 3 == 1:
                    await store.store_flags(inbox.id, [1, 2, 3], FlagOp.ADD, [f"k{step}"])
                else:
                    uids = [m.uid for m in await store.list_messages_in(inbox.id)][:1]
                    await store.copy_messages(inbox.id, uids, inbox.id, move=True)
                now = await box(store, alice)
                assert now.highestmodseq >= seen_modseq
                assert now.uidnext >= seen_uidnext
                msgs = await store.list_messages_in(inbox.id)
                assert all(m.modseq <= now.highestmodseq for m in msgs)
                assert all(m.uid < now.uidnext for m in msgs)
                seen_modseq, seen_uidnext = now.highestmodseq, now.uidnext

    run(body())


# Quota ----------------------------------------------------------------------------------


def test_quota_accounting(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            bob = await setup(store, "bob@example.test")
            assert (await store.get_quota(alice)).used == 0
            assert (await store.get_quota(alice)).limit is None
            a, b = plain("a", "x" * 100), plain("b", "y" * 300)
            await deliver(store, alice, a)
            await deliver(store, alice, b)
            await deliver(store, bob, plain("bob"))
            quota = await store.get_quota(alice)
            assert (quota.used, quota.messages) == (len(a) + len(b), 2)
            inbox = await box(store, alice)
            archive = await box(store, alice, "Archive")
            await store.copy_messages(inbox.id, [1, 2], archive.id)  # copies count in full
            assert (await store.get_quota(alice)).used == 2 * (len(a) + len(b))
            await store.copy_messages(archive.id, [1], inbox.id, move=True)  # no change
            assert (await store.get_quota(alice)).used == 2 * (len(a) + len(b))
            await store.store_flags(inbox.id, [1], FlagOp.ADD, ["\\Deleted"])
            await store.expunge(inbox.id)
            await store.delete_messages(archive.id, [2])
            quota = await store.get_quota(alice)
            assert (quota.used, quota.messages) == (len(a) + len(b), 2)
            await store.delete_mailbox(alice, "Archive")
            await store.set_quota(alice, 10_000)
            quota = await store.get_quota(alice)
            assert (quota.used, quota.limit, quota.messages) == (len(a) + len(b), 10_000, 2)
            await store.set_quota(alice, None)
            assert (await store.get_quota(alice)).limit is None
            assert (await store.get_quota(bob)).messages == 1
            with pytest.raises(StoreError):
                await store.set_quota(alice, -1)
            with pytest.raises(NotFound):
                await store.set_quota(909_090, 1)
            with pytest.raises(NotFound):
                await store.get_quota(909_090)

    run(body())


def test_quota_warning_level(opener: Opener, tmp_path: Path) -> None:
    """The warned level (migration 0015) starts at 0, is swapped atomically (of several
    stores racing to raise it, exactly one sees the old level) and is read with the quota."""

    async def body() -> None:
        async with opened(opener, tmp_path) as one, opened(opener, tmp_path) as two:
            alice = await setup(one)
            assert (await one.get_quota(alice)).warned == 0
            olds = await asyncio.gather(
                *(s.swap_quota_warning(alice, 80) for s in (one, two) for _ in range(3))
            )
            assert sorted(olds) == [0, 80, 80, 80, 80, 80]
            assert (await two.get_quota(alice)).warned == 80
            assert await two.swap_quota_warning(alice, 95) == 80
            assert await one.swap_quota_warning(alice, 0) == 95
            assert (await one.get_quota(alice)).warned == 0
            with pytest.raises(NotFound):
                await one.swap_quota_warning(909_090, 80)

    run(body())


# Watch ----------------------------------------------------------------------------------


def test_watch_wakes_on_changes_of_its_account_only(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            bob = await setup(store, "bob@example.test")
            watch = store.watch(alice)
            other = store.watch(bob)
            try:
                assert await watch.wait(0.05) is False  # nothing yet
                waiter = asyncio.create_task(watch.wait(5))
                await asyncio.sleep(0.01)
                await deliver(store, alice, plain())  # from another task
                assert await asyncio.wait_for(waiter, 5) is True
                inbox = await box(store, alice)
                waiter = asyncio.create_task(watch.wait(5))
                await asyncio.sleep(0)
                await store.store_flags(inbox.id, [1], FlagOp.ADD, ["\\Deleted"])
                assert await asyncio.wait_for(waiter, 5) is True
                # A change while nobody waits is remembered until the next wait.
                await store.expunge(inbox.id)
                if store.networked:  # NOTIFY reaches the listener shortly after the commit
                    await asyncio.sleep(0.3)
                assert await watch.wait(0) is True
                assert await watch.wait(0.01) is False
                # Bob's watch never woke for any of Alice's changes.
                assert await other.wait(0) is False
                await deliver(store, bob, plain())
                assert await other.wait(1) is True
                assert await watch.wait(0.05) is False
            finally:
                watch.close()
                other.close()
            assert await watch.wait(0) is False  # closed

    run(body())


def test_watch_close_releases_a_waiter(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            watch = store.watch(alice)
            waiter = asyncio.create_task(watch.wait(None))
            await asyncio.sleep(0.01)
            watch.close()
            watch.close()
            assert await asyncio.wait_for(waiter, 2) is False

    run(body())


# Full-text search -----------------------------------------------------------------------

MIME = (
    b"From: =?UTF-8?B?SsO8cmdlbiBNw7xsbGVy?= <jm@remote.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: =?ISO-8859-1?Q?Caf=E9_au_lait?= =?UTF-8?Q?_und_Stra=C3=9Fe?=\r\n"
    b"X-Folded: first part\r\n second part\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n'
    b"\r\n"
    b"preamble is not text\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    + __import__("base64").encodebytes("Grüße aus Zürich, the zebra-crossing".encode())
    + b"--XX\r\n"
    b"Content-Type: text/html; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"<html><style>p{color:red}</style><p>Vive la r=E9publique &amp; friends</p></html>\r\n"
    b"--XX\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename=blob.bin\r\n"
    b"\r\n" + __import__("base64").encodebytes(b"secretbinarypayload") + b"--XX--\r\n"
)


def test_search_text_body_header(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            await deliver(store, alice, MIME)  # uid 1
            await deliver(store, alice, plain("Meeting on Monday", "the zebra is here"))  # 2
            await deliver(store, alice, plain("other", "nothing to see", X_Tag="zebra"))  # 3
            inbox = await box(store, alice)

            async def search(text: str, part: str = "text") -> set[int]:
                return await store.search_text(inbox.id, text, part=part)

            assert await search("zebra") == {1, 2, 3}
            assert await search("ZEBRA", "body") == {1, 2}
            assert await search("zebra", "header:x-tag") == {3}
            assert await search("zebra", "HEADER:Subject") == set()
            # Encoded-words in headers are decoded, charsets honoured, case folded.
            assert await search("jürgen", "header:from") == {1}
            assert await search("CAFÉ AU LAIT", "header:subject") == {1}
            assert await search("straße", "header:subject") == {1}
            assert await search("first part second", "header:x-folded") == {1}  # unfolded
            # base64 UTF-8 and quoted-printable Latin-1 bodies, HTML reduced to text.
            assert await search("grüße aus zür") == {1}
            assert await search("république & friends", "body") == {1}
            assert await search("color:red") == set()
            assert await search("<p>") == set()
            # Binary attachments and multipart preambles are not searchable text.
            assert await search("secretbinary") == set()
            # Substring semantics inside words (RFC 9051 6.4.4 "contains").
            assert await search("eeting on mon") == {2}
            assert await search('quote"d') == set()
            # The header part does not see the body and vice versa.
            assert await search("monday", "body") == set()
            assert await search("monday", "header:subject") == {2}
            with pytest.raises(StoreError):
                await search("x", "subject")
            with pytest.raises(NotFound):
                await store.search_text(121_212, "zebra", part="text")

    run(body())


def test_search_short_strings_scan(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            await deliver(store, alice, plain("qz", "no"))  # 1
            await deliver(store, alice, plain("hello", "QZ here"))  # 2
            await deliver(store, alice, plain("hello", "nothing"))  # 3
            inbox = await box(store, alice)
            assert await store.search_text(inbox.id, "qz", part="text") == {1, 2}
            assert await store.search_text(inbox.id, "Qz", part="body") == {2}
            assert await store.search_text(inbox.id, "z", part="header:subject") == {1}
            assert await store.search_text(inbox.id, "é", part="text") == set()
            # The empty string is contained in everything; HEADER "" means "has the field".
            assert await store.search_text(inbox.id, "", part="text") == {1, 2, 3}
            assert await store.search_text(inbox.id, "", part="header:subject") == {1, 2, 3}
            assert await store.search_text(inbox.id, "", part="header:x-none") == set()

    run(body())


def test_search_finds_fresh_and_copied_messages(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            inbox = await box(store, alice)
            archive = await box(store, alice, "Archive")
            uids = [
                await deliver(store, alice, plain(f"s{i}", f"word{i} fresh")) for i in range(50)
            ]
            # Searched immediately after delivery, before any background indexing.
            assert await store.search_text(inbox.id, "fresh", part="body") == set(uids)
            await store.copy_messages(inbox.id, [7, 8], archive.id)
            # uid 7 holds "word6" (uids start at 1); its copy is uid 1 of the archive.
            assert await store.search_text(archive.id, "word6", part="body") == {1}
            await store.delete_messages(inbox.id, [7])
            assert await store.search_text(inbox.id, "word6 ", part="body") == set()
            assert await store.search_text(archive.id, "word6 ", part="body") == {1}

    run(body())


def test_search_survives_hostile_messages(opener: Opener, tmp_path: Path) -> None:
    nested = (
        b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
        + b"--a\r\n"
        + (b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n" * 3000)
    )
    hostile = [
        b"Subject: =?x-unknown?Q?needle1?=\r\n\r\nbody\r\n",
        b"Subject: =?utf-8?B?!!!?= needle2\r\n\r\n\xff\xfe\x00 bytes\r\n",
        b"Content-Type: text/plain; charset=bogus\r\n\r\nneedle3 \xe9t\xe9\r\n",
        nested + b"needle4\r\n",
        b"no header at all needle5",
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64 needle6!!!\r\n",
    ]

    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            for data in hostile:
                await deliver(store, alice, data)
            inbox = await box(store, alice)
            assert await store.search_text(inbox.id, "needle1", part="header:subject") == {1}
            assert await store.search_text(inbox.id, "needle2", part="header:subject") == {2}
            assert await store.search_text(inbox.id, "needle3 ét", part="body") == {3}
            assert await store.search_text(inbox.id, "needle4", part="text") == {4}
            assert await store.search_text(inbox.id, "needle", part="text") >= {1, 2, 3, 4}

    run(body())
