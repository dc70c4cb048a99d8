"""Wire encoding: strings, literals, lists, flags, mailbox names, status lines, dates, sets."""

from __future__ import annotations

import pytest

from mailstead.proto.imap import response as r


@pytest.mark.parametrize(
    ("value", "utf8", "expected"),
    [
        ("hello world", False, b'"hello world"'),
        ("", False, b'""'),
        ('say "hi" \\ bye', False, b'"say \\"hi\\" \\\\ bye"'),
        ("line\r\nbreak", False, b"{11}\r\nline\r\nbreak"),
        ("bare\nlf", False, b"{7}\r\nbare\nlf"),
        ("bare\rcr", False, b"{7}\r\nbare\rcr"),
        ("caf\u00e9", False, b"{5}\r\ncaf\xc3\xa9"),
        ("caf\u00e9", True, b'"caf\xc3\xa9"'),
        ("caf\u00e9\r\n", True, b"{7}\r\ncaf\xc3\xa9\r\n"),
    ],
)
def test_string_chooses_quoted_or_literal(value: str, utf8: bool, expected: bytes) -> None:
    assert r.string(value, utf8=utf8) == expected


def test_invalid_utf8_is_a_literal_even_for_utf8_sessions() -> None:
    raw = b"\xff\xfeab".decode("utf-8", "surrogateescape")
    assert r.string(raw, utf8=True) == b"{4}\r\n\xff\xfeab"


def test_long_strings_become_literals() -> None:
    assert r.string("a" * r.MAX_QUOTED) == b'"' + b"a" * r.MAX_QUOTED + b'"'
    assert r.string("a" * (r.MAX_QUOTED + 1)).startswith(b"{1025}\r\n")


def test_nul_never_reaches_the_wire_in_a_plain_literal() -> None:
    assert r.string("a\x00b") == b"{3}\r\na\x80b"
    assert r.literal(b"a\x00b") == b"{3}\r\na\x80b"
    assert r.literal(b"a\x00b", binary=True) == b"~{3}\r\na\x00b"
    assert r.literal(b"ab", binary=True) == b"{2}\r\nab"


def test_nstring_and_astring() -> None:
    assert r.nstring(None) == b"NIL"
    assert r.nstring("x") == b'"x"'
    assert r.astring("INBOX.Sent") == b"INBOX.Sent"
    assert r.astring("NIL") == b'"NIL"'
    assert r.astring("nil") == b'"nil"'
    assert r.astring("two words") == b'"two words"'
    assert r.astring("a]b") == b"a]b"  # resp-specials are ASTRING-CHAR
    assert r.astring("a{b") == b'"a{b"'
    assert r.astring("") == b'""'


def test_lists_flags_and_numbers() -> None:
    assert r.plist([]) == b"()"
    assert r.plist([b"A", b'"b"']) == b'(A "b")'
    assert r.flags(["\\Seen", "$Label1", "\\Answered"]) == b"(\\Seen $Label1 \\Answered)"
    # a damaged row can never break the framing
    assert r.flags(["\\Seen", "bad flag", "x\r\ny", "(", "\u00e9"]) == b"(\\Seen)"
    assert r.number(0) == b"0"
    with pytest.raises(ValueError, match="unsigned"):
        r.number(-1)


def test_mailbox_names() -> None:
    assert r.mailbox("inbox", utf8=False, encoder=str.upper) == b"INBOX"
    assert r.mailbox("Sent", utf8=False, encoder=lambda s: s) == b"Sent"
    assert r.mailbox("Entw\u00fcrfe", utf8=True) == b'"Entw\xc3\xbcrfe"'
    assert r.mailbox("Entw\u00fcrfe", utf8=False, encoder=lambda s: "Entw&APw-rfe") == (
        b"Entw&APw-rfe"
    )
    assert r.mailbox("My Folder", utf8=False, encoder=lambda s: s) == b'"My Folder"'


def test_status_responses() -> None:
    assert r.tagged("a1", "OK", "FETCH completed") == b"a1 OK FETCH completed\r\n"
    assert r.tagged("a2", "NO", "gone", r.code("UNKNOWN-CTE")) == b"a2 NO [UNKNOWN-CTE] gone\r\n"
    assert r.untagged_status("OK", "UIDs valid", r.code("UIDVALIDITY", 3857529045)) == (
        b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"
    )
    assert r.code("COPYUID", 38505, "304,319:320", "3956:3958") == (
        b"[COPYUID 38505 304,319:320 3956:3958]"
    )
    assert r.untagged(b"5 EXISTS") == b"* 5 EXISTS\r\n"
    assert r.continuation() == b"+ \r\n"
    assert r.continuation("Ready for literal") == b"+ Ready for literal\r\n"


def test_status_text_cannot_inject_lines_or_codes() -> None:
    assert r.tagged("a", "BAD", "x\r\na2 OK fake") == b"a BAD x a2 OK fake\r\n"
    assert r.tagged("a", "NO", "[ALERT] fake") == b"a NO  [ALERT] fake\r\n"
    assert r.tagged("a", "NO", "") == b"a NO .\r\n"
    assert r.continuation("a\r\nb") == b"+ a b\r\n"
    with pytest.raises(ValueError, match="status"):
        r.tagged("a", "MAYBE", "x")
    with pytest.raises(ValueError, match="CR, LF"):
        r.code("BADCHARSET", b"x]y")


def test_internal_date_format() -> None:
    # 1996-07-17 09:44:25 UTC, the RFC 3501 section 7.4.2 example
    assert r.format_internal_date(837596665) == "17-Jul-1996 09:44:25 +0000"
    assert r.internal_date(837596665, -420) == b'"17-Jul-1996 02:44:25 -0700"'
    assert r.format_internal_date(837596665, 330) == "17-Jul-1996 15:14:25 +0530"
    # date-day-fixed: a single-digit day is space-padded
    assert r.format_internal_date(1_000_000_000) == " 9-Sep-2001 01:46:40 +0000"


@pytest.mark.parametrize(
    ("numbers", "expected"),
    [
        ([], ""),
        ([7], "7"),
        ([1, 2, 3, 4, 5, 7, 9, 10, 11, 12], "1:5,7,9:12"),
        ([12, 3, 2, 1, 3, 7], "1:3,7,12"),
        ([4294967294, 4294967295], "4294967294:4294967295"),
    ],
)
def test_sequence_set_compression(numbers: list[int], expected: str) -> None:
    assert r.sequence_set(numbers) == expected


def test_sequence_set_keeps_order_when_asked() -> None:
    assert r.sequence_set([5, 6, 7, 1, 2], sort=False) == "5:7,1:2"
