"""The OutboundStore contract (queue transitions, DKIM keys), run against every backend."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest

from mailstead.core.dsn import MessageDsn, RecipientDsn
from mailstead.core.errors import AlreadyExists, InUse, NotFound, StoreError
from mailstead.storage.interfaces import DkimKey, IncomingMessage, QueueUpdate, Store


@pytest.fixture
def path_and_opener(opener: Any, tmp_path: Path) -> tuple[Path, Any]:
    """The ``opener`` fixture of conftest.py (one run per backend) with a fresh directory."""
    return tmp_path / "data", opener


def run(path_and_opener: tuple[Path, Any], body: Any) -> None:
    path, opener = path_and_opener

    async def go() -> None:
        store: Store = await opener(path)
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(go())


async def queue(store: Store, qid: str, rcpts: list[str], account: int | None = None) -> None:
    await store.accept_message(IncomingMessage(
        data=f"Subject: {qid}\r\n\r\nbody\r\n".encode(), queue_id=qid, mail_from="s@a.test",
        local=[], remote=rcpts, internal_date=0.0, envelope="{}", bodystructure="{}",
        auth_account_id=account))


def test_claim_update_and_final_states(path_and_opener: tuple[Path, Any]) -> None:
    async def body(store: Store) -> None:
        await queue(store, "Q1", ["x@b.test", "y@b.test", "z@c.test"])
        far = 1e12
        claimed = await store.claim_due(far, 10, 60.0)
        assert sorted(e.rcpt_to for e in claimed) == ["x@b.test", "y@b.test", "z@c.test"]
        assert {e.state for e in claimed} == {"active"}
        assert await store.claim_due(far, 10, 60.0) == []  # leased: not claimed twice
        x, y, z = sorted(claimed, key=lambda e: e.rcpt_to)
        await store.update_queue([
            QueueUpdate(x.id, "delivered", last_error="250 ok"),
            QueueUpdate(y.id, "deferred", far + 100, "451 later", warned=True),
            QueueUpdate(z.id, "bounced", last_error="550 no"),
        ])
        rows = {e.rcpt_to: e for e in await store.queue_entries("Q1")}
        assert rows["x@b.test"].state == "delivered"
        assert rows["x@b.test"].attempts == 1
        assert rows["y@b.test"].state == "deferred"
        assert rows["y@b.test"].warned
        assert rows["y@b.test"].next_attempt == far + 100
        assert rows["z@c.test"].last_error == "550 no"
        assert rows["z@c.test"].last_attempt is not None
        # A final state is never undone.
        await store.update_queue([QueueUpdate(x.id, "deferred", far, "late")])
        assert (await store.queue_entries("Q1"))[0].state == "delivered"
        assert await store.claim_due(far, 10, 60.0) == []  # y not due until far + 100
        assert await store.retry_queue("Q1", far) == 1
        assert [e.rcpt_to for e in await store.claim_due(far, 10, 60.0)] == ["y@b.test"]
        with pytest.raises(StoreError):
            await store.update_queue([QueueUpdate(y.id, "deferred")])  # no next attempt
        assert await store.delete_queue("Q1") == 3
        assert await store.queue_entries("Q1") == []

    run(path_and_opener, body)


def test_dsn_requests_and_requiretls_are_kept_per_recipient(
    path_and_opener: tuple[Path, Any],
) -> None:
    """Migration 0017: NOTIFY/ORCPT per row, RET/ENVID/REQUIRETLS per message, read back by
    every query that returns rows (claim, list of one message, whole queue)."""

    async def body(store: Store) -> None:
        await store.accept_message(IncomingMessage(
            data=b"Subject: d\r\n\r\nbody\r\n", queue_id="QD", mail_from="s@a.test",
            local=[], remote=["x@b.test", "y@b.test", "z@b.test"], internal_date=0.0,
            envelope="{}", bodystructure="{}",
            dsn={"x@b.test": RecipientDsn(("SUCCESS", "FAILURE"), "rfc822;orig@c.test"),
                 "y@b.test": RecipientDsn(("NEVER",), None)},
            envelope_dsn=MessageDsn("HDRS", "abc+1"), requiretls=True))
        await queue(store, "QP", ["p@b.test"])
        rows = {e.rcpt_to: e for e in await store.queue_entries("QD")}
        assert rows["x@b.test"].dsn == RecipientDsn(("SUCCESS", "FAILURE"), "rfc822;orig@c.test")
        assert rows["y@b.test"].dsn == RecipientDsn(("NEVER",), None)
        assert rows["z@b.test"].dsn is None
        assert {e.envelope_dsn for e in rows.values()} == {MessageDsn("HDRS", "abc+1")}
        assert all(e.requiretls for e in rows.values())
        claimed = {e.rcpt_to: e for e in await store.claim_due(1e12, 10, 60.0)}
        assert claimed["x@b.test"].dsn == rows["x@b.test"].dsn
        plain = claimed["p@b.test"]
        assert (plain.dsn, plain.envelope_dsn, plain.requiretls) == (None, None, False)
        listed = {e.rcpt_to: e for e in await store.list_queue()}
        assert listed["y@b.test"].dsn == RecipientDsn(("NEVER",), None)

    run(path_and_opener, body)


def test_recover_and_fairness(path_and_opener: tuple[Path, Any]) -> None:
    async def body(store: Store) -> None:
        await queue(store, "Q1", [f"r{i}@b.test" for i in range(6)])
        claimed = await store.claim_due(1e12, 6, 30.0)
        lease_end = claimed[0].next_attempt
        assert await store.recover_active(lease_end - 1) == 0
        assert await store.recover_active(math.inf) == 6
        again = await store.claim_due(1e12, 4, 30.0)
        await store.update_queue([QueueUpdate(e.id, "deferred", 1.0) for e in again])
        # 4 deferred and 2 new rows due; a batch of 2 takes one of each class.
        mixed = await store.claim_due(1e12, 2, 30.0)
        assert sorted(e.attempts > 0 for e in mixed) == [False, True]

    run(path_and_opener, body)


def test_purge_and_sender_count(path_and_opener: tuple[Path, Any]) -> None:
    async def body(store: Store) -> None:
        account = (await _account(store)).id
        await queue(store, "Q1", ["a@b.test", "b@b.test"], account)
        await queue(store, "Q2", ["c@b.test"])
        assert await store.count_sent_since(account, 0.0) == 2
        assert await store.count_sent_since(account, 1e12) == 0
        rows = await store.claim_due(1e12, 10, 1.0)
        await store.update_queue([QueueUpdate(e.id, "delivered") for e in rows])
        assert await store.purge_finished(0.0) == 0
        assert await store.purge_finished(1e12) == 3
        assert await store.list_queue() == []

    run(path_and_opener, body)


async def _account(store: Store) -> Any:
    await store.add_domain("a.test")
    return await store.add_account("s@a.test", "hash")


def test_dkim_keys(path_and_opener: tuple[Path, Any]) -> None:
    async def body(store: Store) -> None:
        old = DkimKey("a.test", "ms20250101r", "rsa-sha256", "PEM1", "P1", 1.0, True)
        new = DkimKey("A.test", "ms20260101r", "rsa-sha256", "PEM2", "P2", 2.0, False)
        await store.add_dkim_key(old)
        await store.add_dkim_key(new)
        with pytest.raises(AlreadyExists):
            await store.add_dkim_key(old)
        keys = await store.dkim_keys("a.test")
        assert [k.selector for k in keys] == ["ms20260101r", "ms20250101r"]  # newest first
        await store.set_dkim_active("a.test", ["ms20260101r"])
        assert {k.selector: k.active for k in await store.dkim_keys("a.test")} == {
            "ms20260101r": True, "ms20250101r": False}
        with pytest.raises(NotFound):
            await store.set_dkim_active("a.test", ["nope"])
        assert await store.dkim_keys("other.test") == []

    run(path_and_opener, body)


def test_remove_dkim_key_refuses_active_and_unknown_keys(
        path_and_opener: tuple[Path, Any]) -> None:
    async def body(store: Store) -> None:
        await store.add_domain("a.test")
        await store.add_dkim_key(DkimKey("a.test", "old", "rsa-sha256", "PEM1", "P1", 1.0, False))
        await store.add_dkim_key(DkimKey("a.test", "new", "rsa-sha256", "PEM2", "P2", 2.0, True))
        await store.add_dkim_key(DkimKey("b.test", "old", "rsa-sha256", "PEM3", "P3", 1.0, False))
        with pytest.raises(InUse):
            await store.remove_dkim_key("a.test", "new")
        with pytest.raises(NotFound):
            await store.remove_dkim_key("a.test", "nope")
        await store.remove_dkim_key("A.test", "old")
        assert [k.selector for k in await store.dkim_keys("a.test")] == ["new"]
        with pytest.raises(NotFound):
            await store.remove_dkim_key("a.test", "old")
        # The same selector of another domain is untouched.
        assert [k.selector for k in await store.dkim_keys("b.test")] == ["old"]

    run(path_and_opener, body)


def test_remove_domain_removes_its_dkim_keys(path_and_opener: tuple[Path, Any]) -> None:
    async def body(store: Store) -> None:
        await store.add_domain("a.test")
        await store.add_domain("b.test")
        for domain in ("a.test", "b.test"):
            await store.add_dkim_key(DkimKey(domain, "s1", "rsa-sha256", "PEM", "P", 1.0, True))
            await store.add_dkim_key(DkimKey(domain, "s2", "ed25519-sha256", "PEM", "P", 1.0,
                                             True))
        await store.remove_domain("a.test")
        assert await store.dkim_keys("a.test") == []
        assert len(await store.dkim_keys("b.test")) == 2
        # A domain that cannot be removed (it has an account) keeps its keys.
        await store.add_account("x@b.test", "hash")
        with pytest.raises(InUse):
            await store.remove_domain("b.test")
        assert len(await store.dkim_keys("b.test")) == 2
        # Added again later, the domain starts without keys.
        await store.add_domain("a.test")
        assert await store.dkim_keys("a.test") == []

    run(path_and_opener, body)
