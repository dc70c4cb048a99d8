"""The quota warning rules (accounts/quotawarn.py): which level a usage reaches, which
crossings are warned about, and the warning message itself; then the warner on a real store:
once per crossing, again after usage fell below, and stored into a full mailbox."""

from __future__ import annotations

import asyncio
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest

from mailstead.accounts.quotawarn import QuotaWarner, level, should_warn, warning_message
from mailstead.core.message import summarize
from mailstead.storage.interfaces import IncomingMessage, LocalDelivery, Quota, Store
from storebackends import open_backend


@pytest.mark.parametrize(("used", "limit", "expected"), [
    (0, 100, 0), (79, 100, 0), (80, 100, 80), (94, 100, 80), (95, 100, 95), (150, 100, 95),
    (1, 0, 95),
])
def test_level(used: int, limit: int, expected: int) -> None:
    assert level(used, limit) == expected


@pytest.mark.parametrize(("warned", "before", "after", "warn"), [
    (0, 0, 80, True),     # first crossing of 80%
    (80, 80, 80, False),  # still above 80%, warned already
    (80, 80, 95, True),   # on to 95%
    (0, 0, 95, True),     # one big message past both: one warning
    (95, 0, 80, True),    # fell below (mail removed) and crossed 80% again
    (95, 80, 80, False),  # fell from 95 to 80 without going below 80: no news
    (80, 0, 0, False),    # below every level
])
def test_should_warn(warned: int, before: int, after: int, warn: bool) -> None:
    assert should_warn(warned, before, after) is warn


def test_warning_message() -> None:
    data = warning_message("alice@example.test", Quota(used=96 * 1024**2, limit=100 * 1024**2,
                                                        messages=3), 95, "mx.example.test", 0.0)
    parsed = message_from_bytes(data, policy=default)
    assert parsed["From"] == "Mail system <postmaster@example.test>"
    assert parsed["Subject"] == "Your mailbox is 95% full"
    assert parsed["Auto-Submitted"] == "auto-generated"
    text = parsed.get_content()
    assert "96% full" in text
    assert "96 MiB of the 100 MiB" in text
    assert "delete messages" in text
    assert b"\r\n\r\n" in data
    assert all(line.endswith(b"\r") or not line for line in data.split(b"\n")[:-1])


def _message(account_id: int, n: int) -> IncomingMessage:
    data = b"Subject: x\r\n\r\n" + b"x" * n
    summary = summarize(data)
    return IncomingMessage(data=data, queue_id="q", mail_from="",
                           local=[LocalDelivery(account_id)], remote=[], internal_date=0.0,
                           envelope=summary.envelope, bodystructure=summary.bodystructure)


def test_warner_on_a_store(tmp_path: Path) -> None:
    async def main() -> None:
        store: Store = await open_backend("sqlite", tmp_path)
        try:
            await store.add_domain("example.test")
            aid = (await store.add_account("alice@example.test", "h")).id
            await store.set_quota(aid, 10_000)
            warner = QuotaWarner(store, "mx.example.test", clock=lambda: 0.0)

            async def add(n: int) -> None:
                message = _message(aid, n)
                await store.accept_message(message)
                await warner.added({aid: len(message.data)})

            async def warnings() -> list[str]:
                infos = await store.list_messages(aid, "INBOX")
                bodies = await store.read_blobs([m.blob for m in infos])
                return [b.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
                        for b in bodies.values() if b.startswith(b"From: Mail system")]

            await add(7_000)
            assert await warnings() == []
            await add(1_500)  # 85%
            assert await warnings() == ["Your mailbox is 80% full"]
            await add(100)
            assert len(await warnings()) == 1
            await store.set_quota(aid, None)  # no quota: re-armed, no warnings
            await add(100)
            assert (await store.get_quota(aid)).warned == 0
        finally:
            await store.close()

    asyncio.run(main())
