"""Keywords are announced before they are used (RFC 3501 section 7.2.6, RFC 9051 section
7.3.5): a keyword set by STORE or APPEND reaches every session that has the mailbox selected
as an untagged FLAGS and PERMANENTFLAGS listing it, before the FETCH that shows it; SELECT
lists every keyword in use; a keyword named NIL is a flag like any other."""

from __future__ import annotations

import imaplib
import re

from helpers import Harness, RawIMAP, make_message

Account = tuple[str, str]


def session(h: Harness, account: Account) -> RawIMAP:
    client = RawIMAP(h.port("imaps"), tls=h.tls())
    client.login(*account)
    return client


def append(client: RawIMAP, n: int, flags: bytes = b"") -> None:
    head = b"APPEND INBOX" + (b" (" + flags + b")" if flags else b"")
    response = client.command_literal(head, make_message(f"k{n}"))
    assert response.status == b"OK", response


def index(lines: tuple[bytes, ...], pattern: bytes) -> int:
    """The position of the first line matching ``pattern`` (the test fails without one)."""
    for i, line in enumerate(lines):
        if re.search(pattern, line):
            return i
    raise AssertionError(f"no line matches {pattern!r} in {lines!r}")


def announced_before_use(lines: tuple[bytes, ...], keyword: bytes, fetch: bytes) -> None:
    """``* FLAGS`` and ``* OK [PERMANENTFLAGS`` with ``keyword`` (and ``\\*``) come before
    the first line matching ``fetch``."""
    kw = re.escape(keyword)
    flags_at = index(lines, rb"^\* FLAGS \(.*(?<=[( ])" + kw + rb"[ )]")
    perm_at = index(lines, rb"^\* OK \[PERMANENTFLAGS \(.*(?<=[( ])" + kw + rb" .*\\\*\)\]")
    fetch_at = index(lines, fetch)
    assert flags_at < fetch_at, lines
    assert perm_at < fetch_at, lines


def test_store_of_a_new_keyword_is_announced_to_every_session(
        imap_server: Harness, imap_account: Account) -> None:
    with session(imap_server, imap_account) as a, session(imap_server, imap_account) as b:
        for n in range(2):
            append(a, n)
        selected = a.command("SELECT INBOX")
        assert not any(b"$Foo" in line for line in selected.untagged), selected
        b.command("SELECT INBOX")
        # The session that stores it is told first, in the same response.
        response = a.command("STORE 2 +FLAGS ($Foo)")
        announced_before_use(response.untagged, b"$Foo", rb"^\* 2 FETCH \(FLAGS \(.*\$Foo")
        # The other one at its next NOOP, before the FETCH that shows the change.
        response = b.command("NOOP")
        announced_before_use(response.untagged, b"$Foo", rb"^\* 2 FETCH \(.*\$Foo")
        # Once announced, it is not announced again.
        a.command("STORE 1 +FLAGS ($Foo)")
        response = b.command("NOOP")
        assert not response.starting(b"FLAGS"), response
        assert response.starting(b"1 FETCH"), response
        # A new SELECT lists every keyword in use.
        reselected = b.command("SELECT INBOX")
        assert any(re.match(rb"\* FLAGS \(.*\$Foo", line) for line in reselected.untagged)


def test_append_with_a_new_keyword_is_announced(imap_server: Harness,
                                                imap_account: Account) -> None:
    with session(imap_server, imap_account) as a, session(imap_server, imap_account) as b:
        append(a, 0)
        a.command("SELECT INBOX")
        b.command("SELECT INBOX")
        appended = b.command_literal(b"APPEND INBOX ($Appended \\Seen)", make_message("k1"))
        assert appended.status == b"OK", appended
        # Both sessions are told before the new message exists for them, so a FETCH FLAGS
        # right after the EXISTS never shows an unannounced keyword.
        for lines in (appended.untagged, a.command("NOOP").untagged):
            assert index(lines, rb"^\* FLAGS \(.*\$Appended") < index(lines, rb"^\* 2 EXISTS")
            assert index(lines, rb"^\* OK \[PERMANENTFLAGS \(.*\$Appended") < \
                index(lines, rb"^\* 2 EXISTS")
        response = a.command("FETCH 2 FLAGS")
        assert not response.starting(b"FLAGS"), response
        assert b"$Appended" in response.starting(b"2 FETCH")[0], response


def test_fetch_announces_a_keyword_it_has_not_told(imap_server: Harness,
                                                   imap_account: Account) -> None:
    """A FETCH that reads a keyword set by another session, before any NOOP told of it."""
    with session(imap_server, imap_account) as a, session(imap_server, imap_account) as b:
        append(a, 0)
        a.command("SELECT INBOX")
        b.command("SELECT INBOX")
        a.command("STORE 1 +FLAGS.SILENT ($Later)")
        response = b.command("FETCH 1 (FLAGS)")
        announced_before_use(response.untagged, b"$Later", rb"^\* 1 FETCH \(FLAGS \(.*\$Later")


def test_a_keyword_named_nil_round_trips(imap_server: Harness, imap_account: Account) -> None:
    """``NIL`` is an atom in a flag list (RFC 9051 section 9: flag-keyword = atom); imaplib
    stores it and reads it back as a flag, announced first."""
    address, password = imap_account
    with session(imap_server, imap_account) as raw:
        append(raw, 0)
    with imaplib.IMAP4_SSL("127.0.0.1", imap_server.port("imaps"),
                           ssl_context=imap_server.tls(), timeout=15) as client:
        client.login(address, password)
        assert client.select("INBOX")[0] == "OK"
        typ, data = client.store("1", "+FLAGS", "(NIL)")
        assert typ == "OK", data
        assert b"NIL" in client.untagged_responses.get("FLAGS", [b""])[-1]
        typ, data = client.fetch("1", "(FLAGS)")
        assert typ == "OK"
        # The first session to select the mailbox also sees it \\Recent (RFC 3501 2.3.2).
        flags = set(imaplib.ParseFlags(data[-1])) - {b"\\Recent"}  # type: ignore[arg-type]
        assert flags == {b"NIL"}, data
