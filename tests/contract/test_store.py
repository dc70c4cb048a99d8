"""The Store contract, run against every backend (only SQLite for now)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest

from mailstead.core.errors import AlreadyExists, InUse, NotFound, StoreError
from mailstead.storage import open_store
from mailstead.storage.interfaces import DEFAULT_MAILBOXES, IncomingMessage, LocalDelivery, Store
from storebackends import Opener, opened


def run(coro: Awaitable[Any]) -> Any:
    async def wrap() -> Any:
        return await coro

    return asyncio.run(wrap())


def message(
    data: bytes, local: list[LocalDelivery], remote: tuple[str, ...] = ()
) -> IncomingMessage:
    return IncomingMessage(
        data=data,
        queue_id="Q" + hashlib.sha256(data).hexdigest()[:8],
        mail_from="sender@remote.test",
        local=local,
        remote=list(remote),
        internal_date=1_700_000_000.0,
        envelope='{"subject":"x"}',
        bodystructure='{"type":"text"}',
    )


async def setup(store: Store) -> int:
    await store.add_domain("example.test")
    account = await store.add_account("Alice@example.test", "hash1")
    return account.id


def test_domains_crud(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            await store.add_domain("example.test")
            await store.add_domain("other.test")
            with pytest.raises(AlreadyExists):
                await store.add_domain("example.test")
            assert await store.list_domains() == ["example.test", "other.test"]
            assert await store.is_local_domain("example.test")
            assert await store.is_local_domain("EXAMPLE.test")
            assert not await store.is_local_domain("nope.test")
            await store.add_account("a@example.test", "h")
            with pytest.raises(InUse):
                await store.remove_domain("example.test")
            await store.add_alias("list@other.test", ["a@example.test"])
            with pytest.raises(InUse):
                await store.remove_domain("other.test")
            await store.remove_alias("list@other.test")
            await store.remove_domain("other.test")
            with pytest.raises(NotFound):
                await store.remove_domain("other.test")
            assert await store.list_domains() == ["example.test"]

    run(body())


def test_accounts_crud(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            with pytest.raises(NotFound):
                await store.add_account("a@nowhere.test", "h")
            account_id = await setup(store)
            with pytest.raises(AlreadyExists):
                await store.add_account("alice@EXAMPLE.test", "h")
            got = await store.get_account("ALICE@example.test")
            assert got is not None
            assert (got.id, got.address, got.password_hash) == (
                account_id,
                "Alice@example.test",
                "hash1",
            )
            assert await store.get_account_by_id(account_id) == got
            assert await store.get_account("bob@example.test") is None
            await store.set_password("alice@example.test", "hash2")
            assert (await store.get_account_by_id(account_id)).password_hash == "hash2"  # type: ignore[union-attr]
            with pytest.raises(NotFound):
                await store.set_password("bob@example.test", "x")
            await store.add_domain("b.test")
            await store.add_account("bob@b.test", "h")
            assert [a.address for a in await store.list_accounts()] == [
                "Alice@example.test",
                "bob@b.test",
            ]
            assert [a.address for a in await store.list_accounts("b.test")] == ["bob@b.test"]
            boxes = await store.list_mailboxes(account_id)
            assert [(b.name, b.special_use) for b in boxes] == list(DEFAULT_MAILBOXES)
            assert all(b.uidnext == 1 and b.messages == 0 for b in boxes)
            assert len({b.uidvalidity for b in boxes}) == len(boxes)
            await store.remove_account("alice@example.test")
            assert await store.get_account("alice@example.test") is None
            assert await store.list_mailboxes(account_id) == []
            with pytest.raises(NotFound):
                await store.remove_account("alice@example.test")

    run(body())


def test_uidvalidity_never_reused(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            first = await setup(store)
            before = {b.name: b.uidvalidity for b in await store.list_mailboxes(first)}
            await store.remove_account("alice@example.test")
            again = (await store.add_account("alice@example.test", "h")).id
            after = {b.name: b.uidvalidity for b in await store.list_mailboxes(again)}
            # RFC 3501 section 2.3.1.1: a recreated mailbox must get a new UIDVALIDITY.
            assert all(after[name] > before[name] for name in before)

    run(body())


def test_aliases_crud(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            await setup(store)
            with pytest.raises(NotFound):
                await store.add_alias("x@remote.test", ["alice@example.test"])
            await store.add_alias("Team@example.test", ["alice@example.test", "bob@remote.test"])
            await store.add_alias("team@example.test", ["carol@remote.test", "BOB@remote.test"])
            assert await store.get_alias("TEAM@example.test") == (
                "alice@example.test",
                "bob@remote.test",
                "carol@remote.test",
            )
            await store.add_alias("@example.test", ["alice@example.test"])
            assert await store.get_alias("@example.test") == ("alice@example.test",)
            assert await store.get_alias("nobody@example.test") is None
            aliases = await store.list_aliases()
            assert [(a.source, a.targets) for a in aliases] == [
                ("@example.test", ("alice@example.test",)),
                (
                    "Team@example.test",
                    ("alice@example.test", "bob@remote.test", "carol@remote.test"),
                ),
            ]
            with pytest.raises(NotFound):  # all or nothing: alice stays
                await store.remove_alias("team@example.test", ["alice@example.test", "zed@x.test"])
            await store.remove_alias("team@example.test", ["bob@remote.test"])
            assert await store.get_alias("team@example.test") == (
                "alice@example.test",
                "carol@remote.test",
            )
            await store.remove_alias("team@example.test")
            assert await store.get_alias("team@example.test") is None
            with pytest.raises(NotFound):
                await store.remove_alias("team@example.test")

    run(body())


def test_accept_local_and_remote(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            data = b"Subject: one\r\n\r\nhello\r\n"
            result = await store.accept_message(
                message(
                    data,
                    [LocalDelivery(alice), LocalDelivery(alice, "Junk", ("\\Seen",))],
                    ("x@remote.test", "y@remote.test"),
                )
            )
            assert result.blob == hashlib.sha256(data).hexdigest()
            assert result.queued == 2
            assert [uid for _, _, uid in result.delivered] == [1, 1]
            inbox = await store.list_messages(alice, "inbox")
            assert [(m.uid, m.size, m.blob, m.flags) for m in inbox] == [
                (1, len(data), result.blob, ())
            ]
            assert inbox[0].envelope == '{"subject":"x"}'
            junk = await store.list_messages(alice, "Junk")
            assert junk[0].flags == ("\\Seen",)
            queue = await store.list_queue()
            assert [(q.rcpt_to, q.state, q.attempts, q.blob) for q in queue] == [
                ("x@remote.test", "queued", 0, result.blob),
                ("y@remote.test", "queued", 0, result.blob),
            ]
            assert await store.read_blob(result.blob) == data
            with pytest.raises(NotFound):
                await store.read_blob("0" * 64)
            with pytest.raises(NotFound):
                await store.read_blob("../../etc/passwd")
            # Several at once: each name once, names not found (or malformed) left out.
            assert await store.read_blobs([result.blob, "0" * 64, result.blob,
                                           "../../etc/passwd"]) == {result.blob: data}
            assert await store.read_blobs([]) == {}
            with pytest.raises(NotFound):
                await store.list_messages(alice, "NoSuchBox")

    run(body())


def test_accept_is_atomic(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            bad = message(
                b"x\r\n",
                [LocalDelivery(alice), LocalDelivery(alice, "Missing")],
                ("r@remote.test",),
            )
            good = message(b"y\r\n", [LocalDelivery(alice)])
            results = await asyncio.gather(
                store.accept_message(bad), store.accept_message(good), return_exceptions=True
            )
            assert isinstance(results[0], StoreError)
            assert not isinstance(results[1], BaseException)
            inbox = await store.list_messages(alice, "INBOX")
            assert [m.blob for m in inbox] == [hashlib.sha256(b"y\r\n").hexdigest()]
            assert await store.list_queue() == []  # no row of the failed message is visible
            with pytest.raises(StoreError):
                await store.accept_message(message(b"z", []))

    run(body())


def test_uids_and_modseq_advance(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            for i in range(5):
                await store.accept_message(message(f"m{i}\r\n".encode(), [LocalDelivery(alice)]))
            msgs = await store.list_messages(alice, "INBOX")
            assert [m.uid for m in msgs] == [1, 2, 3, 4, 5]
            assert [m.modseq for m in msgs] == sorted({m.modseq for m in msgs})
            inbox = next(b for b in await store.list_mailboxes(alice) if b.name == "INBOX")
            assert (inbox.uidnext, inbox.messages) == (6, 5)
            assert inbox.highestmodseq == msgs[-1].modseq

    run(body())


def test_same_content_one_blob(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            data = b"Subject: same\r\n\r\nbody\r\n"
            first, second = await asyncio.gather(
                store.accept_message(message(data, [LocalDelivery(alice)])),
                store.accept_message(message(data, [LocalDelivery(alice)])),
            )
            third = await store.accept_message(message(data, [LocalDelivery(alice, "Archive")]))
            assert first.blob == second.blob == third.blob
            assert await store.read_blob(first.blob) == data
            if store.networked:  # bodies in the database: see test_postgres_core.py
                assert not (tmp_path / "blobs").exists()
                return
            files = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
            assert [p.name for p in files] == [first.blob]
            assert files[0].stat().st_mode & 0o777 == 0o600
            assert files[0].parent.stat().st_mode & 0o777 == 0o700

    run(body())


def test_concurrent_accepts_durable(opener: Opener, tmp_path: Path) -> None:
    payloads = [os.urandom(64) + b"\r\n" + bytes([i % 256]) * (100 + i * 37) for i in range(200)]

    async def body() -> None:
        async with opened(opener, tmp_path) as store:
            alice = await setup(store)
            results = await asyncio.gather(
                *(store.accept_message(message(p, [LocalDelivery(alice)])) for p in payloads)
            )
            assert sorted(r.delivered[0][2] for r in results) == list(range(1, 201))
        async with opened(opener, tmp_path) as store:  # reopen: everything acknowledged stays
            msgs = await store.list_messages(alice, "INBOX")
            assert [m.uid for m in msgs] == list(range(1, 201))
            stored = {await store.read_blob(m.blob) for m in msgs}
            assert stored == set(payloads)

    run(body())


def test_second_instance_sees_changes(opener: Opener, tmp_path: Path) -> None:
    async def body() -> None:
        async with opened(opener, tmp_path) as server, opened(opener, tmp_path) as cli:
            assert not await server.is_local_domain("example.test")
            await cli.add_domain("example.test")
            assert await server.is_local_domain("example.test")
            account = await cli.add_account("bob@example.test", "h")
            assert await server.get_account("bob@example.test") == account
            await server.accept_message(message(b"hi\r\n", [LocalDelivery(account.id)]))
            await cli.set_password("bob@example.test", "new")
            assert (await server.get_account("bob@example.test")).password_hash == "new"  # type: ignore[union-attr]
            assert len(await cli.list_messages(account.id, "INBOX")) == 1

    run(body())


def test_open_store_factory_and_closed(tmp_path: Path) -> None:
    async def body() -> None:
        store = await open_store(tmp_path)
        await store.add_domain("example.test")
        await store.close()
        await store.close()  # idempotent
        with pytest.raises(StoreError):
            await store.list_domains()
        with pytest.raises(StoreError):
            await store.add_domain("x.test")

    run(body())
