"""Wire encoding of IMAP responses: strings, lists, flags, codes, status lines, sequence sets.

Every function returns bytes that are safe to put on the wire as they are: a value that could
break the framing (CR, LF, NUL, 8-bit where not allowed, very long text) becomes a literal, and
free text in status responses is sanitised. Grammar references are RFC 9051 section 9 unless
noted; RFC 3501 section 9 is the same for everything here except UTF-8 in quoted strings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone

NIL = b"NIL"
CRLF = b"\r\n"

# Quoted strings longer than this become literals: a client's line buffer is finite, and a
# literal costs only a few bytes more. (RFC 9051 section 4.3 leaves the choice to the server.)
MAX_QUOTED = 1024

# RFC 9051 section 9: QUOTED-CHAR is any TEXT-CHAR (CHAR except CR and LF, and not NUL) with
# '"' and '\' escaped. This matches the 7-bit strings that can go out quoted.
_SAFE_ASCII = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")
_NEEDS_ESCAPE = re.compile(rb'["\\]')
_UNSAFE_QUOTED = re.compile(rb"[\x00\r\n]")
# RFC 9051 section 9: ATOM-CHAR excludes atom-specials: ( ) { SP CTL % * " \ ].
_ATOM = re.compile(rb"[\x21\x23\x24\x26\x27\x2b-\x5b\x5e-\x7a\x7c\x7e]+")
# ASTRING-CHAR adds resp-specials ("]") to ATOM-CHAR.
_ASTRING_ATOM = re.compile(rb"[\x21\x23\x24\x26\x27\x2b-\x5b\x5d-\x7a\x7c\x7e]+")
# RFC 9051 section 9: flag-keyword is an atom; system flags are "\" atom.
_FLAG = re.compile(r"\\?[\x21\x23\x24\x26\x27\x2b-\x5b\x5e-\x7a\x7c\x7e]+")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def to_bytes(value: str | bytes) -> bytes:
    """``str`` values hold header bytes as UTF-8 with surrogateescape (core/message.py)."""
    if isinstance(value, bytes):
        return value
    return value.encode("utf-8", "surrogateescape")


def quoted(data: bytes) -> bytes:
    """``data`` as a quoted string; the caller has checked it has no CR, LF or NUL."""
    if _NEEDS_ESCAPE.search(data):
        data = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'"' + data + b'"'


def literal(data: bytes, *, binary: bool = False) -> bytes:
    """``{n}`` CRLF data, or ``~{n}`` for BINARY content that holds NUL (RFC 3516 section 4.3).

    A plain literal cannot carry NUL (RFC 9051 section 9, CHAR8 is %x01-ff): outside BINARY
    each NUL becomes 0x80, as Dovecot does, so the announced size stays exact.
    """
    if b"\x00" in data:
        if binary:
            return b"~{%d}\r\n" % len(data) + data
        data = data.replace(b"\x00", b"\x80")
    return b"{%d}\r\n" % len(data) + data


def _quotable(data: bytes, utf8: bool) -> bool:
    if len(data) > MAX_QUOTED:
        return False
    if _SAFE_ASCII.fullmatch(data):
        return True
    if not utf8 or _UNSAFE_QUOTED.search(data):
        return False
    # RFC 9051 section 9 (and RFC 6855 section 3): quoted may carry UTF8-2/3/4 sequences
    # when UTF-8 is enabled; anything that is not valid UTF-8 must go as a literal.
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def string(value: str | bytes, *, utf8: bool = False) -> bytes:
    """A quoted string when safe and short, a literal otherwise (RFC 9051 section 4.3).

    ``utf8`` is True for IMAP4rev2 and UTF8=ACCEPT sessions, where quoted strings may hold
    UTF-8 (RFC 6855 section 3); otherwise 8-bit text always goes as a literal.
    """
    data = to_bytes(value)
    if _quotable(data, utf8):
        return quoted(data)
    return literal(data)


def nstring(value: str | bytes | None, *, utf8: bool = False) -> bytes:
    """``string`` or NIL."""
    return NIL if value is None else string(value, utf8=utf8)


def astring(value: str | bytes, *, utf8: bool = False) -> bytes:
    """An atom when the value is one (and not ``NIL``), else a string (RFC 9051 astring)."""
    data = to_bytes(value)
    if _ASTRING_ATOM.fullmatch(data) and data.upper() != NIL:
        return data
    return string(data, utf8=utf8)


def is_atom(value: str | bytes) -> bool:
    """Whether ``value`` is a non-empty RFC 9051 atom."""
    return _ATOM.fullmatch(to_bytes(value)) is not None


def plist(items: Iterable[bytes]) -> bytes:
    """A parenthesised, space-separated list of already encoded items."""
    return b"(" + b" ".join(items) + b")"


def number(value: int) -> bytes:
    """An RFC 9051 number; negative values are a bug in the caller, never sent."""
    if value < 0:
        raise ValueError("IMAP numbers are unsigned")
    return b"%d" % value


def is_flag(flag: str) -> bool:
    """Whether ``flag`` can be sent as a flag (a system flag or a keyword atom)."""
    return _FLAG.fullmatch(flag) is not None


def flags(values: Iterable[str]) -> bytes:
    """A flag list ``(\\Seen $Label)``. Flags that are not atoms are dropped: the store only
    holds flags the parser accepted, so this only guards the framing against a bad row."""
    return plist(f.encode("ascii") for f in values if f.isascii() and is_flag(f))


def mailbox(
    name: str, *, utf8: bool, encoder: Callable[[str], str] | None = None
) -> bytes:
    """A mailbox name (astring): UTF-8 for IMAP4rev2/UTF8=ACCEPT sessions, modified UTF-7
    otherwise (RFC 3501 section 5.1.3). ``encoder`` defaults to ``mutf7.encode``."""
    if name.upper() == "INBOX":  # RFC 9051 section 5.1: INBOX is case-insensitive
        return b"INBOX"
    if utf8:
        return astring(name, utf8=True)
    if encoder is None:
        from mailstead.proto.imap import mutf7

        encoder = mutf7.encode
    return astring(encoder(name).encode("ascii", "replace"))


def _text(text: str) -> bytes:
    """Human-readable text of a status response: one line, and never starting with "["
    unless it is ours (RFC 9051 section 9, resp-text)."""
    data = to_bytes(text)
    data = re.sub(rb"[\x00\r\n]+", b" ", data).strip()
    if data.startswith(b"["):
        data = b" " + data
    return data or b"."


def code(name: str, *args: bytes | str | int) -> bytes:
    """A response code ``[NAME args]`` (RFC 9051 section 7.1); args are encoded by the caller
    (bytes), or are numbers, or atoms given as str."""
    parts = [name.encode("ascii")]
    for arg in args:
        if isinstance(arg, int):
            parts.append(number(arg))
        elif isinstance(arg, str):
            parts.append(arg.encode("ascii"))
        else:
            parts.append(arg)
    body = b" ".join(parts)
    if _UNSAFE_QUOTED.search(body) or b"]" in body:
        raise ValueError("response code arguments must not hold CR, LF, NUL or ']'")
    return b"[" + body + b"]"


def _status(prefix: bytes, status: str, text: str, resp_code: bytes | None) -> bytes:
    if status not in ("OK", "NO", "BAD", "BYE", "PREAUTH"):
        raise ValueError(f"not a status response: {status!r}")
    head = prefix + b" " + status.encode("ascii") + b" "
    if resp_code is not None:
        head += resp_code + b" "
    return head + _text(text) + CRLF


def tagged(tag: str, status: str, text: str, resp_code: bytes | None = None) -> bytes:
    """``tag OK|NO|BAD [code] text`` CRLF (RFC 9051 section 7.1)."""
    return _status(tag.encode("ascii", "replace"), status, text, resp_code)


def untagged_status(status: str, text: str, resp_code: bytes | None = None) -> bytes:
    """``* OK|NO|BAD|BYE|PREAUTH [code] text`` CRLF."""
    return _status(b"*", status, text, resp_code)


def untagged(data: bytes | str) -> bytes:
    """``* data`` CRLF for an already encoded response (``5 EXISTS``, ``CAPABILITY ...``)."""
    return b"* " + to_bytes(data) + CRLF


def continuation(text: str = "") -> bytes:
    """A continuation request ``+ text`` CRLF (RFC 9051 section 7.6)."""
    data = re.sub(rb"[\x00\r\n]+", b" ", to_bytes(text)).strip()
    return b"+ " + data + CRLF if data else b"+ \r\n"


def format_internal_date(timestamp: float, offset_minutes: int = 0) -> str:
    """``17-Jul-1996 02:44:25 +0000`` (RFC 9051 section 9, date-time without the quotes).

    The day is space-padded (date-day-fixed). ``offset_minutes`` is the zone to show, so
    clients see the time as the server's zone; UTC by default.
    """
    zone = timezone(timedelta(minutes=offset_minutes)) if offset_minutes else UTC
    when = datetime.fromtimestamp(timestamp, zone)
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return (
        f"{when.day:2d}-{_MONTHS[when.month - 1]}-{when.year:04d} "
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} {sign}{hours:02d}{minutes:02d}"
    )


def internal_date(timestamp: float, offset_minutes: int = 0) -> bytes:
    """The quoted date-time of INTERNALDATE."""
    return b'"' + format_internal_date(timestamp, offset_minutes).encode("ascii") + b'"'


def sequence_set(numbers: Iterable[int], *, sort: bool = True) -> str:
    """``1:5,7,9:12``: runs of consecutive numbers compressed (RFC 9051 section 9 sequence-set).

    Sorted and de-duplicated by default (ESEARCH ALL, VANISHED). With ``sort=False`` the
    order is kept and only ascending runs are merged, for COPYUID whose two sets correspond
    element by element (RFC 4315 section 3). Empty input gives "" (callers must not send it).
    """
    values = sorted(set(numbers)) if sort else list(numbers)
    out: list[str] = []
    i, n = 0, len(values)
    while i < n:
        j = i
        while j + 1 < n and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}:{values[j]}")
        i = j + 1
    return ",".join(out)
