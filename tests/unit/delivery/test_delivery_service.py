"""The delivery policy against a real SQLite store in a temporary folder."""

from __future__ import annotations

import asyncio
import email.utils
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.core.address import parse_address
from mailstead.core.errors import CorruptData, DiskFull, StoreError
from mailstead.delivery.headers import (
    field_value,
    from_addresses,
    header_values,
    mailboxes,
    plain_address,
    received_header,
    split_header,
)
from mailstead.delivery.recipients import RecipientResolver, Verdict, is_relay_trick
from mailstead.delivery.service import DeliveryService, SessionInfo, Transaction
from mailstead.filters.pipeline import parse_fields
from mailstead.storage.interfaces import Store
from storebackends import BACKENDS, open_backend

NOW = 1_700_000_000.0


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
        await st.add_domain("other-local.test")
        await st.add_account("alice@example.test", "x")
        await st.add_account("bob@example.test", "x")
        await st.add_account("carol@other-local.test", "x")
        await st.add_alias("team@example.test", ["alice@example.test", "bob@example.test"])
        await st.add_alias("fwd@example.test", ["someone@remote.test"])
        await st.add_alias("loop1@example.test", ["loop2@example.test"])
        await st.add_alias("loop2@example.test", ["loop1@example.test"])
        await st.add_alias("@other-local.test", ["carol@other-local.test"])
        await st.add_alias("sales@example.test", ["alice@example.test"])
        return st

    st = loop.run_until_complete(setup())
    yield st
    loop.run_until_complete(st.close())


def run(loop: asyncio.AbstractEventLoop, coro):  # type: ignore[no-untyped-def]
    return loop.run_until_complete(coro)


@pytest.mark.parametrize(
    ("address", "verdict"),
    [
        ("alice@example.test", Verdict.LOCAL),
        ("ALICE@Example.Test", Verdict.LOCAL),
        ("alice+news@example.test", Verdict.LOCAL),
        ("team@example.test", Verdict.LOCAL),
        ("fwd@example.test", Verdict.LOCAL),
        ("anyone@other-local.test", Verdict.LOCAL),
        ("nobody@example.test", Verdict.UNKNOWN_USER),
        ("loop1@example.test", Verdict.UNKNOWN_USER),
        ("user@remote.test", Verdict.NOT_LOCAL),
        ("user@[127.0.0.1]", Verdict.NOT_LOCAL),
        ("user%remote.test@example.test", Verdict.RELAY_TRICK),
        ('"user@remote.test"@example.test', Verdict.RELAY_TRICK),
        ("remote.test!user@example.test", Verdict.RELAY_TRICK),
    ],
)
def test_resolve(
    loop: asyncio.AbstractEventLoop, store: Store, address: str, verdict: Verdict
) -> None:
    res = run(loop, RecipientResolver(store).resolve(parse_address(address)))
    assert res.verdict is verdict


def test_alias_expands_to_local_and_remote(loop: asyncio.AbstractEventLoop, store: Store) -> None:
    resolver = RecipientResolver(store)
    team = run(loop, resolver.resolve(parse_address("team@example.test")))
    assert sorted(team.accounts.values()) == ["alice@example.test", "bob@example.test"]
    fwd = run(loop, resolver.resolve(parse_address("fwd@example.test")))
    assert fwd.accounts == {}
    assert fwd.remote == ["someone@remote.test"]


def test_relay_trick_detection() -> None:
    assert is_relay_trick(parse_address("a%b@example.test"))
    assert not is_relay_trick(parse_address("a.b+c@example.test"))


def test_mx_refuses_relay_and_dedupes(loop: asyncio.AbstractEventLoop, store: Store) -> None:
    svc = DeliveryService(store, "mail.example.test", clock=lambda: NOW)
    mx = SessionInfo(client_ip="192.0.2.1", submission=False, helo="client.test", esmtp=True)
    txn = Transaction(sender=parse_address("x@remote.test"))
    codes = [
        run(loop, svc.check_recipient(mx, txn, parse_address(a))).code
        for a in ("alice@example.test", "alice+x@example.test", "team@example.test",
                  "user@remote.test", "nobody@example.test")
    ]
    assert codes == [250, 250, 250, 554, 550]
    assert sorted(txn.accounts.values()) == ["alice@example.test", "bob@example.test"]
    body = b"From: x@remote.test\r\nSubject: hi\r\n\r\nhello\r\n"
    outcome = run(loop, svc.deliver(mx, txn, body))
    assert outcome.reply.code == 250
    assert outcome.local == 2
    assert outcome.remote == 0
    alice = run(loop, store.get_account("alice@example.test"))
    assert alice is not None
    msgs = run(loop, store.list_messages(alice.id, "INBOX"))
    assert len(msgs) == 1
    stored = run(loop, store.read_blob(msgs[0].blob))
    assert stored.startswith(b"Received: from client.test ([192.0.2.1])\r\n")
    assert stored.endswith(body)


def test_quota_is_checked_with_the_final_size(loop: asyncio.AbstractEventLoop,
                                              store: Store) -> None:
    svc = DeliveryService(store, "mail.example.test", clock=lambda: NOW)
    mx = SessionInfo(client_ip="192.0.2.1", submission=False, helo="client.test", esmtp=True)
    alice = run(loop, store.get_account("alice@example.test"))
    bob = run(loop, store.get_account("bob@example.test"))
    assert alice is not None
    assert bob is not None
    limit = 4000
    run(loop, store.set_quota(alice.id, limit))

    def send(rcpts: list[str], size: int, declared: int | None = None) -> tuple[int, str]:
        txn = Transaction(sender=parse_address("x@remote.test"), size=declared)
        for rcpt in rcpts:
            reply = run(loop, svc.check_recipient(mx, txn, parse_address(rcpt)))
            if reply.code != 250:
                return reply.code, reply.enhanced
        body = b"From: x@remote.test\r\n\r\n" + b"x" * size + b"\r\n"
        reply = run(loop, svc.deliver(mx, txn, body)).reply
        return reply.code, reply.enhanced

    assert send(["alice@example.test"], 2500)[0] == 250
    # Under the quota at RCPT, over it with this message: refused at the end of data.
    assert send(["alice@example.test"], 2500) == (552, "5.2.2")
    # Another recipient with room: one reply answers for both, so the whole is deferred.
    assert send(["alice@example.test", "bob@example.test"], 2500) == (452, "4.2.2")
    assert len(run(loop, store.list_messages(bob.id, "INBOX"))) == 0
    # A declared SIZE= lets RCPT refuse only the recipient without room.
    assert send(["alice@example.test"], 10, declared=2500) == (552, "5.2.2")
    assert send(["bob@example.test"], 10, declared=2500)[0] == 250
    # What still fits is taken, up to the quota and never past it.
    used = run(loop, store.get_quota(alice.id)).used
    assert send(["alice@example.test"], limit - used - 400)[0] == 250
    quota = run(loop, store.get_quota(alice.id))
    assert quota.used <= limit
    assert quota.messages == 2


def test_submission_sender_rules(loop: asyncio.AbstractEventLoop, store: Store) -> None:
    svc = DeliveryService(store, "mail.example.test", clock=lambda: NOW)
    alice = run(loop, store.get_account("alice@example.test"))
    sub = SessionInfo(client_ip="127.0.0.1", submission=True, esmtp=True,
                      tls="TLSv1.3 with cipher X (256/256 bits)", account=alice)
    ok = ("alice@example.test", "alice+tag@example.test", "sales@example.test")
    for addr in ok:
        assert run(loop, svc.check_sender(sub, parse_address(addr))).code == 250, addr
    for addr in ("bob@example.test", "team2@example.test", "x@remote.test"):
        reply = run(loop, svc.check_sender(sub, parse_address(addr)))
        assert (reply.code, reply.enhanced) == (553, "5.7.1"), addr
    assert run(loop, svc.check_sender(sub, None)).code == 553

    txn = Transaction(sender=parse_address("alice@example.test"))
    assert run(loop, svc.check_recipient(sub, txn, parse_address("friend@remote.test"))).code == 250
    assert run(loop, svc.check_recipient(sub, txn, parse_address("bob@example.test"))).code == 250
    forged = b"From: bob@example.test\r\n\r\nhi\r\n"
    assert run(loop, svc.deliver(sub, txn, forged)).reply.code == 553
    body = b"From: Alice <alice@example.test>\r\nTo: friend@remote.test\r\n\r\nhi\r\n"
    outcome = run(loop, svc.deliver(sub, txn, body))
    assert outcome.reply.code == 250
    assert outcome.local == 1
    assert outcome.remote == 1
    queue = run(loop, store.list_queue())
    assert [q.rcpt_to for q in queue] == ["friend@remote.test"]
    stored = run(loop, store.read_blob(queue[0].blob))
    header, _ = split_header(stored)
    assert len(header_values(header, "Date")) == 1
    assert header_values(header, "Message-ID")[0].endswith("@mail.example.test>")
    assert b"with ESMTPSA id" in stored
    assert b"(authenticated as alice@example.test)" in stored


def test_submission_fixups_read_the_parsed_header(loop: asyncio.AbstractEventLoop,
                                                  store: Store) -> None:
    svc = DeliveryService(store, "mail.example.test", clock=lambda: NOW)
    alice = run(loop, store.get_account("alice@example.test"))
    sub = SessionInfo(client_ip="127.0.0.1", submission=True, esmtp=True, account=alice)
    txn = Transaction(sender=parse_address("alice@example.test"))
    assert run(loop, svc.check_recipient(sub, txn, parse_address("friend@remote.test"))).code == 250
    data = (b"From: alice@example.test\r\nDATE : Tue, 14 Nov 2023 22:13:20 +0000\r\n"
            b"message-id:<m1@example.test>\r\n\r\nhi\r\n")
    assert run(loop, svc.deliver(sub, txn, data)).reply.code == 250
    stored = run(loop, store.read_blob(run(loop, store.list_queue())[0].blob))
    assert stored.lower().count(b"\r\ndate") == 1
    assert stored.lower().count(b"\r\nmessage-id") == 1
    assert stored.endswith(data)


@pytest.mark.parametrize(("data", "code", "enhanced", "words"), [
    (b"From: alice@example.test\r\nSender: bob@example.test\r\n\r\nhi\r\n", 553, "5.7.1",
     "Sender: header"),
    (b"From: alice@example.test\r\nResent-From: bob@example.test\r\n\r\nhi\r\n", 553,
     "5.7.1", "Resent-From: header"),
    (b'From: "bob@example.test" <alice@example.test>\r\n\r\nhi\r\n', 550, "5.7.1",
     "names an address the authenticated account does not own"),
    (b"From: =?utf-8?b?Ym9iQGV4YW1wbGUudGVzdA==?= <alice@example.test>\r\n\r\nhi\r\n", 550,
     "5.7.1", "names an address"),
    (b"From: alice@example.test\r\nFrom: bob@example.test\r\n\r\nhi\r\n", 550, "5.6.0",
     "more than one From: field"),
    (b" From: bob@example.test\r\nFrom: alice@example.test\r\n\r\nhi\r\n", 550, "5.6.0",
     "first line starting with a space"),
])
def test_submission_author_tricks_are_refused(
    loop: asyncio.AbstractEventLoop, store: Store, data: bytes, code: int, enhanced: str,
    words: str,
) -> None:
    svc = DeliveryService(store, "mail.example.test", clock=lambda: NOW)
    alice = run(loop, store.get_account("alice@example.test"))
    sub = SessionInfo(client_ip="127.0.0.1", submission=True, esmtp=True, account=alice)
    txn = Transaction(sender=parse_address("alice@example.test"))
    assert run(loop, svc.check_recipient(sub, txn, parse_address("friend@remote.test"))).code == 250
    reply = run(loop, svc.deliver(sub, txn, data)).reply
    assert (reply.code, reply.enhanced) == (code, enhanced)
    assert words in reply.text
    assert run(loop, store.list_queue()) == []
    # The user's own address in the display name, and an alias the user receives, are fine.
    fine = (b'From: "alice@example.test" <alice@example.test>\r\n'
            b"Sender: sales@example.test\r\n\r\nhi\r\n")
    assert run(loop, svc.deliver(sub, txn, fine)).reply.code == 250


@given(st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b"a", b":"]), max_size=10)
       .map(b"".join))
@settings(max_examples=500, deadline=None)
def test_split_header_is_the_first_blank_line(data: bytes) -> None:
    # The first CRLF CRLF (or a CRLF at the very start) ends the header, as the regex did.
    m = re.search(rb"\r\n\r\n|\A\r\n", data)
    end = len(data) if m is None else (m.start() + 2 if m.group() == b"\r\n\r\n" else 0)
    assert split_header(data) == (data[:end], data[end:])


_ADDRESS_PARTS = st.sampled_from(["a", "b.c", "x-y", "Joe", "Joe Bloggs", "<", ">", "@", " ",
                                  ".", '"', ",", "(c)", "=?utf-8?q?x?=", "+tag", "\\"])


@given(st.lists(_ADDRESS_PARTS, max_size=8).map("".join))
@settings(max_examples=1000, deadline=None)
def test_plain_address_shapes_agree_with_the_email_package(value: str) -> None:
    # The fast path answers only for shapes whose addr-spec getaddresses finds the same.
    found = plain_address(value.strip())
    if found is not None:
        assert [a for _, a in email.utils.getaddresses([value.strip()])] == [found]


def test_field_values_unfold_like_header_values() -> None:
    header = (b"From: Alice <alice@a.test>\r\nSubject: one\r\n two\r\n\tthree \r\n"
              b"X-Empty:\r\nfrom : <b@b.test>\r\n")
    fields = [f for f in parse_fields(header) if f[0]]
    assert [field_value(raw) for name, raw in fields if name == b"from"] == header_values(
        header, "From")
    assert [field_value(raw) for name, raw in fields if name == b"subject"] == header_values(
        header, "Subject") == ["one two three"]
    assert [a.domain for a in mailboxes(header_values(header, "From")) or []] == [
        "a.test", "b.test"]
    assert mailboxes(["Alice <alice@a.test>, junk"]) is None


def test_from_addresses_and_received() -> None:
    header = b"From: \"A, B\" <a@example.test>, c@example.test\r\nTo: x\r\n"
    found = from_addresses(header)
    assert found is not None
    assert [str(a) for a in found] == ["a@example.test", "c@example.test"]
    assert from_addresses(b"From: not an address\r\n") is None
    trace = received_header(helo="evil\r\nX-Injected: 1", client_ip="::1", hostname="mx.test",
                            protocol="ESMTP", queue_id="Q1", tls=None, auth_user=None,
                            recipients=["a@example.test", "b@example.test"], now=NOW)
    assert not any(line.startswith(b"X-Injected") for line in trace.split(b"\r\n"))
    assert trace.count(b"\r\n") == 3
    assert b"[IPv6:::1]" in trace
    assert b"for <" not in trace


@pytest.mark.parametrize(
    ("error", "reply"),
    [
        # RFC 5321 4.2.3 / RFC 3463 4.3.1: below the free-space reserve, retry later.
        (DiskFull("the disk is almost full"), (452, "4.3.1")),
        # RFC 3463 5.3.0: a damaged store, which a retry cannot cure.
        (CorruptData("the database is damaged"), (554, "5.3.0")),
        (StoreError("database write failed: busy"), (451, "4.3.0")),
    ],
)
def test_store_failures_get_their_own_reply(
    loop: asyncio.AbstractEventLoop, store: Store, monkeypatch: pytest.MonkeyPatch,
    error: StoreError, reply: tuple[int, str],
) -> None:
    svc = DeliveryService(store, "mail.example.test", clock=lambda: NOW)
    mx = SessionInfo(client_ip="192.0.2.1", submission=False, helo="client.test", esmtp=True)
    txn = Transaction(sender=parse_address("x@remote.test"))
    assert run(loop, svc.check_recipient(mx, txn, parse_address("alice@example.test"))).code \
        == 250

    async def failing(_message: object) -> None:
        raise error

    monkeypatch.setattr(store, "accept_message", failing)
    outcome = run(loop, svc.deliver(mx, txn, b"Subject: hi\r\n\r\nhello\r\n"))
    assert (outcome.reply.code, outcome.reply.enhanced) == reply
    assert outcome.local == 0
