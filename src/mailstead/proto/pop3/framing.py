"""POP3 framing: command lines in, multi-line responses out.

Command lines are split by the shared SMTP ``LineReader`` (DESIGN rule 3): only CRLF ends a
line (RFC 1939 section 3), a bare CR or LF never does, and every line has a hard limit.
Messages go out in the RFC 1939 section 3 multi-line form: CRLF line endings whatever the
stored form, a "." doubled at the start of a line (byte-stuffing), then CRLF "." CRLF. All
scanning uses bytes methods (C loops), never a Python loop per byte.
"""

from __future__ import annotations

from mailstead.proto.smtp.framing import BadLine, LineProblem, LineReader

__all__ = [
    "BadLine",
    "LineProblem",
    "LineReader",
    "multiline",
    "to_crlf",
    "top_of",
    "wire_form",
    "wire_size",
]

CRLF = b"\r\n"
TERMINATOR = b".\r\n"


def to_crlf(data: bytes) -> bytes:
    """``data`` with every bare LF turned into CRLF (RFC 1939 section 3: lines end in CRLF on
    the wire). CRLF stays as it is; a bare CR is no line ending and is left alone."""
    if data.count(b"\n") == data.count(CRLF):
        return data  # the common case: stored from SMTP, already CRLF
    return data.replace(CRLF, b"\n").replace(b"\n", CRLF)


def wire_form(data: bytes) -> bytes:
    """The octets of the message as the client receives them, before byte-stuffing: CRLF
    lines, and a final CRLF added when the stored form lacks one."""
    data = to_crlf(data)
    if data and not data.endswith(CRLF):
        data += CRLF
    return data


def wire_size(data: bytes) -> int:
    """``len(wire_form(data))`` without building it: the size LIST and STAT report must be
    what RETR sends (RFC 1939 sections 5 and 11: byte-stuffing is not counted)."""
    bare_lf = data.count(b"\n") - data.count(CRLF)
    size = len(data) + bare_lf
    if data and not data.endswith(b"\n"):
        size += 2
    return size


def top_of(data: bytes, lines: int) -> bytes:
    """The wire form of the header, the blank line and the first ``lines`` body lines (RFC
    1939 section 7, TOP). A message without a blank line is all header."""
    data = wire_form(data)
    if data.startswith(CRLF):
        body = 2  # no header fields: the message starts with the blank line
    else:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return data
        body = end + 4
    pos = body
    for _ in range(lines):
        nl = data.find(CRLF, pos)
        if nl < 0:
            return data
        pos = nl + 2
    return data[:pos]


def multiline(first: bytes, content: bytes) -> bytes:
    """A positive multi-line response: ``first`` (a status line with its CRLF), ``content``
    (CRLF lines, each ending in CRLF) byte-stuffed, then the terminator (RFC 1939 section 3)."""
    if content:
        # RFC 1939 section 3: a line beginning with "." gets one more "." in front.
        stuffed = (CRLF + content).replace(b"\r\n.", b"\r\n..")[2:]
        return first + stuffed + TERMINATOR
    return first + TERMINATOR
