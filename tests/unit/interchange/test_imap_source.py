"""The pure pieces of the IMAP import: LIST parsing, folder mapping, FETCH parsing."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from mailstead.interchange.folders import (
    SLASH_STANDIN,
    ListingError,
    SourceFolder,
    parse_list,
    plan_folders,
)
from mailstead.interchange.imap import (
    FetchParseError,
    batches,
    parse_fetch,
    parse_internal_date,
    parse_sizes,
    uid_set,
)


def _folder(line: bytes) -> SourceFolder:
    return parse_list(line)


def _targets(lines: list[bytes], **kw: list[str]) -> dict[str, tuple[str | None, str | None]]:
    plans = plan_folders([_folder(line) for line in lines], **kw)
    return {p.source.name: (p.target, p.special_use) for p in plans}


def test_list_lines_quoted_nil_and_mutf7() -> None:
    f = parse_list(b'(\\HasNoChildren \\Sent) "/" "Sent Messages"')
    assert f.name == "Sent Messages"
    assert f.delimiter == "/"
    assert "\\sent" in f.attributes
    f = parse_list(b'(\\Noselect) NIL Archive')
    assert f.delimiter is None
    assert not f.selectable
    f = parse_list(b'() "." "INBOX.Entw&APw-rfe"')
    assert f.name == "INBOX.Entwürfe"
    f = parse_list(b'() "/" {5}', b"a\"b/c")
    assert f.name == 'a"b/c'
    f = parse_list(b'() "/" "q\\"uote"')
    assert f.name == 'q"uote'


def test_hostile_list_lines_are_refused() -> None:
    for line in (b"", b"garbage", b'() "//" "x"', b'() "/" "unterminated', b'() "/"',
                 b'(\\x) "/" "a" trailing', b'() "/" "bad\\escape"'):
        try:
            parse_list(line)
        except ListingError:
            continue
        raise AssertionError(line)


@given(st.binary(max_size=200), st.one_of(st.none(), st.binary(max_size=50)))
def test_list_parser_never_crashes(head: bytes, literal: bytes | None) -> None:
    try:
        folder = parse_list(head, literal)
    except ListingError:
        return
    assert folder.name


def test_icloud_names_map_onto_ours() -> None:
    t = _targets([b'() "/" "INBOX"', b'() "/" "Sent Messages"', b'() "/" "Deleted Messages"',
                  b'() "/" "Junk"', b'() "/" "Archive"', b'() "/" "Drafts"',
                  b'() "/" "Projects/2024"'])
    assert t["Sent Messages"] == ("Sent", "\\Sent")
    assert t["Deleted Messages"] == ("Trash", "\\Trash")
    assert t["Junk"] == ("Junk", "\\Junk")
    assert t["Projects/2024"] == ("Projects/2024", None)
    assert t["INBOX"] == ("INBOX", None)


def test_outlook_and_localised_names() -> None:
    t = _targets([b'() "/" "Sent Items"', b'() "/" "Deleted Items"', b'() "/" "Junk Email"'])
    assert t["Sent Items"][0] == "Sent"
    assert t["Deleted Items"][0] == "Trash"
    assert t["Junk Email"][0] == "Junk"
    t = _targets([b'() "." "INBOX.Gesendet"', b'() "." "INBOX.Papierkorb"',
                  b'() "." "INBOX.Entw&APw-rfe"'])
    assert t["INBOX.Gesendet"][0] == "Sent"
    assert t["INBOX.Papierkorb"][0] == "Trash"
    assert t["INBOX.Entwürfe"][0] == "Drafts"
    t = _targets([b'() "/" "&AMk-l&AOk-ments envoy&AOk-s"', b'() "/" "Enviados"'])
    assert t["Éléments envoyés"][0] == "Sent"
    assert t["Enviados"] == ("Enviados", None)  # Sent is taken: one source folder per role


def test_gmail_all_mail_and_label_views_are_skipped() -> None:
    plans = plan_folders([_folder(x) for x in (
        b'(\\HasChildren \\Noselect) "/" "[Gmail]"',
        b'(\\All \\HasNoChildren) "/" "[Gmail]/All Mail"',
        b'(\\Sent) "/" "[Gmail]/Sent Mail"',
        b'(\\Flagged) "/" "[Gmail]/Starred"',
        b'(\\Important) "/" "[Gmail]/Important"',
        b'() "/" "[Gmail]/Chats"',
        b'() "/" "Sent"',  # a label called Sent: the \\Sent attribute wins the role
    )])
    by = {p.source.name: p for p in plans}
    assert by["[Gmail]/All Mail"].target is None
    assert "every message" in by["[Gmail]/All Mail"].reason
    assert by["[Gmail]/Starred"].target is None
    assert by["[Gmail]/Important"].target is None
    assert by["[Gmail]/Sent Mail"].target == "Sent"
    assert by["[Gmail]/Chats"].target == "Chats"
    assert by["Sent"].target == "Sent (2)"


def test_delimiter_translated_and_slash_replaced() -> None:
    t = _targets([b'() "." "Work.a/b.c"', b'() "." "INBOX.x"'])
    assert t["Work.a/b.c"][0] == f"Work/a{SLASH_STANDIN}b/c"
    assert t["INBOX.x"][0] == "INBOX/x"


def test_folder_and_exclude_patterns() -> None:
    lines = [b'() "/" "INBOX"', b'() "/" "Work"', b'() "/" "Work/2024"', b'() "/" "Old"']
    t = _targets(lines, include=["Work"])
    assert t["Work"][0] == "Work"
    assert t["Work/2024"][0] == "Work/2024"
    assert t["INBOX"][0] is None
    assert t["Old"][0] is None
    t = _targets(lines, exclude=["O*"])
    assert t["Old"][0] is None
    assert t["INBOX"][0] == "INBOX"


def test_fetch_parsing_body_before_and_after_attributes() -> None:
    data = [
        (b'1 (UID 7 FLAGS (\\Seen $Forwarded \\Recent) INTERNALDATE "17-Jul-1996 02:44:25 -0700"'
         b" BODY[] {5}", b"hello"),
        b")",
        (b"2 (UID 9 BODY[] {3}", b"abc"),
        b' FLAGS () INTERNALDATE " 1-Jan-2020 00:00:00 +0000")',
        b"3 (UID 10 FLAGS (\\Deleted))",  # unsolicited flag update: no body
    ]
    got = parse_fetch(data)
    assert [(m.uid, m.data) for m in got] == [(7, b"hello"), (9, b"abc"), (10, None)]
    assert got[0].flags == ("\\Seen", "$Forwarded")
    assert got[0].internal_date == 837596665.0
    assert got[1].internal_date == 1577836800.0


def test_fetch_parsing_refuses_garbage() -> None:
    try:
        parse_fetch([(b"1 (FLAGS () BODY[] {1}", b"x")])
    except FetchParseError:
        pass
    else:
        raise AssertionError("no UID accepted")
    assert parse_internal_date(b"not a date") is None
    assert parse_fetch([b"* 3 EXPUNGE", None]) == []


@given(st.lists(st.one_of(st.binary(max_size=80),
                          st.tuples(st.binary(max_size=80), st.binary(max_size=20))),
                max_size=8))
def test_fetch_parser_never_crashes(items: list[bytes | tuple[bytes, bytes]]) -> None:
    with contextlib.suppress(FetchParseError):
        parse_fetch(items)


def test_sizes_uid_sets_and_batches() -> None:
    assert parse_sizes([b"1 (UID 3 RFC822.SIZE 120)", b"junk", b"2 (RFC822.SIZE 9 UID 4)"]) == [
        (3, 120), (4, 9)]
    assert uid_set([1, 2, 3, 7, 9, 10]) == "1:3,7,9:10"
    assert uid_set([5]) == "5"
    cut = batches([(1, 60), (2, 60), (3, 200), (4, 10)], max_bytes=100, max_count=10)
    assert cut == [[(1, 60)], [(2, 60)], [(3, 200)], [(4, 10)]]
    assert batches([(i, 1) for i in range(5)], max_bytes=100, max_count=2) == [
        [(0, 1), (1, 1)], [(2, 1), (3, 1)], [(4, 1)]]
