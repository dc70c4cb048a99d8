"""Sieve's cheap fileinto-target probe on each backend, and its use by SieveRunner;
MessageView's parsed addresses are computed once per field and handed out as copies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

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


def test_message_view_addresses_are_parsed_once_and_copied() -> None:
    view = MessageView(b"From: A <a@x.test>, b@y.test\r\nfrom: c@z.test\r\n\r\nbody\r\n")
    first = view.addresses("From")
    assert first == ["a@x.test", "b@y.test", "c@z.test"]
    first.append("mutated@caller.test")
    assert view.addresses("FROM") == ["a@x.test", "b@y.test", "c@z.test"]
    assert view.addresses("to") == []
