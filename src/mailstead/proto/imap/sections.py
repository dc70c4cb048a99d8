"""BODY[section] and BINARY[section] extraction from the stored message bytes.

Nothing is re-parsed: parts are found through the byte offsets recorded in the
BODYSTRUCTURE JSON at delivery (core/message.py); only HEADER.FIELDS[.NOT] scans the lines
of one header block. Section semantics are RFC 9051 section 6.4.5 (RFC 3501 section 6.4.5
is identical); BINARY decoding is RFC 3516.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable, Mapping
from typing import Any

from mailstead.proto.imap.ast import Partial, Section

_LINE = re.compile(rb"[^\n]*\n|[^\n]+")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/=]+")
# RFC 2045 section 6.7 rule 3: white space at the end of an encoded line is transport padding
# that a decoder deletes; deleting it also makes "=" + padding + line end a soft line break.
_QP_PADDING = re.compile(rb"[ \t]+(?=\r\n|\Z)")
# Transfer encodings that need no decoding (RFC 2045 section 6.1); text in these goes out in
# CRLF form, as BODY[] sends it, so BINARY[n] and BINARY.SIZE[n] agree with BODY[n].
_TEXT_IDENTITY = frozenset({"7BIT", "8BIT", ""})

Node = Mapping[str, Any]


def find_part(structure: Node, part: Iterable[int]) -> tuple[Node, bool] | None:
    """The node named by the numeric ``part`` path, and whether the path stopped at the body
    of a message (top level or encapsulated) rather than at a MIME part; None if it does not
    exist.

    RFC 9051 section 6.4.5: every message has at least part 1; for a non-multipart message
    part 1 is its body; the parts of a message/rfc822 (or message/global) part are those of
    the encapsulated message.
    """
    node: Node = structure
    at_message = True  # ``node`` is the body of a message: its part 1 is itself
    for index in part:
        if not at_message and is_message(node):
            node, at_message = node["body"], True
        children = node.get("parts")
        if isinstance(children, list):
            if not 1 <= index <= len(children):
                return None
            node, at_message = children[index - 1], False
        elif at_message and index == 1:
            at_message = False
        else:
            return None
    return node, at_message


def is_message(node: Node) -> bool:
    """Whether ``node`` is a parsed message/rfc822 or message/global part."""
    return node.get("type") == "message" and isinstance(node.get("body"), Mapping)


def _span(data: bytes, start: Any, end: Any) -> bytes:
    if not isinstance(start, int) or not isinstance(end, int):
        return b""
    start, end = max(0, min(start, len(data))), max(0, min(end, len(data)))
    return data[start:end] if start < end else b""


def _header_block(data: bytes, node: Node) -> bytes:
    """The header of the part at ``node`` including its terminating blank line; one is added
    when the message has none (RFC 9051 section 6.4.5: HEADER includes the blank line)."""
    block = _span(data, node.get("header_offset"), node.get("body_offset"))
    if block.endswith((b"\n\n", b"\n\r\n")) or block in (b"\r\n", b"\n"):
        return block
    if block and not block.endswith(b"\n"):
        block += b"\r\n"
    return block + b"\r\n"


def _body(data: bytes, node: Node) -> bytes:
    return _span(data, node.get("body_offset"), node.get("end"))


def header_fields(header: bytes, names: Iterable[str], *, exclude: bool) -> bytes:
    """The fields of ``header`` whose name is (``exclude``: is not) in ``names``, with their
    original lines and folding, followed by a blank line.

    RFC 9051 section 6.4.5: matching is ASCII-case-insensitive but otherwise exact. Lines
    that are neither a field nor a continuation are dropped, as is everything after the
    first empty line.
    """
    wanted = {n.encode("utf-8", "surrogateescape").lower() for n in names}
    out: list[bytes] = []
    keep = False
    for match in _LINE.finditer(header):
        line = match.group()
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        colon = line.find(b":")
        if colon <= 0:
            keep = False
            continue
        name = line[:colon].rstrip(b" \t").lower()
        keep = (name in wanted) != exclude
        if keep:
            out.append(line)
    if out and not out[-1].endswith(b"\n"):
        out[-1] += b"\r\n"
    out.append(b"\r\n")
    return b"".join(out)


def extract(data: bytes, structure: Node, section: Section) -> bytes:
    """The octets of ``BODY[section]`` (without partial); b"" for a part that does not exist
    (RFC 9051 section 6.4.5 lets the server answer an empty string)."""
    if not section.part:
        if section.text == "":
            return data
        if section.text == "TEXT":
            return _body(data, structure)
        return _headers(data, structure, section)
    found = find_part(structure, section.part)
    if found is None:
        return b""
    node, _ = found
    if section.text == "":
        return _body(data, node)
    if section.text == "MIME":  # the MIME header of the part itself
        return _header_block(data, node)
    # HEADER, HEADER.FIELDS[.NOT] and TEXT after a part number apply only to message/rfc822
    # and message/global parts (RFC 9051 section 6.4.5).
    if not is_message(node):
        return b""
    inner = node["body"]
    if section.text == "TEXT":
        return _body(data, inner)
    return _headers(data, inner, section)


def _headers(data: bytes, node: Node, section: Section) -> bytes:
    block = _header_block(data, node)
    if section.text == "HEADER":
        return block
    if section.text == "HEADER.FIELDS":
        return header_fields(block, section.fields, exclude=False)
    if section.text == "HEADER.FIELDS.NOT":
        return header_fields(block, section.fields, exclude=True)
    return b""


def apply_partial(data: bytes, partial: Partial | None) -> bytes:
    """``<start.length>``: a start past the end gives an empty string (RFC 9051 6.4.5)."""
    if partial is None:
        return data
    start = max(partial.start, 0)
    return data[start : start + max(partial.length, 0)]


def crlf_text(data: bytes) -> bytes:
    """``data`` with every bare LF as CRLF; CRLF and bare CR stay. RFC 9051 section 2.3.4
    (RFC822.SIZE) and RFC 5322 section 2.1 count a message in CRLF form, so the text items
    are sent that way: BODY[] then has exactly RFC822.SIZE octets. Two C-speed counts decide;
    a message stored from SMTP (always CRLF) is returned as it is."""
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def decode_transfer_encoding(body: bytes, encoding: str) -> bytes | None:
    """The body with its Content-Transfer-Encoding removed; None when the encoding is not
    one we know, so the caller answers ``NO [UNKNOWN-CTE]`` (RFC 3516 section 4.2)."""
    encoding = encoding.upper()
    if encoding in _TEXT_IDENTITY:
        return crlf_text(body)
    if encoding == "BINARY":  # any octet, line ends included, is data (RFC 2045 6.2)
        return body
    if encoding == "BASE64":
        return _decode_base64(body)
    if encoding == "QUOTED-PRINTABLE":
        return decode_quoted_printable(body)
    return None


def decode_quoted_printable(body: bytes) -> bytes:
    """RFC 2045 section 6.7: ``=XX`` (either case) is that octet, ``=`` at a line end (after
    any transport padding) is a soft line break, white space at a line end is deleted, and a
    hard line break is CRLF whatever the stored line end. Malformed ``=`` sequences are kept
    as they are, the robust choice of section 6.7's note, so a FETCH never fails on them."""
    body = crlf_text(body)
    # Encoders do not pad (RFC 2045 6.7 rule 3), so three C-speed searches usually spare
    # the regex pass over the whole body.
    if b" \r\n" in body or b"\t\r\n" in body or body.endswith((b" ", b"\t")):
        body = _QP_PADDING.sub(b"", body)
    return binascii.a2b_qp(body)


def _decode_base64(body: bytes) -> bytes:
    """Lenient base64 (RFC 2045 section 6.8: characters outside the alphabet are ignored);
    padding ends a chunk, so concatenated encodings decode chunk by chunk."""
    out: list[bytes] = []
    for chunk in re.split(rb"=+", _B64_JUNK.sub(b"", body)):
        usable = len(chunk) - len(chunk) % 4
        rest = chunk[usable:]
        # 2 or 3 trailing characters still carry 1 or 2 octets; a single one carries none
        chunk = chunk[:usable] + (rest + b"=" * (4 - len(rest)) if len(rest) >= 2 else b"")
        if chunk:
            out.append(binascii.a2b_base64(chunk))
    return b"".join(out)


def binary(data: bytes, structure: Node, part: tuple[int, ...]) -> bytes | None:
    """The decoded octets of ``BINARY[part]``: b"" for a part that does not exist, None for an
    unknown transfer encoding (RFC 3516 section 4.2). ``BINARY[]`` is the whole message,
    which as such has no transfer encoding; nor has a multipart or message part, whose
    encoding RFC 2045 section 6.4 limits to 7bit, 8bit and binary: their parts were found in
    the octets as stored, so those are what BINARY returns, like BODY."""
    if not part:
        return crlf_text(data)
    found = find_part(structure, part)
    if found is None:
        return b""
    node, _ = found
    if isinstance(node.get("parts"), list) or is_message(node):
        return crlf_text(_body(data, node))
    encoding = node.get("encoding")
    if not isinstance(encoding, str):
        encoding = ""
    return decode_transfer_encoding(_body(data, node), encoding)
