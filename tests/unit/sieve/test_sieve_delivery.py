"""The per-account Sieve step of delivery against the real store of each backend."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailstead.core.address import parse_address
from mailstead.delivery.service import DeliveryService, SessionInfo, Transaction
from mailstead.sieve.delivery import SieveRunner
from mailstead.storage.interfaces import Store
from storebackends import BACKENDS, open_backend

NOW = 1_700_000_000.0
MSG = (b"From: Sender <sender@remote.test>\r\nTo: alice@example.test\r\n"
       b"Subject: [dev] build broken\r\nMessage-ID: <m1@remote.test>\r\n\r\nhello\r\n")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(params=BACKENDS)
def store(tmp_path: Path, loop: asyncio.AbstractEventLoop,
          request: pytest.FixtureRequest) -> Iterator[Store]:
    async def setup() -> Store:
        st = await open_backend(request.param, tmp_path)
        await st.add_domain("example.test")
        await st.add_account("alice@example.test", "x")
        await st.add_account("bob@example.test", "x")
        return st

    st = loop.run_until_complete(setup())
    yield st
    loop.run_until_complete(st.close())


def _service(store: Store, clock: Clock) -> DeliveryService:
    runner = SieveRunner(store, "mx.example.test", clock=clock, redirects_per_day=2)
    return DeliveryService(store, "mx.example.test", clock=clock, sieve=runner)


async def _script(store: Store, address: str, text: str) -> int:
    account = await store.get_account(address)
    assert account is not None
    await store.put_sieve_script(account.id, "main", text)
    await store.set_active_sieve_script(account.id, "main")
    return account.id


async def _deliver(svc: DeliveryService, rcpts: list[str], data: bytes = MSG,
                   sender: str = "sender@remote.test") -> tuple[int, str]:
    session = SessionInfo(client_ip="192.0.2.1", submission=False, helo="remote.test")
    txn = Transaction(sender=parse_address(sender) if sender else None)
    for rcpt in rcpts:
        reply = await svc.check_recipient(session, txn, parse_address(rcpt))
        assert reply.code == 250
    out = await svc.deliver(session, txn, data)
    return out.reply.code, out.reply.text


def test_fileinto_create_flags_and_vacation_once(
    store: Store, loop: asyncio.AbstractEventLoop
) -> None:
    clock = Clock()
    svc = _service(store, clock)

    async def go() -> None:
        alice = await _script(store, "alice@example.test", '''require ["fileinto", "mailbox",
 "imap4flags", "variables", "vacation"];
if header :matches "subject" "[*] *" {
  addflag "$List";
  fileinto :create "Lists/${1}";
}
vacation :days 2 :subject "Away" "I am away until Monday.";
''')
        assert (await _deliver(svc, ["alice@example.test"]))[0] == 250
        msgs = await store.list_messages(alice, "Lists/dev")
        assert [m.flags for m in msgs] == [("$List",)]
        assert await store.list_messages(alice, "INBOX") == []
        queue = await store.list_queue()
        assert [q.rcpt_to for q in queue] == ["sender@remote.test"]
        assert queue[0].mail_from == ""
        reply = await store.read_blob(queue[0].blob)
        assert b"Auto-Submitted: auto-replied" in reply
        assert b"In-Reply-To: <m1@remote.test>" in reply
        assert b"Subject: Away" in reply
        assert b"I am away until Monday." in reply
        # Once per sender per period (RFC 5230 section 4.1) ...
        await _deliver(svc, ["alice@example.test"])
        assert len(await store.list_queue()) == 1
        # ... and again after :days.
        clock.now += 2 * 86400 + 1
        await _deliver(svc, ["alice@example.test"])
        assert len(await store.list_queue()) == 2
        # Never to lists, auto-submitted mail or the null sender.
        for extra in (b"List-Id: <dev.remote.test>\r\n", b"Auto-Submitted: auto-generated\r\n",
                      b"Precedence: bulk\r\n"):
            await _deliver(svc, ["alice@example.test"], extra + MSG,
                           sender="other@remote.test")
        await _deliver(svc, ["alice@example.test"], sender="")
        assert len(await store.list_queue()) == 2

    loop.run_until_complete(go())


def test_reject_at_smtp_time_when_only_recipient(
    store: Store, loop: asyncio.AbstractEventLoop
) -> None:
    svc = _service(store, Clock())

    async def go() -> None:
        alice = await _script(store, "alice@example.test",
                              'require "reject"; if header :contains "subject" "broken" '
                              '{ reject "No build mail, please."; }')
        code, text = await _deliver(svc, ["alice@example.test"])
        assert (code, text) == (550, "No build mail, please.")
        assert await store.list_messages(alice, "INBOX") == []
        # With another recipient, bob gets his copy and the sender a notice (RFC 5429 2.1).
        code, _ = await _deliver(svc, ["alice@example.test", "bob@example.test"])
        assert code == 250
        bob = await store.get_account("bob@example.test")
        assert bob is not None
        assert len(await store.list_messages(bob.id, "INBOX")) == 1
        assert await store.list_messages(alice, "INBOX") == []
        (notice,) = await store.list_queue()
        body = await store.read_blob(notice.blob)
        assert b"disposition-notification" in body
        assert b"No build mail, please." in body

    loop.run_until_complete(go())


def test_redirect_discard_and_broken_script(
    store: Store, loop: asyncio.AbstractEventLoop
) -> None:
    svc = _service(store, Clock())

    async def go() -> None:
        alice = await _script(store, "alice@example.test",
                              'redirect "bob@example.test"; redirect "x@remote.test";')
        bob = await store.get_account("bob@example.test")
        assert bob is not None
        await _deliver(svc, ["alice@example.test"])
        assert len(await store.list_messages(bob.id, "INBOX")) == 1
        assert [q.rcpt_to for q in await store.list_queue()] == ["x@remote.test"]
        assert await store.list_messages(alice, "INBOX") == []
        # The daily limit (2 here) is reached: the message is kept instead.
        await _deliver(svc, ["alice@example.test"])
        assert len(await store.list_messages(alice, "INBOX")) == 1
        await _script(store, "alice@example.test", "discard;")
        await _deliver(svc, ["alice@example.test"])
        assert len(await store.list_messages(alice, "INBOX")) == 1
        # A script that no longer compiles (stored by an older release) keeps the mail.
        await store.put_sieve_script(alice, "main", "this is not sieve")
        await _deliver(svc, ["alice@example.test"])
        assert len(await store.list_messages(alice, "INBOX")) == 2
        # fileinto a missing mailbox without :create keeps the message in INBOX.
        await _script(store, "alice@example.test", 'require "fileinto"; fileinto "Nope";')
        await _deliver(svc, ["alice@example.test"])
        assert len(await store.list_messages(alice, "INBOX")) == 3

    loop.run_until_complete(go())


def test_fileinto_create_past_the_mailbox_limit_keeps(
    store: Store, loop: asyncio.AbstractEventLoop
) -> None:
    clock = Clock()

    async def go() -> None:
        alice = await _script(store, "alice@example.test",
                              'require ["fileinto", "mailbox"]; fileinto :create "Overflow";')
        full = len(await store.list_mailboxes(alice))
        runner = SieveRunner(store, "mx.example.test", clock=clock, max_mailboxes=full)
        svc = DeliveryService(store, "mx.example.test", clock=clock, sieve=runner)
        assert (await _deliver(svc, ["alice@example.test"]))[0] == 250
        # RFC 5228 section 2.10.6: an action that cannot be done keeps the message.
        assert len(await store.list_messages(alice, "INBOX")) == 1
        assert await store.get_mailbox(alice, "Overflow") is None
        roomy = SieveRunner(store, "mx.example.test", clock=clock, max_mailboxes=full + 1)
        svc = DeliveryService(store, "mx.example.test", clock=clock, sieve=roomy)
        assert (await _deliver(svc, ["alice@example.test"]))[0] == 250
        assert len(await store.list_messages(alice, "Overflow")) == 1

    loop.run_until_complete(go())


def test_script_store_operations(store: Store, loop: asyncio.AbstractEventLoop) -> None:
    from mailstead.core.errors import AlreadyExists, InUse, NotFound

    async def go() -> None:
        alice = await _script(store, "alice@example.test", "keep;")
        await store.put_sieve_script(alice, "other", "discard;")
        assert [(s.name, s.active) for s in await store.list_sieve_scripts(alice)] == [
            ("main", True), ("other", False)]
        with pytest.raises(InUse):
            await store.delete_sieve_script(alice, "main")
        with pytest.raises(AlreadyExists):
            await store.rename_sieve_script(alice, "other", "main")
        await store.rename_sieve_script(alice, "main", "renamed")
        active = await store.active_sieve_script(alice)
        assert active is not None
        assert active.name == "renamed"
        await store.set_active_sieve_script(alice, "other")
        await store.delete_sieve_script(alice, "renamed")
        with pytest.raises(NotFound):
            await store.set_active_sieve_script(alice, "gone")
        await store.set_active_sieve_script(alice, None)
        assert await store.active_sieve_script(alice) is None
        await store.add_sieve_event(alice, "vacation", "k", 10.0)
        assert await store.count_sieve_events(alice, "vacation", "k", 5.0) == 1
        assert await store.prune_sieve_events(11.0) == 1

    loop.run_until_complete(go())


def test_concurrent_fileinto_create_of_a_new_mailbox(
    store: Store, loop: asyncio.AbstractEventLoop
) -> None:
    # Deliveries racing to create the same new mailbox (RFC 5490 section 3.2 :create): one
    # creates it, the others find it created meanwhile; every copy is filed there.
    svc = _service(store, Clock())

    async def go() -> None:
        alice = await _script(store, "alice@example.test",
                              'require ["fileinto", "mailbox"]; fileinto :create "Lists";')
        replies = await asyncio.gather(*(_deliver(svc, ["alice@example.test"])
                                         for _ in range(4)))
        assert [code for code, _ in replies] == [250] * 4
        assert len(await store.list_messages(alice, "Lists")) == 4
        assert await store.list_messages(alice, "INBOX") == []

    loop.run_until_complete(go())
