"""BODY[section], partials and BINARY decoding on real messages summarised at delivery."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mailstead.core.message import summarize
from mailstead.proto.imap import sections
from mailstead.proto.imap.ast import Partial, Section

INNER = (
    b"From: Carol <carol@c.test>\r\n"
    b"Subject: inner\r\n"
    b"Content-Type: multipart/alternative; boundary=inner\r\n"
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"plain text\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>html</p>\r\n"
    b"--inner--"
)
HEADER = (
    b"From: Alice <alice@a.test>\r\n"
    b"To: Bob <bob@b.test>\r\n"
    b"Subject: Mixed\r\n"
    b"X-Folded: first\r\n\tsecond\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
)
PART1_HEADER = (
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
)
PART2_HEADER = (
    b"Content-Type: application/pdf; name=doc.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-Disposition: attachment; filename=doc.pdf\r\n"
    b"Content-Language: en, de\r\n"
    b"Content-Location: http://x.test/doc.pdf\r\n"
    b"\r\n"
)
MIXED = (
    HEADER
    + b"preamble\r\n--outer\r\n"
    + PART1_HEADER
    + b"caf=C3=A9 =\r\nau lait\r\n--outer\r\n"
    + PART2_HEADER
    + b"JVBERi0xLjQK\r\nAAEC/w==\r\n--outer\r\n"
    + b"Content-Type: message/rfc822\r\n\r\n"
    + INNER
    + b"\r\n--outer--\r\nepilogue\r\n"
)


def structure(data: bytes) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(summarize(data).bodystructure)
    return result


def body(data: bytes, part: tuple[int, ...] = (), text: str = "", *fields: str) -> bytes:
    return sections.extract(data, structure(data), Section(part, text, tuple(fields)))


def test_whole_message_header_and_text() -> None:
    assert body(MIXED) == MIXED
    assert body(MIXED, (), "HEADER") == HEADER
    assert body(MIXED, (), "TEXT") == MIXED[len(HEADER) :]


def test_numeric_parts_exclude_the_delimiter_crlf() -> None:
    assert body(MIXED, (1,)) == b"caf=C3=A9 =\r\nau lait"
    assert body(MIXED, (2,)) == b"JVBERi0xLjQK\r\nAAEC/w=="
    assert body(MIXED, (3,)) == INNER
    assert body(MIXED, (3, 1)) == b"plain text"
    assert body(MIXED, (3, 2)) == b"<p>html</p>"


def test_mime_headers_of_parts() -> None:
    assert body(MIXED, (1,), "MIME") == PART1_HEADER
    assert body(MIXED, (2,), "MIME") == PART2_HEADER
    assert body(MIXED, (3, 2), "MIME") == b"Content-Type: text/html\r\n\r\n"


def test_header_and_text_of_an_encapsulated_message() -> None:
    inner_header_end = INNER.index(b"\r\n\r\n") + 4
    assert body(MIXED, (3,), "HEADER") == INNER[:inner_header_end]
    assert body(MIXED, (3,), "TEXT") == INNER[inner_header_end:]
    assert body(MIXED, (3,), "HEADER.FIELDS", "SUBJECT") == b"Subject: inner\r\n\r\n"


def test_header_fields_keep_folding_order_and_match_case_insensitively() -> None:
    assert body(MIXED, (), "HEADER.FIELDS", "X-FOLDED", "SUBJECT") == (
        b"Subject: Mixed\r\nX-Folded: first\r\n\tsecond\r\n\r\n"
    )
    assert body(MIXED, (), "HEADER.FIELDS", "x-folded") == b"X-Folded: first\r\n\tsecond\r\n\r\n"
    assert body(MIXED, (), "HEADER.FIELDS", "NO-SUCH") == b"\r\n"
    assert body(MIXED, (), "HEADER.FIELDS.NOT", "FROM", "TO", "X-FOLDED", "MIME-VERSION") == (
        b"Subject: Mixed\r\n" b'Content-Type: multipart/mixed; boundary="outer"\r\n\r\n'
    )


def test_header_fields_repeated_and_with_space_before_colon() -> None:
    data = b"Received: a\r\nReceived : b\r\n c\r\nSubject: s\r\n\r\nbody"
    assert body(data, (), "HEADER.FIELDS", "RECEIVED") == (
        b"Received: a\r\nReceived : b\r\n c\r\n\r\n"
    )


def test_nonexistent_sections_are_empty() -> None:
    assert body(MIXED, (4,)) == b""
    assert body(MIXED, (0,)) == b""
    assert body(MIXED, (1, 1)) == b""
    assert body(MIXED, (1,), "HEADER") == b""  # part 1 is not a message/rfc822
    assert body(MIXED, (1,), "TEXT") == b""
    assert body(MIXED, (3, 1, 1)) == b""
    assert body(MIXED, (3, 3)) == b""


def test_single_part_message_has_part_one() -> None:
    data = b"Subject: hi\r\nContent-Type: text/plain\r\n\r\nline one\r\nline two\r\n"
    assert body(data, (1,)) == b"line one\r\nline two\r\n"
    assert body(data, (1,), "MIME") == b"Subject: hi\r\nContent-Type: text/plain\r\n\r\n"
    assert body(data, (2,)) == b""
    assert body(data, (1, 1)) == b""


def test_top_level_message_rfc822() -> None:
    data = b"Content-Type: message/rfc822\r\n\r\nSubject: wrapped\r\n\r\ninner body"
    assert body(data, (1,)) == b"Subject: wrapped\r\n\r\ninner body"
    assert body(data, (1,), "HEADER") == b"Subject: wrapped\r\n\r\n"
    assert body(data, (1,), "TEXT") == b"inner body"
    assert body(data, (1, 1)) == b"inner body"


def test_header_without_blank_line_gets_one() -> None:
    assert body(b"Subject: x\r\nFrom: a@b.test\r\n", (), "HEADER") == (
        b"Subject: x\r\nFrom: a@b.test\r\n\r\n"
    )
    assert body(b"Subject: x", (), "HEADER") == b"Subject: x\r\n\r\n"
    assert body(b"Subject: x", (), "TEXT") == b""
    assert body(b"Subject: x", (), "HEADER.FIELDS", "SUBJECT") == b"Subject: x\r\n\r\n"
    assert body(b"", (), "HEADER") == b"\r\n"


def test_lf_only_messages_keep_their_line_ends() -> None:
    data = b"Subject: s\nX-A: 1\n\nbody\n"
    assert body(data, (), "HEADER") == b"Subject: s\nX-A: 1\n\n"
    assert body(data, (), "HEADER.FIELDS", "X-A") == b"X-A: 1\n\r\n"
    assert body(data, (), "TEXT") == b"body\n"


@pytest.mark.parametrize(
    ("partial", "expected"),
    [
        (None, b"0123456789"),
        (Partial(0, 4), b"0123"),
        (Partial(8, 10), b"89"),
        (Partial(10, 5), b""),
        (Partial(99, 5), b""),
        (Partial(3, 0), b""),
    ],
)
def test_partial(partial: Partial | None, expected: bytes) -> None:
    assert sections.apply_partial(b"0123456789", partial) == expected


def test_binary_decodes_transfer_encodings() -> None:
    s = structure(MIXED)
    assert sections.binary(MIXED, s, (1,)) == "caf\u00e9 au lait".encode()
    assert sections.binary(MIXED, s, (2,)) == b"%PDF-1.4\n\x00\x01\x02\xff"
    assert sections.binary(MIXED, s, (3, 1)) == b"plain text"
    assert sections.binary(MIXED, s, ()) == MIXED
    assert sections.binary(MIXED, s, (9,)) == b""


def test_binary_unknown_encoding_is_reported() -> None:
    data = b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n"
    assert sections.binary(data, structure(data), (1,)) is None


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        (b"aGVsbG8=", b"hello"),
        (b"aGVs\r\nbG8=\r\n", b"hello"),
        (b"aGVsbG8", b"hello"),  # missing padding
        (b"a GVs*bG8=!", b"hello"),  # junk outside the alphabet is ignored
        (b"aGk=aGk=", b"hihi"),  # concatenated encodings
        (b"aGVsbG8=a", b"hello"),  # a lone trailing character carries nothing
        (b"", b""),
    ],
)
def test_lenient_base64(encoded: bytes, decoded: bytes) -> None:
    assert sections.decode_transfer_encoding(encoded, "BASE64") == decoded


def test_quoted_printable_and_identity() -> None:
    assert sections.decode_transfer_encoding(b"a=3Db=\r\nc\r\nd", "quoted-printable") == (
        b"a=bc\r\nd"
    )
    assert sections.decode_transfer_encoding(b"\x00raw", "BINARY") == b"\x00raw"
    assert sections.decode_transfer_encoding(b"x", "8bit") == b"x"
    assert sections.decode_transfer_encoding(b"x", "X-UNKNOWN") is None


def test_find_part_reports_message_bodies() -> None:
    s = structure(MIXED)
    found = sections.find_part(s, (3,))
    assert found is not None
    node, at_message = found
    assert node["type"] == "message"
    assert not at_message
    assert sections.is_message(node)
    assert sections.find_part(s, ()) == (s, True)


def test_damaged_structure_never_raises() -> None:
    assert sections.extract(b"abc", {}, Section((1,), "")) == b""
    assert sections.extract(b"abc", {"body_offset": "x"}, Section((), "TEXT")) == b""
    assert sections.extract(b"abc", {"body_offset": 99, "end": 200}, Section((), "TEXT")) == b""
    assert sections.binary(b"abc", {"parts": "nope"}, (1,)) == b""  # no offsets: nothing
