"""The searchable text of a message, for the full-text index (IMAP SEARCH, RFC 9051 6.4.4).

Headers are unfolded and their RFC 2047 encoded-words decoded; text/* parts are decoded from
base64 or quoted-printable and from their charset (HTML reduced to its text); other parts are
skipped; embedded messages contribute their headers and text parts. Everything is case-folded,
because SEARCH matches case-insensitively. Pure functions: hostile input never raises, it only
yields less text.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import re
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

# Characters indexed per message (header and body together). Text beyond this is not indexed
# and the document is marked incomplete, so searches check such messages by reading them.
MAX_TEXT = 1024 * 1024
# Nested multiparts deeper than this are not walked (hostile input; real mail nests < 10).
MAX_DEPTH = 32

# RFC 2047 section 2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?="
_ENCODED_WORD = re.compile(rb"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
# RFC 2047 section 6.2: white space between adjacent encoded-words is not displayed.
_BETWEEN_WORDS = re.compile(rb"(\?=)[ \t\r\n]+(=\?)")
_QP_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_LINE = re.compile(rb"\r?\n")
_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")  # RFC 5322 section 3.6.8 ftext
_SCRIPT = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>", re.DOTALL)
_SPACE_RUN = re.compile(r"[ \t\r\f\v]+")


@dataclass(frozen=True, slots=True)
class IndexText:
    """What the index stores for one message: ``header`` holds one ``name: value`` line per
    field (name lower-case), both texts case-folded; ``complete`` is False when cut."""

    header: str
    body: str
    complete: bool


def fold(text: str) -> str:
    """The form used on both sides of a match: Unicode case folding (SEARCH is
    case-insensitive), CRLF as LF, runs of other white space as one space, no NUL."""
    text = text.replace("\r\n", "\n").replace("\x00", " ")
    return _SPACE_RUN.sub(" ", text.casefold())


def _charset_decode(data: bytes, charset: str | None) -> str:
    """Decodes ``data`` from ``charset``; unknown or wrong charsets fall back to UTF-8 and
    then Latin-1, which never fails."""
    name = (charset or "utf-8").strip().strip('"').split("*", 1)[0] or "utf-8"
    try:
        codecs.lookup(name)
    except LookupError:
        name = "utf-8"
    try:
        return data.decode(name)
    except (UnicodeDecodeError, LookupError):
        pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _decode_word(match: re.Match[bytes]) -> str | None:
    """The text of one encoded-word, or None when it is malformed (then kept as is)."""
    charset = match.group(1).decode("ascii", "replace")
    encoding = match.group(2).upper()
    text = match.group(3)
    try:
        if encoding == b"B":
            raw = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
        else:  # RFC 2047 section 4.2: "_" is a space, "=XX" an octet
            raw = _QP_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), text.replace(b"_", b" "))
    except (binascii.Error, ValueError):
        return None
    return _charset_decode(raw, charset)


def _raw_text(raw: bytes) -> str:
    # RFC 6532: raw 8-bit header octets are UTF-8; anything else is taken as Latin-1.
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def decode_header_value(raw: bytes) -> str:
    """An unfolded header value with its encoded-words decoded (RFC 2047)."""
    if b"=?" not in raw:
        return _raw_text(raw).strip()
    raw = _BETWEEN_WORDS.sub(rb"\1\2", raw)
    out: list[str] = []
    pos = 0
    for match in _ENCODED_WORD.finditer(raw):
        out.append(_raw_text(raw[pos : match.start()]))
        word = _decode_word(match)
        out.append(_raw_text(match.group(0)) if word is None else word)
        pos = match.end()
    out.append(_raw_text(raw[pos:]))
    return "".join(out).replace("\r", " ").replace("\n", " ").strip()


def header_fields(block: bytes) -> list[tuple[str, str]]:
    """(lower-case name, decoded value) of each field of a header block; lines that are not
    fields (and do not continue one) are ignored."""
    fields: list[tuple[str, bytes]] = []
    for line in _LINE.split(block):
        if line[:1] in (b" ", b"\t"):
            if fields:  # RFC 5322 section 2.2.3: unfolding removes the CRLF only
                name, value = fields[-1]
                fields[-1] = (name, value + line)
            continue
        match = _FIELD_NAME.match(line)
        if match is not None:
            fields.append((match.group(1).decode("ascii").lower(), line[match.end() :]))
    return [(name, decode_header_value(value)) for name, value in fields]


def split_header(data: bytes) -> tuple[bytes, int]:
    """The header block of a message and the offset where its body starts."""
    match = _HEADER_END.search(data)
    if match is None:
        return data, len(data)
    return data[: match.start()], match.end()


def _html_text(text: str) -> str:
    text = _SCRIPT.sub(" ", text)
    return html.unescape(_TAG.sub(" ", text))


def _message_headers(msg: Message) -> str:
    lines = []
    for name, value in msg.items():
        raw = str(value).encode("utf-8", "surrogateescape")
        lines.append(f"{name.lower()}: {decode_header_value(raw)}")
    return "\n".join(lines)


def _part_text(part: Message) -> str | None:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    text = _charset_decode(payload, part.get_content_charset())
    if part.get_content_subtype() == "html":
        text = _html_text(text)
    return text


def _walk(part: Message, out: list[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        return
    if part.is_multipart():
        payload = part.get_payload()
        if not isinstance(payload, list):
            return
        embedded = part.get_content_maintype() == "message"
        for sub in payload:
            if not isinstance(sub, Message):
                continue
            if embedded:  # an attached message: its header is part of our body text
                out.append(_message_headers(sub))
            _walk(sub, out, depth + 1)
        return
    if part.get_content_maintype() != "text":
        return  # attachments and other non-text parts are not searchable text
    text = _part_text(part)
    if text:
        out.append(text)


def body_text(data: bytes) -> str:
    """The searchable text of the body of ``data`` (a whole message)."""
    try:
        msg = BytesParser(policy=compat32).parsebytes(data)
        out: list[str] = []
        _walk(msg, out, 0)
        return "\n".join(out)
    except Exception:  # hostile MIME (e.g. nesting past the recursion limit): raw text
        _, start = split_header(data)
        return _charset_decode(data[start:], None)


def extract(data: bytes, limit: int = MAX_TEXT) -> IndexText:
    """The index text of one message (``data`` as stored); never raises."""
    block, _ = split_header(data)
    header = "\n".join(f"{name}: {value}" for name, value in header_fields(block))
    body = body_text(data)
    header = fold(header)
    body = fold(body)
    complete = len(header) + len(body) <= limit
    if not complete:
        header = header[:limit]
        body = body[: max(0, limit - len(header))]
    return IndexText(header, body, complete)


def header_contains(header: str, name: str, needle: str) -> bool:
    """True when a field ``name`` of an indexed ``header`` text contains the folded ``needle``
    (RFC 9051 section 6.4.4 HEADER: the text after the colon)."""
    prefix = name.lower() + ":"
    for line in header.split("\n"):
        if line.startswith(prefix) and needle in line[len(prefix) :]:
            return True
    return False


def text_contains(text: IndexText, kind: str, field: str | None, needle: str) -> bool:
    """Whether ``text`` matches a search part (``kind`` "text", "body" or "header", with
    ``field`` for HEADER NAME) for the folded ``needle``; used on a message's full text where
    its index entry was cut."""
    if kind == "header":
        return field is not None and header_contains(text.header, field, needle)
    if kind == "body":
        return needle in text.body
    return needle in text.header or needle in text.body
