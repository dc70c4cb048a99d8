"""The one-read recipient lookup (SQLiteStore.lookup_recipient, RecipientLookup) and what
delivery does with the account state it brings: quota at RCPT and skipping the Sieve step."""

from __future__ import annotations

import asyncio
import email.utils
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mailstead.core.address import parse_address
from mailstead.delivery.headers import _rfc5322_date
from mailstead.delivery.recipients import (
    AccountState,
    RecipientLookup,
    RecipientResolver,
    Verdict,
)
from mailstead.delivery.service import (
    R_MAILBOX_FULL,
    DeliveryService,
    SessionInfo,
    Transaction,
)
from mailstead.sieve.delivery import SieveRunner
from mailstead.storage.sqlite.store import SQLiteStore

MSG = b"From: <s@remote.test>\r\nTo: <alice@example.test>\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture
def store(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> Iterator[SQLiteStore]:
    async def setup() -> SQLiteStore:
        st = await SQLiteStore.open(tmp_path)
        await st.add_domain("example.test")
        await st.add_account("alice@example.test", "x")
        await st.add_account("bob@example.test", "x")
        await st.add_alias("team@example.test", ["alice@example.test", "bob@example.test"])
        await st.add_alias("out@example.test", ["someone@remote.test"])
        return st

    st = loop.run_until_complete(setup())
    yield st
    loop.run_until_complete(st.close())


class NoLookup:
    """A store without ``lookup_recipient``: the resolver must use the separate reads."""

    def __init__(self, inner: SQLiteStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "lookup_recipient":
            raise AttributeError(name)
        return getattr(self._inner, name)


def run(loop: asyncio.AbstractEventLoop, coro: Any) -> Any:
    return loop.run_until_complete(coro)


def test_lookup_recipient_reports_everything_in_one_row(
    loop: asyncio.AbstractEventLoop, store: SQLiteStore
) -> None:
    alice = run(loop, store.get_account("alice@example.test"))
    assert isinstance(store, RecipientLookup)
    assert run(loop, store.lookup_recipient("EXAMPLE.test", "Alice@Example.Test")) == (
        True, alice, None, None)
    assert run(loop, store.lookup_recipient("example.test", "nobody@example.test")) == (
        True, None, None, None)
    assert run(loop, store.lookup_recipient("remote.test", "x@remote.test")) == (
        False, None, None, None)
    run(loop, store.put_sieve_script(alice.id, "main", "keep;"))
    run(loop, store.set_active_sieve_script(alice.id, "main"))
    run(loop, store.set_quota(alice.id, 0))  # used 0 >= limit 0: no room left
    assert run(loop, store.lookup_recipient("example.test", "alice@example.test")) == (
        True, alice, 0, "keep;")
    run(loop, store.set_quota(alice.id, 5000))
    assert run(loop, store.lookup_recipient("example.test", "alice@example.test"))[2] == 5000
    run(loop, store.set_active_sieve_script(alice.id, None))
    run(loop, store.set_quota(alice.id, None))
    assert run(loop, store.lookup_recipient("example.test", "alice@example.test"))[2:] == (
        None, None)


@pytest.mark.parametrize(
    ("address", "verdict", "accounts", "remote"),
    [
        ("alice@example.test", Verdict.LOCAL, {"alice@example.test"}, []),
        ("alice+tag@example.test", Verdict.LOCAL, {"alice@example.test"}, []),
        ("team@example.test", Verdict.LOCAL, {"alice@example.test", "bob@example.test"}, []),
        ("out@example.test", Verdict.LOCAL, set(), ["someone@remote.test"]),
        ("nobody@example.test", Verdict.UNKNOWN_USER, set(), []),
        ("x@remote.test", Verdict.NOT_LOCAL, set(), ["x@remote.test"]),
        ("alice%remote.test@example.test", Verdict.RELAY_TRICK, set(), []),
    ],
)
def test_resolver_gives_the_same_answer_with_and_without_the_lookup(
    loop: asyncio.AbstractEventLoop,
    store: SQLiteStore,
    address: str,
    verdict: Verdict,
    accounts: set[str],
    remote: list[str],
) -> None:
    for backend in (store, NoLookup(store)):
        res = run(loop, RecipientResolver(backend).resolve(parse_address(address)))  # type: ignore[arg-type]
        assert res.verdict is verdict
        assert set(res.accounts.values()) == accounts
        assert res.remote == remote
    fast = run(loop, RecipientResolver(store).resolve(parse_address(address)))
    if verdict is Verdict.LOCAL and accounts and "+" not in address:
        # Found through the one read, directly or as alias targets: the state came along.
        assert set(fast.states) == set(fast.accounts)
        assert all(s == AccountState(room=None, script=None) for s in fast.states.values())
    slow = run(loop, RecipientResolver(NoLookup(store)).resolve(parse_address(address)))  # type: ignore[arg-type]
    assert slow.states == {}


class CountingStore(NoLookup):
    """Counts the reads delivery makes besides the lookup itself."""

    def __init__(self, inner: SQLiteStore) -> None:
        super().__init__(inner)
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name == "lookup_recipient":
            return self._inner.lookup_recipient
        if name in ("get_quota", "active_sieve_script", "get_account", "is_local_domain"):
            self.calls.append(name)
        return getattr(self._inner, name)


def _transaction(
    loop: asyncio.AbstractEventLoop, svc: DeliveryService, rcpts: list[str]
) -> tuple[Transaction, list[int]]:
    session = SessionInfo(client_ip="192.0.2.1", submission=False, helo="c.test", esmtp=True)
    txn = Transaction(sender=parse_address("s@remote.test"))
    codes = [run(loop, svc.check_recipient(session, txn, parse_address(r))).code for r in rcpts]
    return txn, codes


def test_delivery_skips_sieve_and_quota_reads_for_plain_accounts(
    loop: asyncio.AbstractEventLoop, store: SQLiteStore
) -> None:
    counting = CountingStore(store)
    svc = DeliveryService(counting, "mx.example.test",  # type: ignore[arg-type]
                          sieve=SieveRunner(counting, "mx.example.test"))  # type: ignore[arg-type]
    txn, codes = _transaction(loop, svc, ["alice@example.test", "bob@example.test"])
    assert codes == [250, 250]
    assert txn.scripts == dict.fromkeys(txn.accounts)
    session = SessionInfo(client_ip="192.0.2.1", submission=False)
    out = run(loop, svc.deliver(session, txn, MSG))
    assert (out.reply.code, out.local) == (250, 2)
    assert counting.calls == []  # one read per RCPT, nothing else on the way to the writer
    for address in ("alice@example.test", "bob@example.test"):
        account = run(loop, store.get_account(address))
        assert len(run(loop, store.list_messages(account.id, "INBOX"))) == 1


def test_an_active_script_still_runs(
    loop: asyncio.AbstractEventLoop, store: SQLiteStore
) -> None:
    alice = run(loop, store.get_account("alice@example.test"))
    run(loop, store.create_mailbox(alice.id, "Lists"))
    run(loop, store.put_sieve_script(alice.id, "main", 'require "fileinto"; fileinto "Lists";'))
    run(loop, store.set_active_sieve_script(alice.id, "main"))
    counting = CountingStore(store)
    svc = DeliveryService(counting, "mx.example.test",  # type: ignore[arg-type]
                          sieve=SieveRunner(counting, "mx.example.test"))  # type: ignore[arg-type]
    txn, codes = _transaction(loop, svc, ["alice@example.test", "bob@example.test"])
    assert codes == [250, 250]
    bob = run(loop, store.get_account("bob@example.test"))
    assert txn.scripts == {alice.id: 'require "fileinto"; fileinto "Lists";', bob.id: None}
    out = run(loop, svc.deliver(SessionInfo(client_ip="192.0.2.1", submission=False), txn, MSG))
    assert out.reply.code == 250
    assert "active_sieve_script" not in counting.calls  # the script came with the RCPT read
    assert len(run(loop, store.list_messages(alice.id, "Lists"))) == 1
    assert run(loop, store.list_messages(alice.id, "INBOX")) == []
    # The script is switched off: the next transaction sees it at once (nothing cached).
    run(loop, store.set_active_sieve_script(alice.id, None))
    txn, _ = _transaction(loop, svc, ["alice@example.test"])
    assert txn.scripts[alice.id] is None
    run(loop, svc.deliver(SessionInfo(client_ip="192.0.2.1", submission=False), txn, MSG))
    assert len(run(loop, store.list_messages(alice.id, "INBOX"))) == 1


def test_quota_from_the_lookup_refuses_a_full_mailbox(
    loop: asyncio.AbstractEventLoop, store: SQLiteStore
) -> None:
    alice = run(loop, store.get_account("alice@example.test"))
    svc = DeliveryService(store, "mx.example.test")
    run(loop, store.set_quota(alice.id, 0))
    _, codes = _transaction(loop, svc, ["alice@example.test"])
    assert codes == [R_MAILBOX_FULL.code]
    # Through an alias, the full account gets no copy and the other one does.
    txn, codes = _transaction(loop, svc, ["team@example.test"])
    assert codes == [250]
    assert set(txn.accounts) == {run(loop, store.get_account("bob@example.test")).id}
    run(loop, store.set_quota(alice.id, None))
    _, codes = _transaction(loop, svc, ["alice@example.test"])
    assert codes == [250]


def test_date_matches_email_utils() -> None:
    rng = random.Random(5)
    for t in [0.0, 951782400.0, 1_700_000_000.5] + [rng.uniform(0, 4e9) for _ in range(2000)]:
        expected = email.utils.format_datetime(datetime.fromtimestamp(t, UTC))
        assert _rfc5322_date(t) == expected
