"""The \\Recent contract (RFC 3501 section 2.3.2, migration 0013), run against every backend:
each mailbox's first recent UID is read without being taken, taken by raising it in one
transaction (never lowered), by one caller only however many race, from two stores on the
same data (two nodes) too, and kept when the store is closed and opened again."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from mailstead.core.errors import NotFound
from mailstead.storage.interfaces import IncomingMessage, LocalDelivery, RecentInfo, Store
from storebackends import Opener, opened, two_accounts


async def deliver(store: Store, account: int, n: int) -> int:
    data = f"From: a@x.test\r\nSubject: r{n}\r\nMessage-ID: <r{n}@x.test>\r\n\r\nb{n}\r\n".encode()
    result = await store.accept_message(IncomingMessage(
        data=data, queue_id="R" + hashlib.sha256(data).hexdigest()[:8],
        mail_from="a@x.test", local=[LocalDelivery(account, "INBOX", ())], remote=[],
        internal_date=1_700_000_000.0, envelope="{}", bodystructure="{}",
    ))
    return result.delivered[0][2]


async def inbox(store: Store, account: int) -> int:
    info = await store.get_mailbox(account, "INBOX")
    assert info is not None
    return info.id


def test_recent_is_read_then_taken_once(opener: Opener, tmp_path: Path) -> None:
    async def main() -> None:
        async with opened(opener, tmp_path) as store:
            alice, _bob = await two_accounts(store)
            box = await inbox(store, alice)
            assert await store.recent_info(box) == RecentInfo(1, 0)
            uids = [await deliver(store, alice, n) for n in range(3)]
            assert uids == [1, 2, 3]
            # Reading (EXAMINE, STATUS) takes nothing.
            assert await store.recent_info(box) == RecentInfo(1, 3)
            assert await store.recent_info(box) == RecentInfo(1, 3)
            # The first taker gets UIDs 1..3; the next gets nothing.
            assert await store.claim_recent(box, 4) == 1
            assert await store.recent_info(box) == RecentInfo(4, 0)
            assert await store.claim_recent(box, 4) == 4
            await deliver(store, alice, 3)
            assert await store.recent_info(box) == RecentInfo(4, 1)
            assert await store.claim_recent(box, 5) == 4
            # Never lowered: a taker with an older snapshot gets nothing and changes nothing.
            assert await store.claim_recent(box, 2) == 5
            assert await store.recent_info(box) == RecentInfo(5, 0)
            with pytest.raises(NotFound):
                await store.recent_info(box + 1000)
            with pytest.raises(NotFound):
                await store.claim_recent(box + 1000, 3)

    asyncio.run(main())


def test_racing_takers_on_two_stores_get_each_uid_once(opener: Opener, tmp_path: Path) -> None:
    async def main() -> None:
        async with opened(opener, tmp_path) as one, opened(opener, tmp_path) as two:
            alice, _bob = await two_accounts(one)
            box = await inbox(one, alice)
            for n in range(4):
                await deliver(one, alice, n)
            # Forty sessions on two nodes SELECT at once, each with the snapshot UIDNEXT 5.
            starts = await asyncio.gather(
                *(store.claim_recent(box, 5) for _ in range(20) for store in (one, two))
            )
            assert sorted(starts) == [1] + [5] * 39
            # Then messages arrive one by one, each taken by exactly one of many sessions.
            for n in range(4, 8):
                uid = await deliver(two, alice, n)
                starts = await asyncio.gather(
                    *(store.claim_recent(box, uid + 1) for _ in range(5) for store in (one, two))
                )
                assert sorted(starts) == [uid] + [uid + 1] * 9

    asyncio.run(main())


def test_recent_taken_stays_taken_after_reopening(opener: Opener, tmp_path: Path) -> None:
    async def main() -> None:
        async with opened(opener, tmp_path) as store:
            alice, _bob = await two_accounts(store)
            box = await inbox(store, alice)
            await deliver(store, alice, 0)
            await deliver(store, alice, 1)
            assert await store.claim_recent(box, 3) == 1
            await deliver(store, alice, 2)
        async with opened(opener, tmp_path) as store:
            assert await store.recent_info(box) == RecentInfo(3, 1)
            assert await store.claim_recent(box, 4) == 3

    asyncio.run(main())
