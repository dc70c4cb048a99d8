"""NOTIFY arguments (RFC 5465 section 8), the RFC's examples among them; hostile input
never raises anything but ParseError."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstead.proto.imap.ast import FetchAtt, NotifyArgs, NotifyGroup
from mailstead.proto.imap.framing import NEED_DATA, CommandFrame, CommandFramer
from mailstead.proto.imap.parser import ParseError, parse_command


def parse(wire: bytes) -> object:
    framer = CommandFramer()
    framer.receive_data(wire + b"\r\n")
    while (event := framer.next_event()) is not NEED_DATA:
        if isinstance(event, CommandFrame):
            return parse_command(event).args
    raise AssertionError(wire)


def test_rfc5465_examples() -> None:
    # RFC 5465 section 3.1 (event names are case-insensitive).
    got = parse(b"a NOTIFY SET STATUS (selected (MessageNew (uid body.peek[header.fields "
                b"(from to subject)]) MessageExpunge)) (subtree Lists (MessageNew "
                b"MessageExpunge messageNew))")
    assert isinstance(got, NotifyArgs)
    assert got.status
    selected, lists = got.groups or ()
    assert selected.filter == "SELECTED"
    assert selected.events == ("MessageNew", "MessageExpunge")
    assert selected.fetch is not None
    assert selected.fetch[0] == FetchAtt("UID")
    assert lists == NotifyGroup("SUBTREE", (("Lists", b"Lists"),),
                                ("MessageNew", "MessageExpunge"))
    assert parse(b"a NOTIFY NONE") == NotifyArgs(None)
    got = parse(b'a NOTIFY SET (mailboxes (INBOX "Sent Items") (MailboxName)) '
                b"(INBOXES NONE) (personal (SubscriptionChange X-Other))")
    assert isinstance(got, NotifyArgs)
    assert got.groups == (
        NotifyGroup("MAILBOXES", (("INBOX", b"INBOX"), ("Sent Items", b"Sent Items")),
                    ("MailboxName",)),
        NotifyGroup("INBOXES", (), ()),
        NotifyGroup("PERSONAL", (), ("SubscriptionChange", "X-OTHER")),
    )


@pytest.mark.parametrize("wire", [
    b"a NOTIFY", b"a NOTIFY SET", b"a NOTIFY SET STATUS", b"a NOTIFY FOO",
    b"a NOTIFY SET ()", b"a NOTIFY SET (SELECTED)", b"a NOTIFY SET (SELECTED ())",
    b"a NOTIFY SET (BOGUS NONE)", b"a NOTIFY SET (SUBTREE NONE)",
    b"a NOTIFY SET (SELECTED (MessageNew (NOPE)))", b"a NOTIFY SET (SELECTED NONE",
    b"a NOTIFY SET STATUS STATUS (SELECTED NONE)", b"a NOTIFY NONE (SELECTED NONE)",
    b"a NOTIFY SET (MAILBOXES () NONE)",
    b"a NOTIFY SET " + b"(SELECTED NONE) " * 70 + b"(SELECTED NONE)",
])
def test_refused(wire: bytes) -> None:
    with pytest.raises(ParseError):
        parse(wire)


@given(st.text(alphabet='()" SELECTDINBOXPERSONALMessageNewExpunge\\[].', max_size=80))
def test_hostile_only_parse_error(tail: str) -> None:
    with contextlib.suppress(ParseError):
        parse(b"a NOTIFY SET " + tail.encode())
