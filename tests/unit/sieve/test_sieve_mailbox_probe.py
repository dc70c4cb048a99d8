"""Sieve's cheap fileinto-target probe on each backend, and its use by SieveRunner (which
remembers targets that exist, and settles when one is gone since); MessageView's parsed
addresses are computed once per field and handed out as copies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailstead.core.address import parse_address
from mailstead.delivery.service import DeliveryService, SessionInfo, Transaction
from mailstead.sieve.delivery import SieveRunner
from mailstead.sieve.message import MessageView
from mailstead.storage.postgres.store import PostgresStore
from mailstead.storage.sqlite.store import SQLiteStore
from storebackends import BACKENDS, open_backend

MSG = (b"From: Sender <sender@remote.test>\r\nTo: alice@example.test\r\n"
       b"Subject: report\r\n\r\nhello\r\n")
SCRIPT = 'require ["fileinto"]; fileinto "Reports"; fileinto "Missing";'


@pytest.mark.parametrize("backend", BACKENDS)
def test_sieve_mailbox_exists(tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        store = await open_backend(backend, tmp_path)
        try:
            assert isinstance(store, (SQLiteStore, PostgresStore))  # both have the probe
            await store.add_domain("example.test")
            alice = await store.add_account("alice@example.test", "x")
            bob = await store.add_account("bob@example.test", "x")
            await store.create_mailbox(alice.id, "Reports")
            assert await store.sieve_mailbox_exists(alice.id, "Reports")
            assert await store.sieve_mailbox_exists(alice.id, "inbox")  # RFC 3501 5.1
            assert not await store.sieve_mailbox_exists(alice.id, "reports")  # exact names
            assert not await store.sieve_mailbox_exists(bob.id, "Reports")  # per account
            assert not await store.sieve_mailbox_exists(alice.id, "Missing")
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("backend", BACKENDS)
def test_runner_files_into_existing_and_keeps_for_missing_mailboxes(
        tmp_path: Path, backend: str) -> None:
    async def main() -> None:
        store = await open_backend(backend, tmp_path)
        try:
            await store.add_domain("example.test")
            alice = await store.add_account("alice@example.test", "x")
            await store.create_mailbox(alice.id, "Reports")
            await store.put_sieve_script(alice.id, "s", SCRIPT)
            await store.set_active_sieve_script(alice.id, "s")
            runner = SieveRunner(store, "mx.example.test")
            plan = await runner.plan({alice.id: "alice@example.test"}, "sender@remote.test",
                                     MSG, "INBOX")
            # RFC 5228 section 4.1: a missing mailbox without :create keeps the message.
            assert sorted(d.mailbox for d in plan.local) == ["INBOX", "Reports"]
        finally:
            await store.close()

    asyncio.run(main())


class ProbeCounter:
    """The store with its fileinto-target probe counted."""

    def __init__(self, inner: SQLiteStore | PostgresStore) -> None:
        self._inner = inner
        self.probes = 0

    async def sieve_mailbox_exists(self, account_id: int, name: str) -> bool:
        self.probes += 1
        return await self._inner.sieve_mailbox_exists(account_id, name)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_targets_are_remembered_and_a_removed_one_is_settled_at_delivery(
        tmp_path: Path, backend: str) -> None:
    script = ('require ["fileinto", "mailbox"];'
              ' fileinto :create "Made"; fileinto "Reports";')

    async def deliver(service: DeliveryService) -> int:
        session = SessionInfo(client_ip="192.0.2.1", submission=False, helo="c.test")
        txn = Transaction(parse_address("sender@remote.test"))
        assert (await service.check_recipient(
            session, txn, parse_address("alice@example.test"))).code == 250
        outcome = await service.deliver(session, txn, MSG)
        assert outcome.reply.code == 250, outcome.reply
        return outcome.local

    async def main() -> None:
        inner = await open_backend(backend, tmp_path)
        try:
            assert isinstance(inner, (SQLiteStore, PostgresStore))
            await inner.add_domain("example.test")
            alice = await inner.add_account("alice@example.test", "x")
            await inner.create_mailbox(alice.id, "Reports")
            await inner.put_sieve_script(alice.id, "s", script)
            await inner.set_active_sieve_script(alice.id, "s")
            store = ProbeCounter(inner)
            runner = SieveRunner(store, "mx.example.test")  # type: ignore[arg-type]
            service = DeliveryService(store, "mx.example.test",  # type: ignore[arg-type]
                                      sieve=runner)

            async def count(name: str) -> int:
                return len(await inner.list_messages(alice.id, name))

            assert await deliver(service) == 1
            assert (await count("Made"), await count("Reports")) == (1, 1)
            probes = store.probes
            assert await deliver(service) == 1
            assert store.probes == probes  # both targets remembered: no lookups
            # Both go away behind the runner's back (another IMAP session, another node).
            await inner.delete_mailbox(alice.id, "Made")
            await inner.delete_mailbox(alice.id, "Reports")
            assert await deliver(service) == 1
            # RFC 5490 :create makes "Made" again; "Reports" (no :create) falls back to INBOX
            # (RFC 5228 section 4.1): the message is delivered, never refused or lost.
            assert await count("Made") == 1
            assert await inner.get_mailbox(alice.id, "Reports") is None
            assert await count("INBOX") == 1
        finally:
            await inner.close()

    asyncio.run(main())


def test_message_view_addresses_are_parsed_once_and_copied() -> None:
    view = MessageView(b"From: A <a@x.test>, b@y.test\r\nfrom: c@z.test\r\n\r\nbody\r\n")
    first = view.addresses("From")
    assert first == ["a@x.test", "b@y.test", "c@z.test"]
    first.append("mutated@caller.test")
    assert view.addresses("FROM") == ["a@x.test", "b@y.test", "c@z.test"]
    assert view.addresses("to") == []
