"""ManageSieve framing (RFC 5804 section 4): a command is words, quoted strings and literals
up to CRLF; this module splits the input buffer into whole commands, with hard limits, before
anything is interpreted (DESIGN rule 3).

Only CRLF ends a command; a bare CR or LF outside a literal is a syntax error. Literals are
``{n+}`` (non-synchronizing, RFC 5804 section 4) and, leniently, ``{n}``: no continuation is
ever sent, so both read the same. Nothing here raises on client bytes except ``FrameError``.
"""

from __future__ import annotations

from dataclasses import dataclass

# RFC 5804 section 4: a quoted string is at most 1024 octets.
MAX_QUOTED = 1024
MAX_ATOM = 64
MAX_WORDS = 4  # the longest command (RENAMESCRIPT old new) has 3


class FrameError(Exception):
    """The command is malformed; ``skip`` is how many buffered octets to drop (the bad
    line), ``fatal`` when the stream cannot be resynchronised (close it)."""

    def __init__(self, message: str, skip: int, fatal: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.skip = skip
        self.fatal = fatal


@dataclass(frozen=True, slots=True)
class Atom:
    value: str  # a command name or number, as sent


@dataclass(frozen=True, slots=True)
class Str:
    value: bytes  # a quoted string or a literal, decoded


Word = Atom | Str

_ATOM_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def _line_end(buf: bytes | bytearray, start: int) -> int:
    nl = buf.find(b"\n", start)
    return len(buf) if nl < 0 else nl + 1


def parse_command(
    buf: bytes | bytearray, max_literal: int, max_line: int = 8192
) -> tuple[list[Word], int] | None:
    """The words of the first complete command in ``buf`` and the octets it used; None when
    more input is needed. Raises FrameError."""
    words: list[Word] = []
    i = 0
    n = len(buf)
    line_start = 0
    while True:
        if i - line_start > max_line:
            raise FrameError("line too long", _line_end(buf, i), fatal=buf.find(b"\n", i) < 0)
        if i >= n:
            if n - line_start > max_line:
                raise FrameError("line too long", n, fatal=True)
            return None
        c = buf[i]
        if c == 0x20:
            i += 1
            continue
        if c == 0x0D:
            if i + 1 >= n:
                return None
            if buf[i + 1] != 0x0A:
                raise FrameError("bare CR in command", _line_end(buf, i))
            return words, i + 2
        if c == 0x0A:
            raise FrameError("bare LF in command", i + 1)
        if len(words) >= MAX_WORDS:
            raise FrameError("too many arguments", _line_end(buf, i))
        if c == 0x22:  # quoted
            out = bytearray()
            j = i + 1
            while True:
                if j >= n:
                    if j - i > MAX_QUOTED + 2:
                        raise FrameError("quoted string too long", n, fatal=True)
                    return None
                d = buf[j]
                if d == 0x22:
                    break
                if d in (0x0D, 0x0A, 0):
                    raise FrameError("CR, LF or NUL in a quoted string", _line_end(buf, j))
                if d == 0x5C:  # RFC 5804 section 4: QUOTED-SPECIALS are escaped with "\"
                    if j + 1 >= n:
                        return None
                    if buf[j + 1] not in (0x22, 0x5C):
                        raise FrameError("invalid escape in a quoted string", _line_end(buf, j))
                    out.append(buf[j + 1])
                    j += 2
                else:
                    out.append(d)
                    j += 1
                if len(out) > MAX_QUOTED:
                    raise FrameError("quoted string too long", _line_end(buf, j))
            words.append(Str(bytes(out)))
            i = j + 1
        elif c == 0x7B:  # literal {n+} or {n}
            close = buf.find(b"}", i, i + 24)
            if close < 0:
                if n - i < 24:
                    return None
                raise FrameError("malformed literal", _line_end(buf, i))
            spec = bytes(buf[i + 1:close])
            if spec.endswith(b"+"):
                spec = spec[:-1]
            if not spec or not spec.isdigit() or len(spec) > 12:
                raise FrameError("malformed literal", _line_end(buf, i))
            size = int(spec)
            if buf[close + 1:close + 3] != b"\r\n":
                if n < close + 3:
                    return None
                raise FrameError("literal length must be followed by CRLF", _line_end(buf, i))
            if size > max_literal:
                # The octets that follow cannot be told apart from commands: close.
                raise FrameError("literal too large", n, fatal=True)
            start = close + 3
            if n < start + size:
                return None
            words.append(Str(bytes(buf[start:start + size])))
            i = start + size
            line_start = i
        elif c in _ATOM_CHARS:
            j = i
            while j < n and buf[j] in _ATOM_CHARS:
                j += 1
            if j - i > MAX_ATOM:
                raise FrameError("word too long", _line_end(buf, i))
            if j >= n:
                return None
            words.append(Atom(bytes(buf[i:j]).decode("ascii")))
            i = j
        else:
            raise FrameError("unexpected character", _line_end(buf, i))


def quote(value: str | bytes) -> bytes:
    """A string for the client: quoted when short and safe, else a literal (RFC 5804
    section 4, literal-s2c)."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if len(raw) <= MAX_QUOTED and not any(b in raw for b in b"\r\n\x00"):
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(raw) + raw


def valid_script_name(name: bytes) -> str | None:
    """The name as text when RFC 5804 section 1.6 allows it: UTF-8, 1..128 characters, no
    control characters (U+0000-U+001F, U+007F-U+009F), no U+2028/U+2029."""
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not 1 <= len(text) <= 128:
        return None
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in text):
        return None
    return text
