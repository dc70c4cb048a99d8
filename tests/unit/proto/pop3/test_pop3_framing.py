"""The POP3 output framing: CRLF conversion, byte-stuffing, sizes equal to what is sent, TOP."""

from __future__ import annotations

import pytest

from mailstead.proto.pop3.framing import multiline, to_crlf, top_of, wire_form, wire_size


@pytest.mark.parametrize(
    ("stored", "wire"),
    [
        (b"", b""),
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b"a\nb\n", b"a\r\nb\r\n"),
        (b"a\r\nb\nc\r\n", b"a\r\nb\r\nc\r\n"),
        (b"no newline", b"no newline\r\n"),
        (b"ends in CR\r", b"ends in CR\r\r\n"),
        (b"bare\rCR\r\n", b"bare\rCR\r\n"),
        (b"\n\n", b"\r\n\r\n"),
        (b"x\r\r\n", b"x\r\r\n"),
    ],
)
def test_wire_form_and_size_agree(stored: bytes, wire: bytes) -> None:
    assert wire_form(stored) == wire
    assert wire_size(stored) == len(wire)


def test_to_crlf_leaves_crlf_data_untouched() -> None:
    data = b"Subject: x\r\n\r\nbody\r\n"
    assert to_crlf(data) is data


def test_multiline_byte_stuffs_every_line_starting_with_a_dot() -> None:
    content = b".first\r\nmid\r\n..two\r\n.\r\nend.\r\n"
    assert multiline(b"+OK\r\n", content) == (
        b"+OK\r\n..first\r\nmid\r\n...two\r\n..\r\nend.\r\n.\r\n"
    )


def test_multiline_empty() -> None:
    assert multiline(b"+OK 0 octets\r\n", b"") == b"+OK 0 octets\r\n.\r\n"


MESSAGE = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (0, b"A: 1\r\nB: 2\r\n\r\n"),
        (1, b"A: 1\r\nB: 2\r\n\r\nl1\r\n"),
        (3, MESSAGE),
        (99, MESSAGE),
    ],
)
def test_top(lines: int, expected: bytes) -> None:
    assert top_of(MESSAGE, lines) == expected


def test_top_of_headers_only_and_bare_lf() -> None:
    assert top_of(b"A: 1\r\nB: 2", 0) == b"A: 1\r\nB: 2\r\n"
    assert top_of(b"A: 1\n\nx\ny\n", 1) == b"A: 1\r\n\r\nx\r\n"
    assert top_of(b"\r\nbody1\r\nbody2\r\n", 1) == b"\r\nbody1\r\n"
