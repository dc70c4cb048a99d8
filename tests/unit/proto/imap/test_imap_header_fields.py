"""HEADER.FIELDS and HEADER.FIELDS.NOT with repeated, differently cased and folded names
(RFC 9051 section 6.4.5), and each section asked answered under its own name (section
7.5.2), byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstead.core.message import summarize
from mailstead.proto.imap import sections
from mailstead.proto.imap.ast import FetchAtt
from mailstead.proto.imap.fetch import render_fetch
from mailstead.proto.imap.framing import NEED_DATA, CommandFrame, CommandFramer
from mailstead.proto.imap.parser import parse_command
from mailstead.storage.interfaces import MessageInfo


def info(data: bytes) -> MessageInfo:
    s = summarize(data)
    return MessageInfo(1, 1, 7, 1, (), 0.0, len(data), "ab" * 32, s.envelope, s.bodystructure)


HEADER = (
    b"From: Alice <a@x.test>\r\n"
    b"Subject: folded\r\n\tonce\r\n  twice\r\n"
    b"from : second@x.test\r\n"
    b"X-Other: kept\r\n"
    b"FROM:third@x.test\r\n"
    b"\r\n"
)
FROMS = b"From: Alice <a@x.test>\r\nfrom : second@x.test\r\nFROM:third@x.test\r\n\r\n"
OTHERS = b"Subject: folded\r\n\tonce\r\n  twice\r\nX-Other: kept\r\n\r\n"


@pytest.mark.parametrize("names", [["FROM"], ["FROM", "FROM"], ["from", "FROM"], ["From"]])
def test_header_fields_match_once_whatever_the_repeats_and_case(names: list[str]) -> None:
    assert sections.header_fields(HEADER, names, exclude=False) == FROMS
    assert sections.header_fields(HEADER, names, exclude=True) == OTHERS


def test_header_fields_not_with_repeats() -> None:
    assert sections.header_fields(HEADER, ["SUBJECT", "subject", "FROM", "from"],
                                  exclude=True) == b"X-Other: kept\r\n\r\n"
    assert sections.header_fields(HEADER, ["SUBJECT", "Subject"], exclude=False) == (
        b"Subject: folded\r\n\tonce\r\n  twice\r\n\r\n")


def _fetch_atts(wire: bytes) -> tuple[FetchAtt, ...]:
    framer = CommandFramer()
    framer.receive_data(wire + b"\r\n")
    event = framer.next_event()
    assert isinstance(event, CommandFrame)
    assert framer.next_event() is NEED_DATA
    atts = parse_command(event).args.atts  # type: ignore[attr-defined]
    assert isinstance(atts, tuple)
    return atts


def test_each_section_asked_is_answered_under_the_name_asked() -> None:
    message = HEADER + b"body\r\n"
    atts = _fetch_atts(b"a FETCH 1 (BODY.PEEK[HEADER.FIELDS (FROM)] "
                       b"BODY.PEEK[HEADER.FIELDS (from FROM)] BODY[HEADER.FIELDS.NOT (From)])")
    assert [a.section.fields for a in atts if a.section] == [
        ("FROM",), ("FROM", "FROM"), ("FROM",)]
    fetched = render_fetch(info(message), 1, list(atts), body=message)
    assert fetched.data == (
        b"* 1 FETCH (BODY[HEADER.FIELDS (FROM)] {%d}\r\n" % len(FROMS) + FROMS
        + b" BODY[HEADER.FIELDS (FROM FROM)] {%d}\r\n" % len(FROMS) + FROMS
        + b" BODY[HEADER.FIELDS.NOT (FROM)] {%d}\r\n" % len(OTHERS) + OTHERS + b")\r\n")


_NAMES = st.sampled_from(["From", "To", "Subject", "X-A", "x-a-b"])


def _case(name: str, flips: list[bool]) -> str:
    return "".join(c.swapcase() if f else c for c, f in zip(name, flips + [False] * 9,
                                                           strict=False))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_NAMES, st.lists(st.booleans(), max_size=6), st.integers(0, 2)),
                max_size=12),
       st.lists(st.tuples(_NAMES, st.lists(st.booleans(), max_size=6)), min_size=1, max_size=6))
def test_fields_and_not_split_the_header_whatever_the_names(
    fields: list[tuple[str, list[bool], int]], asked: list[tuple[str, list[bool]]]
) -> None:
    lines = [f"{_case(n, f)}: v{i}\r\n".encode() + b" fold\r\n" * folds
             for i, (n, f, folds) in enumerate(fields)]
    header = b"".join(lines) + b"\r\n"
    names = [_case(n, f) for n, f in asked]
    wanted = {n.lower() for n in names}
    picked = sections.header_fields(header, names, exclude=False)
    rest = sections.header_fields(header, names, exclude=True)
    # Every field exactly once, with its folding, on one side or the other, in order.
    assert picked == b"".join(x for x, (n, _f, _d) in zip(lines, fields, strict=True)
                              if n.lower() in wanted) + b"\r\n"
    assert rest == b"".join(x for x, (n, _f, _d) in zip(lines, fields, strict=True)
                            if n.lower() not in wanted) + b"\r\n"
    assert sections.header_fields(header, names + names[::-1], exclude=False) == picked
