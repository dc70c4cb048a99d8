"""IMAPSession against a real SQLite store: states, auth, mailboxes, messages, concurrency."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import pytest
from imap_driver import PASSWORD, USER, Body, World

from mailstead.imap.base import Action, State


def test_greeting_and_login_disabled_before_tls(run: Callable[[Body], None]) -> None:
    async def body(w: World) -> None:
        c = w.client(tls_active=False, starttls_available=True)
        assert c.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2 ")
        assert b"STARTTLS" in c.greeting
        assert b"LOGINDISABLED" in c.greeting
        assert b"AUTH=PLAIN" not in c.greeting
        out = await c.login()
        assert out == "L1 NO [PRIVACYREQUIRED] Plaintext login is disabled: use STARTTLS first\r\n"
        out = await c.cmd("a AUTHENTICATE PLAIN AGFsaWNlAHg=")
        assert out.startswith("a NO [PRIVACYREQUIRED]")
        assert await c.cmd("t STARTTLS") == "t OK Begin TLS negotiation now\r\n"
        assert c.session.action is Action.STARTTLS
        c.session.tls_started()
        out = await c.cmd("c CAPABILITY")
        assert "AUTH=PLAIN" in out
        assert "LOGINDISABLED" not in out
        assert "STARTTLS" not in out
        out = await c.login()
        assert out.startswith("L1 OK [CAPABILITY ")
        # RFC 9051 section 7.2.2: no AUTH=, STARTTLS or LOGINDISABLED once authenticated.
        assert "AUTH=" not in out
        assert "AUTH=" not in await c.cmd("c2 CAPABILITY")

    run(body)


def test_login_failures_and_sasl(run: Callable[[Body], None]) -> None:
    async def body(w: World) -> None:
        c = w.client()
        assert await c.cmd(f"a LOGIN {USER} wrong") == (
            "a NO [AUTHENTICATIONFAILED] Invalid credentials\r\n"
        )
        assert (await c.cmd("b SELECT INBOX")).startswith("b BAD")
        ir = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        # Without SASL-IR: an empty challenge, then the response line.
        assert await c.cmd("c AUTHENTICATE PLAIN") == "+ \r\n"
        assert (await c.cmd(ir)).startswith("c OK [CAPABILITY IMAP4rev1")
        assert c.session.state is State.AUTHENTICATED
        c2 = w.client()
        assert await c2.cmd("d AUTHENTICATE PLAIN") == "+ \r\n"
        assert await c2.cmd("*") == "d BAD Authentication cancelled\r\n"
        assert (await c2.cmd(f"e AUTHENTICATE PLAIN {ir}")).startswith("e OK [CAPABILITY")
        c3 = w.client()
        assert (await c3.cmd("f AUTHENTICATE PLAIN !!!")).startswith("f BAD")
        assert (await c3.cmd("g AUTHENTICATE CRAM-MD5")).startswith("g NO")

    run(body)


def test_connections_per_account(run: Callable[[Body], None]) -> None:
    async def body(w: World) -> None:
        first = w.client(max_connections_per_account=1)
        assert (await first.login()).startswith("L1 OK")
        second = w.client(max_connections_per_account=1)
        assert await second.login() == (
            "L1 NO [UNAVAILABLE] Too many connections for this account\r\n"
        )
        await first.session.close()
        assert (await second.login()).startswith("L1 OK")

    run(body)


def test_bad_commands_in_a_row_get_bye(run: Callable[[Body], None]) -> None:
    async def body(w: World) -> None:
        c = w.client(max_bad_commands=3)
        assert (await c.cmd("a FOO")).startswith("a BAD")
        assert (await c.cmd("b NOOP")).startswith("b OK")  # a good command resets the count
        await c.cmd("c FOO")
        await c.cmd("d \x01\x02")
        out = await c.cmd("e BAR")
        assert out.endswith("* BYE Too many invalid commands\r\n")
        assert c.session.action is Action.CLOSE

    run(body)


def test_select_examine_fetch_sets_seen_only_read_write(run: Callable[[Body], None]) -> None:
    async def body(w: World) -> None:
        await w.deliver("one")
        await w.deliver("two")
        c = w.client()
        await c.login()
        out = await c.cmd("a EXAMINE INBOX")
        assert "* 2 EXISTS\r\n" in out
        assert "* OK [PERMANENTFLAGS ()]" in out
        assert out.endswith("a OK [READ-ONLY] EXAMINE completed\r\n")
        out = await c.cmd("b FETCH 1 (BODY[TEXT])")
        assert out.startswith("* 1 FETCH (BODY[TEXT] {11}\r\nBody text\r\n)")
        assert "\\Seen" not in out
        out = await c.cmd("c SELECT INBOX")
        assert out.startswith("* OK [CLOSED]")  # RFC 7162 section 3.2.11
        assert "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]" in out
        assert "* OK [UNSEEN 1]" in out
        assert "* OK [HIGHESTMODSEQ " in out
        out = await c.cmd("d FETCH 2 (BODY[])")
        assert "FLAGS (\\Seen" in out  # RFC 9051 6.4.5: the implicit \Seen is reported
        out = await c.cmd("e FETCH 1:2 (FLAGS)")
        assert "* 1 FETCH (FLAGS (\\Recent))" in out
        assert "* 2 FETCH (FLAGS (\\Seen \\Recent))" in out
        assert (await c.cmd("f FETCH 3 FLAGS")).startswith("f BAD [CLIENTBUG]")
        out = await c.cmd("g UID FETCH 1:* (FLAGS)")
        assert "* 1 FETCH (UID 1 FLAGS" in out

    run(body)


def test_store_condstore_and_unchangedsince(run: Callable[[Body], None]) -> None:
    async def body(w: World) -> None:
        for i in range(3):
            await w.deliver(f"m{i}")
        c = w.client()
        await c.login()
        assert "ENABLED CONDSTORE" in await c.cmd("a ENABLE CONDSTORE")
        await c.cmd("b SELECT INBOX")
        out = await c.cmd("c STORE 1 +FLAGS (\\Flagged $Label)")
        # The new keyword is announced first (RFC 3501 section 7.2.6).
        flags_line, permanent, fetched = out.splitlines()[:3]
        assert flags_line == "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label)"
        assert permanent.startswith("* OK [PERMANENTFLAGS (\\Answered")
        assert fetched.startswith("* 1 FETCH (FLAGS (\\Flagged $Label \\Recent) MODSEQ (")
        out = await c.cmd("d STORE 2 +FLAGS.SILENT (\\Seen)")
        assert out.startswith("* 2 FETCH (MODSEQ (")  # RFC 7162 3.1.3
        assert "FLAGS" not in out
        out = await c.cmd("e UID STORE 1:3 (UNCHANGEDSINCE 1) +FLAGS (\\Answered)")
        assert "e OK [MODIFIED 1:3]" in out
        assert (await c.cmd("f STORE 1 +FLAGS (\\Recent)")).startswith("f BAD")
        assert (await c.cmd("g STORE 1 +FLAGS (\\Bogus)")).startswith("g BAD")
        out = await c.cmd("h FETCH 1 (FLAGS)")
        assert "\\Flagged" in out
        assert "$Label" in out

    run(body)


def test_copy_move_expunge_with_uidplus(run: Callable[[Body], None]) -> None:
    async def body(w: World) -> None:
        for i in range(4):
            await w.deliver(f"m{i}")
        c = w.client()
        await c.login()
        await c.cmd("a SELECT INBOX")
        out = await c.cmd("b COPY 1:2 Archive")
        assert out.startswith("b OK [COPYUID ")
        assert out.endswith(" 1:2 1:2] COPY completed\r\n")
        assert (await c.cmd("c COPY 1 Nope")).startswith("c NO [TRYCREATE]")
        out = await c.cmd("d MOVE 3 Trash")
        assert "* OK [COPYUID " in out
        assert "* 3 EXPUNGE\r\n" in out
        assert out.endswith("d OK MOVE completed\r\n")
        await c.cmd("e STORE 1 +FLAGS.SILENT (\\Deleted)")
        out = await c.cmd("f EXPUNGE")
        assert out == "* 1 EXPUNGE\r\nf OK EXPUNGE completed\r\n"
        await c.cmd("g STORE 1:2 +FLAGS.SILENT (\\Deleted)")
        out = await c.cmd("h UID EXPUNGE 4")
        assert out == "* 2 EXPUNGE\r\nh OK UID EXPUNGE completed\r\n"
        out = await c.cmd("i STATUS Archive (MESSAGES UIDNEXT)")
        assert "* STATUS Archive (MESSAGES 2 UIDNEXT 3)" in out
        out = await c.cmd('i2 LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN DELETED))')
        assert "* STATUS Archive (MESSAGES 2 UNSEEN 2 DELETED 0)" in out
        assert "* STATUS Drafts (MESSAGES 0 UNSEEN 0 DELETED 0)" in out
        out = await c.cmd("j CLOSE")
        assert out == "j OK CLOSE completed\r\n"  # silent expunge of UID 2
        out = await c.cmd("k STATUS INBOX (MESSAGES)")
        assert "(MESSAGES 0)" in out

    run(body)


def test_expunge_elsewhere_never_shifts_numbers_mid_command(run: Callable[[Body], None]) -> None:
    async def body(w: World) -> None:
        for i in range(3):
            await w.deliver(f"m{i}")
        a, b = w.client(), w.client()
        await a.login()
        await b.login()
        await a.cmd("a1 SELECT INBOX")
        await b.cmd("b1 SELECT INBOX")
        await b.cmd("b2 STORE 1 +FLAGS.SILENT (\\Deleted)")
        await b.cmd("b3 EXPUNGE")
        # A's FETCH must not carry EXPUNGE (RFC 9051 section 7.5.1) ...
        out = await a.cmd("a2 FETCH 3 (UID)")
        assert "EXPUNGE" not in out
        assert "* 3 FETCH (UID 3)" in out
        out = await a.cmd("a3 SEARCH ALL")
        assert "EXPUNGE" not in out
        # ... but UID FETCH and NOOP may.
        out = await a.cmd("a4 NOOP")
        assert out == "* 1 EXPUNGE\r\na4 OK NOOP completed\r\n"
        out = await a.cmd("a5 FETCH 2 (UID)")
        assert "* 2 FETCH (UID 3)" in out
        # New mail and flag changes by others show up after any command.
        await w.deliver("new")
        await b.cmd("b4 STORE 1 +FLAGS.SILENT (\\Flagged)")
        out = await a.cmd("a6 FETCH 1 (UID)")
        assert "* 3 EXISTS" in out
        assert "* 1 FETCH (UID 2 FLAGS (\\Flagged" in out

    run(body)


def test_qresync_select_and_vanished(run: Callable[[Body], None]) -> None:
    async def body(w: World) -> None:
        for i in range(3):
            await w.deliver(f"m{i}")
        c = w.client()
        await c.login()
        out = await c.cmd("a SELECT INBOX")
        uidvalidity = out.split("UIDVALIDITY ")[1].split("]")[0]
        modseq = out.split("HIGHESTMODSEQ ")[1].split("]")[0]
        await c.cmd("b STORE 2 +FLAGS.SILENT (\\Deleted)")
        await c.cmd("c EXPUNGE")
        await c.cmd("d STORE 1 +FLAGS.SILENT (\\Seen)")
        await c.cmd("e UNSELECT")
        assert (await c.cmd(f"f SELECT INBOX (QRESYNC ({uidvalidity} {modseq}))")).startswith(
            "f BAD"
        )
        await c.cmd("g ENABLE QRESYNC")
        out = await c.cmd(f"h SELECT INBOX (QRESYNC ({uidvalidity} {modseq} 1:3))")
        assert "* VANISHED (EARLIER) 2\r\n" in out
        assert "* 1 FETCH (UID 1 FLAGS (\\Seen" in out
        b = w.client()
        await b.login()
        await b.cmd("x SELECT INBOX")
        await b.cmd("y STORE 2 +FLAGS.SILENT (\\Deleted)")
        await b.cmd("z EXPUNGE")
        out = await c.cmd("i NOOP")
        assert out.startswith("* VANISHED 3\r\n")

    run(body)


def test_mailbox_management(run: Callable[[Body], None]) -> None:
    async def body(w: World) -> None:
        c = w.client()
        await c.login()
        assert (await c.cmd("a CREATE Work/Projects/")).startswith("a OK")
        assert (await c.cmd("b CREATE inbox")).startswith("b NO [ALREADYEXISTS]")
        assert (await c.cmd("c CREATE Work")).startswith("c NO [ALREADYEXISTS]")
        assert (await c.cmd('d CREATE "../etc"')).startswith("d NO [CANNOT]")
        assert (await c.cmd("e CREATE Stuff (USE (\\Flagged))")).startswith("e NO [USEATTR]")
        assert (await c.cmd("f CREATE Bills (USE (\\Archive))")).startswith("f OK")
        out = await c.cmd('g LIST "" "Work*"')
        assert '* LIST (\\HasChildren) "/" Work\r\n' in out
        assert '* LIST (\\HasNoChildren) "/" Work/Projects\r\n' in out
        out = await c.cmd('h LIST (SPECIAL-USE) "" "*"')
        assert "Bills" in out
        assert "Work" not in out
        assert "INBOX" not in out
        assert (await c.cmd("i RENAME Work Work/Sub")).startswith("i NO [CANNOT]")
        assert (await c.cmd("j RENAME Nope X")).startswith("j NO [NONEXISTENT]")
        assert (await c.cmd("k RENAME Work Job")).startswith("k OK")
        out = await c.cmd('l LIST "" "Job/%"')
        assert '"/" Job/Projects' in out
        assert (await c.cmd("m DELETE INBOX")).startswith("m NO [CANNOT]")
        assert (await c.cmd("n DELETE Job/Projects")).startswith("n OK")
        assert (await c.cmd("o DELETE Job/Projects")).startswith("o NO [NONEXISTENT]")
        await c.cmd("p SUBSCRIBE Job")
        await c.cmd("q SUBSCRIBE Ghost")
        out = await c.cmd('r LIST (SUBSCRIBED) "" "*"')
        assert '* LIST (\\HasNoChildren \\Subscribed) "/" Job' in out
        assert '* LIST (\\NonExistent \\Subscribed) "/" Ghost' in out
        out = await c.cmd('s LSUB "" "*"')
        assert '* LSUB () "/" Job' in out
        assert '* LSUB (\\Noselect) "/" Ghost' in out
        out = await c.cmd('t LIST "" ""')
        assert out == '* LIST (\\Noselect) "/" ""\r\nt OK LIST completed\r\n'
        assert (await c.cmd('t2 LIST "" "" ')).startswith("t2 BAD")
        out = await c.cmd('u LIST "" "INBOX" RETURN (STATUS (MESSAGES UNSEEN))')
        assert "* STATUS INBOX (MESSAGES 0 UNSEEN 0)" in out
        out = await c.cmd("v STATUS Nope (MESSAGES)")
        assert out.startswith("v NO [NONEXISTENT]")

    run(body)


def test_mailbox_limit(run: Callable[[Body], None]) -> None:
    async def body(w: World) -> None:
        c = w.client(max_mailboxes_per_account=12)
        await c.login()
        have = (await c.cmd('a LIST "" "*"')).count("* LIST")
        assert have < 10
        for i in range(12 - have - 2):
            assert (await c.cmd(f"b{i} CREATE box{i}")).startswith(f"b{i} OK")
        # Two left: a/b/c needs three (RFC 9051 section 6.3.4 creates the parents); the
        # parents made before the limit stopped it stay, as after any failed CREATE.
        out = await c.cmd("c CREATE a/b/c")
        assert out.startswith("c NO [LIMIT] Too many mailboxes"), out
        assert '"/" a/b\r\n' in await c.cmd('c2 LIST "" "a/*"')
        assert (await c.cmd("d CREATE last")).startswith("d NO [LIMIT]")
        assert (await c.cmd("e RENAME INBOX Old")).startswith("e NO [LIMIT]")
        assert (await c.cmd("f RENAME box0 moved")).startswith("f OK")
        assert (await c.cmd("g DELETE moved")).startswith("g OK")
        assert (await c.cmd("h CREATE last")).startswith("h OK")
        assert (await c.cmd('i LIST "" "*"')).count("* LIST") == 12
        # Subscriptions may name no mailbox, so they are bounded on their own.
        for i in range(12):
            assert (await c.cmd(f"j{i} SUBSCRIBE ghost{i}")).startswith(f"j{i} OK")
        assert (await c.cmd("k SUBSCRIBE ghost99")).startswith("k NO [LIMIT]")
        assert (await c.cmd("l SUBSCRIBE ghost3")).startswith("l OK")
        assert (await c.cmd("m UNSUBSCRIBE ghost3")).startswith("m OK")
        assert (await c.cmd("n SUBSCRIBE ghost99")).startswith("n OK")

    run(body)


def test_utf8_and_modified_utf7_names(run: Callable[[Body], None]) -> None:
    async def body(w: World) -> None:
        c = w.client()
        await c.login()
        assert (await c.cmd("a CREATE Entw&APw-rfe")).startswith("a OK")
        out = await c.cmd('b LIST "" "Entw*"')
        assert '"/" Entw&APw-rfe' in out
        assert "ENABLED UTF8=ACCEPT" in await c.cmd("c ENABLE UTF8=ACCEPT")
        out = await c.cmd('d LIST "" "Entw*"')
        assert '"/" "Entw\u00fcrfe"' in out

    run(body)


def test_append_quota_and_exists(run: Callable[[Body], None]) -> None:
    async def body(w: World) -> None:
        c = w.client(max_message_size=1000)
        await c.login()
        await c.cmd("a SELECT INBOX")
        msg = b"Subject: hi\r\n\r\nhello\r\n"
        out = await c.send(
            b'b APPEND INBOX (\\Seen $Work) "05-Jan-2024 10:00:00 +0100" {%d+}\r\n' % len(msg)
            + msg + b"\r\n"
        )
        text = out.decode()
        assert "* 1 EXISTS\r\n" in text
        assert text.endswith("b OK [APPENDUID " + text.split("APPENDUID ")[1].split()[0]
                             + " 1] APPEND completed\r\n")
        out2 = await c.cmd("c FETCH 1 (FLAGS INTERNALDATE)")
        assert '" 5-Jan-2024 09:00:00 +0000"' in out2
        assert "\\Seen $Work" in out2
        assert (await c.cmd("d APPEND Nope {5+}\r\nhello")).startswith("d NO [TRYCREATE]")
        assert (await c.cmd("e APPEND INBOX {5000}")).startswith("e NO [TOOBIG]")
        await w.store.set_quota(w.account_id, 30)
        out3 = await c.cmd(b"f APPEND INBOX {%d+}\r\n" % len(msg) + msg)
        assert out3.startswith("f NO [OVERQUOTA]")
        assert (await c.cmd("g COPY 1 Archive")).startswith("g NO [OVERQUOTA]")
        out4 = await c.cmd("h GETQUOTAROOT INBOX")
        assert '* QUOTAROOT INBOX ""\r\n* QUOTA "" (STORAGE 1 0)\r\n' in out4
        assert (await c.cmd('i SETQUOTA "" (STORAGE 10)')).startswith("i NO")

    run(body)


def test_literal_plus_too_big_says_bye(run: Callable[[Body], None]) -> None:
    # RFC 7888 section 4: a LITERAL+ over the limit is refused and the connection closed,
    # rather than reading its octets; a synchronising one is refused and the session goes on.
    async def body(w: World) -> None:
        c = w.client(max_message_size=1000)
        await c.login()
        assert await c.cmd("a APPEND INBOX {5000}") == (
            "a NO [TOOBIG] Literal larger than 1000 octets\r\n"
        )
        assert c.session.state is State.AUTHENTICATED
        out = await c.send(b"b APPEND INBOX {4000000000+}\r\n" + b"x" * 100)
        assert out == (b"b NO [TOOBIG] Literal larger than 1000 octets\r\n"
                       b"* BYE Literal too big, closing the connection\r\n")
        assert c.session.state is State.LOGOUT
        assert c.session.action is Action.CLOSE
        assert await c.send(b"x" * 100 + b"\r\nc NOOP\r\n") == b""

    run(body)


def test_search_sort_thread_and_searchres(run: Callable[[Body], None]) -> None:
    async def body(w: World) -> None:
        await w.deliver("banana", body="yellow fruit\r\n")
        await w.deliver("apple", body="red fruit\r\n")
        await w.deliver("Re: banana", body="I like it\r\n")
        c = w.client()
        await c.login()
        await c.cmd("a SELECT INBOX")
        assert "* SEARCH 1 3\r\n" in await c.cmd("b SEARCH SUBJECT banana")
        assert "* SEARCH 2\r\n" in await c.cmd("c SEARCH BODY red")
        out = await c.cmd("d SEARCH RETURN (MIN MAX COUNT) TEXT fruit")
        assert '* ESEARCH (TAG "d") MIN 1 MAX 2 COUNT 2\r\n' in out
        assert "* SORT 2 1 3\r\n" in await c.cmd("e SORT (SUBJECT) UTF-8 ALL")
        assert "* THREAD (1 3)(2)\r\n" in await c.cmd("f THREAD ORDEREDSUBJECT UTF-8 ALL")
        await c.cmd("g SEARCH RETURN (SAVE) SUBJECT apple")
        assert "* 2 FETCH (UID 2)" in await c.cmd("h FETCH $ (UID)")
        assert "* ESEARCH" in await c.cmd("i UID SEARCH RETURN () ALL")

    run(body)


def test_idle_wakes_on_delivery(run: Callable[[Body], None]) -> None:
    async def body(w: World) -> None:
        c = w.client()
        await c.login()
        await c.cmd("a SELECT INBOX")
        assert await c.cmd("b IDLE") == "+ idling\r\n"
        assert c.session.action is Action.IDLE
        assert c.session.watch is not None
        waiter = asyncio.ensure_future(c.session.watch.wait(5))
        await asyncio.sleep(0)
        await w.deliver("pushed")
        assert await asyncio.wait_for(waiter, 1)
        out = await c.session.idle_wakeup()
        assert out == b"* 1 EXISTS\r\n* 1 RECENT\r\n"
        assert await c.cmd("DONE") == "b OK IDLE terminated\r\n"

    run(body)


def test_wrong_state_and_logout(run: Callable[[Body], None]) -> None:
    async def body(w: World) -> None:
        c = w.client()
        assert (await c.cmd("a FETCH 1 FLAGS")).startswith("a BAD")
        await c.login()
        assert (await c.cmd("b FETCH 1 FLAGS")).startswith("b BAD [CLIENTBUG]")
        assert (await c.cmd("c LOGIN x y")).startswith("c BAD [CLIENTBUG]")
        assert '* ID ("name" "Mailstead"' in await c.cmd('d ID ("name" "test")')
        assert "ENABLED IMAP4rev2" in await c.cmd("e ENABLE IMAP4rev2")
        out = await c.cmd("f SELECT INBOX")
        assert "RECENT" not in out
        assert '* LIST () "/" INBOX' in out
        assert await c.cmd("g LOGOUT") == "* BYE Logging out\r\ng OK LOGOUT completed\r\n"
        assert c.session.state is State.LOGOUT

    run(body)


def test_smtp_rcpt_refused_when_mailbox_full(run: Callable[[Body], None]) -> None:
    """The quota holds at SMTP delivery too: RCPT gets 452 4.2.2 (RFC 3463)."""

    async def body(w: World) -> None:
        from mailstead.core.address import parse_address
        from mailstead.delivery.service import DeliveryService, SessionInfo, Transaction

        service = DeliveryService(w.store, "mail.example.test")
        info = SessionInfo(client_ip="192.0.2.9", submission=False)
        rcpt = parse_address(USER)
        reply = await service.check_recipient(info, Transaction(sender=None), rcpt)
        assert reply.code == 250
        await w.deliver("fill")
        await w.store.set_quota(w.account_id, 10)
        reply = await service.check_recipient(info, Transaction(sender=None), rcpt)
        assert (reply.code, reply.enhanced, reply.text) == (452, "4.2.2", "Mailbox full")

    run(body)


def test_fetch_reads_only_the_named_messages_and_streams(
    run: Callable[[Body], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """FETCH asks the store for the UIDs it names (never the whole mailbox), without the
    JSON columns it does not render, and hands its output on in batches."""
    from mailstead.imap import messages, session

    monkeypatch.setattr(messages, "FETCH_BATCH", 2)
    monkeypatch.setattr(session, "FLUSH_AT", 1)

    async def body(w: World) -> None:
        for i in range(7):
            await w.deliver(f"m{i}")
        c = w.client()
        await c.login()
        await c.cmd("a SELECT INBOX")
        reads: list[tuple[list[int] | None, bool, bool]] = []
        real = w.store.get_messages

        async def spy(mailbox_id: int, uids: Any, *, envelope: bool = True,
                      bodystructure: bool = True) -> Any:
            reads.append((None if uids is None else list(uids), envelope, bodystructure))
            return await real(mailbox_id, uids, envelope=envelope, bodystructure=bodystructure)

        async def whole_mailbox(mailbox_id: int) -> Any:
            raise AssertionError("FETCH/SEARCH read the whole mailbox")

        monkeypatch.setattr(w.store, "get_messages", spy)
        monkeypatch.setattr(w.store, "list_messages_in", whole_mailbox)
        out = await c.cmd("b FETCH 5 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
        assert out == ("* 5 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {15}\r\nSubject: m4\r\n\r\n)"
                       "\r\nb OK FETCH completed\r\n")
        assert reads == [([5], False, True)]
        reads.clear()
        chunks: list[bytes] = []

        async def writer(data: bytes) -> None:
            chunks.append(data)

        c.session.writer = writer
        out = await c.cmd("c FETCH 2:6 (UID FLAGS ENVELOPE)")
        assert reads == [([2, 3], True, False), ([4, 5], True, False), ([6], True, False)]
        streamed = b"".join(chunks).decode() + out
        assert [line.split(" (")[0] for line in streamed.splitlines()] == [
            "* 2 FETCH", "* 3 FETCH", "* 4 FETCH", "* 5 FETCH", "* 6 FETCH", "c OK FETCH completed"
        ]
        assert len(chunks) == 3
        assert out == "c OK FETCH completed\r\n"
        assert '"m3"' in streamed
        assert "UID 4 FLAGS (\\Recent)" in streamed
        c.session.writer = None
        reads.clear()
        out = await c.cmd("d UID SEARCH UNSEEN SMALLER 100000")
        assert out.startswith("* SEARCH 1 2 3 4 5 6 7\r\n")
        assert reads == [(None, False, False)]  # no key reads the envelope
        reads.clear()
        out = await c.cmd("e SEARCH SUBJECT m6")
        assert out.startswith("* SEARCH 7\r\n")
        assert reads == [(None, True, False)]
        reads.clear()
        out = await c.cmd("f SORT (REVERSE SUBJECT) UTF-8 2:3")
        assert out.startswith("* SORT 3 2\r\n")
        assert reads == [(None, False, False), ([2, 3], True, False)]

    run(body)


def test_fetch_reads_bodies_in_groups(
    run: Callable[[Body], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bodies are read a group at a time (a count and a byte budget), each group in one store
    read, in the order FETCH renders them; a body the group did not hold is read alone."""
    from mailstead.imap import messages

    monkeypatch.setattr(messages, "BODY_READ_COUNT", 3)
    monkeypatch.setattr(messages, "BODY_READ_BYTES", 400)

    async def body(w: World) -> None:
        for i in range(1, 9):
            await w.deliver(f"m{i}", body="x" * (300 if i == 5 else 10) + "\r\n")
        c = w.client()
        await c.login()
        await c.cmd("a SELECT INBOX")
        groups: list[int] = []
        singles: list[str] = []
        real_many, real_one = w.store.read_blobs, w.store.read_blob

        async def many(blobs: Any) -> Any:
            groups.append(len(blobs))
            return await real_many(blobs)

        async def one(blob: str) -> bytes:
            singles.append(blob)
            return await real_one(blob)

        monkeypatch.setattr(w.store, "read_blobs", many)
        monkeypatch.setattr(w.store, "read_blob", one)
        out = await c.cmd("b FETCH 1:8 BODY.PEEK[TEXT]")
        assert out.count(" FETCH (") == 8
        for i in range(1, 9):
            assert f"* {i} FETCH (BODY[TEXT] " in out
        assert out.count("x" * 300) == 1
        # 3 by count; then message 4 and the big 5th pass the byte budget apart; then 3.
        assert groups == [3, 1, 1, 3]
        assert singles == []
        groups.clear()
        # Only the messages rendered are read: CHANGEDSINCE leaves out those not changed.
        await c.cmd("c STORE 2,7 +FLAGS (\\Flagged)")
        out = await c.cmd("d FETCH 1:8 (BODY.PEEK[TEXT]) (CHANGEDSINCE 9)")
        assert out.count(" FETCH (") == 2
        assert groups == [2]
        assert singles == []

    run(body)
