"""MULTIAPPEND (RFC 3502), REPLACE (RFC 8508) and CATENATE (RFC 4469): framing several
spooled literals in one command, parsing, and the IMAP URLs CATENATE takes (RFC 5092)."""

from __future__ import annotations

from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st
from test_imap_framing_spool import pull
from test_imap_parser import args, bad

from mailstead.proto.imap.ast import AppendArgs, CatenatePart, ReplaceArgs, Section
from mailstead.proto.imap.framing import CommandFrame, CommandFramer, Literal, LiteralTooBig
from mailstead.proto.imap.imapurl import MessageUrl, parse_section, parse_url


def test_multiappend_parses_every_message() -> None:
    parsed = args(b'a APPEND INBOX (\\Seen) {1+}\r\nA "01-Feb-2020 10:00:00 +0000" {2+}\r\nBB'
                  b" ~{1+}\r\nC")
    assert isinstance(parsed, AppendArgs)
    assert [m.message for m in parsed.messages] == [b"A", b"BB", b"C"]
    assert parsed.messages[0].flags == ("\\Seen",)
    assert parsed.messages[1].internal_date == datetime.fromisoformat("2020-02-01T10:00:00+00:00")
    assert parsed.messages[2].binary
    assert parsed.message == b"A"  # the first message in the fields of old
    assert bad(b"a APPEND INBOX {1+}\r\nA ").status == "BAD"  # a dangling space
    assert bad(b"a APPEND INBOX {1+}\r\nA (\\Seen)").status == "BAD"  # options, no message


def test_catenate_and_replace_parse() -> None:
    parsed = args(b'a APPEND Drafts CATENATE (TEXT {2+}\r\nhi URL "/INBOX;UIDVALIDITY=1/;UID=2"'
                  b" URL ;UID=3)")
    assert isinstance(parsed, AppendArgs)
    assert parsed.catenate == (CatenatePart("TEXT", b"hi"),
                               CatenatePart("URL", b"/INBOX;UIDVALIDITY=1/;UID=2"),
                               CatenatePart("URL", b";UID=3"))
    assert parsed.size == 2 + 27 + 6
    assert bad(b"a APPEND Drafts CATENATE (BODY {1+}\r\nx)").status == "BAD"
    assert bad(b'a APPEND Drafts CATENATE (TEXT "quoted")').status == "BAD"
    assert bad(b"a APPEND Drafts CATENATE (" + b" ".join([b"URL x"] * 65) + b")").status == "BAD"
    replace = args(b"a UID REPLACE 42 Drafts (\\Draft) {1+}\r\nx")
    assert isinstance(replace, ReplaceArgs)
    assert replace.number == 42
    assert replace.append.flags == ("\\Draft",)
    assert replace.append.message == b"x"
    assert bad(b"a REPLACE 0 Drafts {1+}\r\nx").status == "BAD"
    assert bad(b"a REPLACE 1 Drafts {1+}\r\nx {1+}\r\ny").status == "BAD"  # one message only


def test_several_spooled_literals_share_a_budget_of_their_own() -> None:
    framer = CommandFramer(max_line=100, max_literal=30, spool_at=10)
    framer.max_spooled = 60
    wire = b"a APPEND INBOX {25+}\r\n" + b"x" * 25 + b" {25+}\r\n" + b"y" * 25 + b"\r\n"
    framer.receive_data(wire)
    frames = [e for e in pull(framer) if isinstance(e, CommandFrame)]
    assert frames == [CommandFrame(
        (b"a APPEND INBOX {25+}", b" {25+}", b""),
        (Literal(b"", spooled=True, size=25), Literal(b"", spooled=True, size=25)),
    )]
    # Past the command's spool budget: refused like any literal too big.
    framer = CommandFramer(max_line=100, max_literal=30, spool_at=10)
    framer.max_spooled = 40
    framer.receive_data(b"a APPEND INBOX {25}\r\n")
    pull(framer)
    framer.receive_data(b"x" * 25 + b" {25}\r\n")
    assert [e for e in pull(framer) if isinstance(e, LiteralTooBig)] == [LiteralTooBig("a", 25)]


def test_without_a_spool_budget_one_literal_is_the_limit() -> None:
    framer = CommandFramer(max_line=100, max_literal=30, spool_at=10)
    framer.receive_data(b"a APPEND INBOX {25}\r\n")
    pull(framer)
    framer.receive_data(b"x" * 25 + b" {25}\r\n")
    assert [e for e in pull(framer) if isinstance(e, LiteralTooBig)] == [LiteralTooBig("a", 25)]


def test_urls() -> None:
    assert parse_url(b"/INBOX;UIDVALIDITY=785799047/;UID=113330/;SECTION=1.5.9") == MessageUrl(
        "INBOX", 785799047, 113330, Section((1, 5, 9)))
    assert parse_url(b"/a%20b/c;UIDVALIDITY=1/;UID=2/;SECTION=HEADER") == MessageUrl(
        "a b/c", 1, 2, Section((), "HEADER"))
    assert parse_url(b";uid=20/;section=1.MIME") == MessageUrl(None, None, 20,
                                                              Section((1,), "MIME"))
    for refused in (b"imap://u@h.test/INBOX;UIDVALIDITY=1/;UID=1", b"/INBOX/;UID=2",
                    b";UID=0", b";UID=99999999999", b"/INBOX;UIDVALIDITY=1/;UID=1/;PARTIAL=0.9",
                    b";UID=2/;SECTION=MIME", b";UID=2/;SECTION=1HEADER",
                    b"/%FF;UIDVALIDITY=1/;UID=1",
                    b"", b";UID=1/;SECTION=" + b"1." * 100 + b"1"):
        assert parse_url(refused) is None, refused
    assert parse_section(b"2.TEXT") == Section((2,), "TEXT")
    assert parse_section(b"HEADER.FIELDS") is None


@given(st.binary(max_size=300))
def test_hostile_urls(url: bytes) -> None:
    ref = parse_url(url)
    if ref is not None:
        assert 0 < ref.uid <= 0xFFFFFFFF
        assert ref.mailbox is None or ref.uidvalidity is not None


def test_multiappend_is_bounded() -> None:
    one = b" {1+}\r\nx"
    assert len(args(b"a APPEND INBOX" + one * 1000).messages) == 1000  # type: ignore[attr-defined]
    refused = bad(b"a APPEND INBOX" + one * 1001)
    assert (refused.status, refused.code) == ("NO", "LIMIT")
