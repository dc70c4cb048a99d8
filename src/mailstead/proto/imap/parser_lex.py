"""The lexical layer of the IMAP command parser: a cursor over a framed command and the
shared terminals of RFC 9051 section 9 (atoms, strings, numbers, sequence sets, dates, flags,
mailbox names).

Every method either consumes what it parses or raises ``ParseError``; nothing else escapes,
whatever the input (the fuzz tests hold us to it). Matching uses compiled regular expressions
at a position, so scanning stays in C.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from mailstead.proto.imap.ast import SeqRange, SequenceSet
from mailstead.proto.imap.framing import CommandFrame, Literal, literal_header


class ParseError(Exception):
    """A command that does not follow the grammar. The session answers ``<tag> BAD <text>``,
    or ``* BAD`` when ``tag`` is None (the tag itself was unreadable). A few errors are
    answered ``NO`` with a response code instead (``status``/``code``), e.g. an unknown
    search charset: ``NO [BADCHARSET (US-ASCII UTF-8)]`` (RFC 9051 section 6.4.4)."""

    def __init__(
        self, tag: str | None, text: str, *, status: str = "BAD", code: str | None = None
    ) -> None:
        super().__init__(text)
        self.tag = tag
        self.text = text
        self.status = status
        self.code = code


# RFC 9051 section 9: ATOM-CHAR = any CHAR except atom-specials, where atom-specials are
# "(" ")" "{" SP CTL "%" "*" DQUOTE "\" "]"; ASTRING-CHAR adds "]"; list-char adds "%" "*".
_ATOM = re.compile(rb"[\x21\x23-\x24\x26-\x27\x2b-\x5b\x5e-\x7a\x7c-\x7e]+")
_ASTRING_ATOM = re.compile(rb"[\x21\x23-\x24\x26-\x27\x2b-\x5b\x5d-\x7a\x7c-\x7e]+")
_LIST_ATOM = re.compile(rb"[\x21\x23-\x27\x2a-\x5b\x5d-\x7a\x7c-\x7e]+")
# RFC 9051 section 9: quoted = DQUOTE *QUOTED-CHAR DQUOTE; QUOTED-CHAR is a TEXT-CHAR other
# than the quoted-specials, or "\" followed by one of them (no other escapes), or UTF-8.
_QUOTED = re.compile(rb'"((?:[\x01-\x09\x0b\x0c\x0e-\x21\x23-\x5b\x5d-\xff]|\\["\\])*)"')
_UNESCAPE = re.compile(rb'\\(["\\])')
_DIGITS = re.compile(rb"[0-9]+")
# RFC 9051 section 9: date-day = 1*2DIGIT, date-month is a three-letter English abbreviation
# (case-insensitive like every IMAP keyword), date-year = 4DIGIT.
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
# date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE
_DATE_TIME = re.compile(
    rb'"([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])'
    rb'([0-9]{2})([0-9]{2})"'
)
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        (b"JAN", b"FEB", b"MAR", b"APR", b"MAY", b"JUN", b"JUL", b"AUG", b"SEP", b"OCT",
         b"NOV", b"DEC")
    )
}
# RFC 9051 section 9: number is an unsigned 32-bit integer, number64 a 63-bit one.
MAX_NUMBER = 2**32 - 1
MAX_NUMBER64 = 2**63 - 1
# RFC 9051 section 2.3.2: the system flags; matched case-insensitively, given canonically.
SYSTEM_FLAGS = {
    f.upper(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
}


class Reader:
    """A cursor over the lines and literals of one ``CommandFrame``."""

    __slots__ = ("_idx", "_lines", "_literals", "line", "pos", "tag")

    def __init__(self, frame: CommandFrame) -> None:
        self._lines = frame.lines
        self._literals = frame.literals
        self._idx = 0
        self.line = frame.lines[0]
        self.pos = 0
        self.tag: str | None = None

    def error(self, text: str) -> ParseError:
        return ParseError(self.tag, text)

    # ------------------------------------------------------------------ position

    def peek(self) -> int | None:
        """The next octet, or None at the end of the current line."""
        return self.line[self.pos] if self.pos < len(self.line) else None

    def at_end(self) -> bool:
        return self.pos >= len(self.line) and self._idx == len(self._lines) - 1

    def end(self) -> None:
        """The command must end here (RFC 9051 section 9: command ends with CRLF)."""
        if not self.at_end():
            raise self.error("unexpected characters at the end of the command")

    def sp(self) -> None:
        """Exactly one space (RFC 9051 section 9, SP)."""
        if self.peek() != 0x20:
            raise self.error("expected a space" if self.peek() is not None
                             else "unexpected end of command")
        self.pos += 1

    def maybe_sp(self) -> bool:
        if self.peek() == 0x20:
            self.pos += 1
            return True
        return False

    def expect(self, char: bytes) -> None:
        if self.line[self.pos : self.pos + 1] != char:
            raise self.error(f"expected {char.decode('ascii')!r}")
        self.pos += 1

    def take(self, char: bytes) -> bool:
        """Consume ``char`` if it comes next."""
        if self.line[self.pos : self.pos + 1] == char:
            self.pos += 1
            return True
        return False

    # ------------------------------------------------------------------ terminals

    def atom(self) -> str:
        m = _ATOM.match(self.line, self.pos)
        if m is None:
            raise self.error("expected an atom")
        self.pos = m.end()
        return m.group().decode("ascii")

    def keyword(self) -> str:
        """An atom, upper-cased: command names, options and keys are case-insensitive."""
        return self.atom().upper()

    def word(self, accept: re.Pattern[bytes] = _ATOM) -> bytes | None:
        """The atom-like run at the cursor without consuming it (for look-ahead)."""
        m = accept.match(self.line, self.pos)
        return m.group() if m else None

    def quoted(self) -> bytes:
        m = _QUOTED.match(self.line, self.pos)
        if m is None:
            raise self.error("malformed quoted string")
        self.pos = m.end()
        body = m.group(1)
        if b"\\" in body:
            body = _UNESCAPE.sub(rb"\1", body)
        if not body.isascii():
            # RFC 9051 section 9: 8-bit octets in a quoted string must be UTF-8.
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                raise self.error("quoted string is not valid UTF-8") from None
        return body

    def literal(self, *, binary_ok: bool = False) -> tuple[bytes, bool]:
        """A literal's octets and whether it was a literal8 (``~{n}``, RFC 3516)."""
        lit = self.literal_frame(binary_ok=binary_ok)
        if lit.spooled:
            # Only APPEND's message may be spooled to disk (``literal_frame``); anything
            # else that large is refused (RFC 7889 section 4, RFC 4469 TOOBIG).
            raise ParseError(self.tag, "Literal too large for this command", status="NO",
                             code="TOOBIG")
        return lit.data, lit.binary

    def literal_frame(self, *, binary_ok: bool = False) -> Literal:
        """The literal at the cursor as framed (its octets, or a spooled one's size)."""
        header = literal_header(self.line)
        if header is None or header.start != self.pos or self._idx >= len(self._literals):
            raise self.error("malformed literal")
        if header.binary and not binary_ok:
            raise self.error("literal8 is not allowed here")
        lit = self._literals[self._idx]
        if not header.binary and lit.nul:
            # RFC 9051 section 4.3: a literal is CHAR8 (no NUL); only literal8 may hold NUL.
            raise self.error("NUL in a literal (use literal8)")
        self._idx += 1
        self.line = self._lines[self._idx]
        self.pos = 0
        return lit

    def string(self) -> bytes:
        """string = quoted / literal."""
        char = self.peek()
        if char == 0x22:
            return self.quoted()
        if char == 0x7B:
            return self.literal()[0]
        raise self.error("expected a string")

    def astring(self) -> bytes:
        """astring = 1*ASTRING-CHAR / string."""
        char = self.peek()
        if char == 0x22 or char == 0x7B:
            return self.string()
        m = _ASTRING_ATOM.match(self.line, self.pos)
        if m is None:
            raise self.error("expected an atom or a string")
        self.pos = m.end()
        return m.group()

    def nstring(self) -> bytes | None:
        """nstring = string / nil."""
        if self.peek() in (0x22, 0x7B):
            return self.string()
        if self.word() is not None and self.atom().upper() == "NIL":
            return None
        raise self.error("expected a string or NIL")

    def list_mailbox(self) -> bytes:
        """list-mailbox = 1*list-char / string (RFC 9051 section 9), with "%" and "*"."""
        if self.peek() in (0x22, 0x7B):
            return self.string()
        m = _LIST_ATOM.match(self.line, self.pos)
        if m is None:
            raise self.error("expected a mailbox pattern")
        self.pos = m.end()
        return m.group()

    def number(self, *, limit: int = MAX_NUMBER, nonzero: bool = False) -> int:
        """number / nz-number / number64 / mod-sequence-value: digits up to ``limit``."""
        m = _DIGITS.match(self.line, self.pos)
        if m is None:
            raise self.error("expected a number")
        digits = m.group()
        if len(digits) > 20 or int(digits) > limit:
            raise self.error("number out of range")
        value = int(digits)
        if nonzero and value == 0:
            raise self.error("zero is not allowed here")
        self.pos = m.end()
        return value

    def text_utf8(self, raw: bytes, what: str) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"{what} is not valid UTF-8") from None

    # ------------------------------------------------------------------ structures

    def sequence_set(self, *, star: bool = True, saved: bool = True) -> SequenceSet:
        """sequence-set (RFC 9051 section 9), or "$" (RFC 5182 section 2.1). Numbers are
        nz-number: 0 is invalid. ``star`` False refuses "*" (QRESYNC known-uids)."""
        if self.take(b"$"):
            if not saved:
                raise self.error("$ is not allowed here")
            return SequenceSet(saved=True)
        ranges: list[SeqRange] = []
        while True:
            lo = self._seq_number(star)
            hi = lo
            if self.take(b":"):
                hi = self._seq_number(star)
            ranges.append(SeqRange(lo, hi))
            if not self.take(b","):
                return SequenceSet(tuple(ranges))

    def _seq_number(self, star: bool) -> int | None:
        if self.take(b"*"):
            if not star:
                raise self.error("* is not allowed here")
            return None
        if self.peek() is None or not 0x30 <= (self.peek() or 0) <= 0x39:
            raise self.error("expected a sequence set")
        return self.number(nonzero=True)

    def date(self) -> datetime:
        """date = date-text / DQUOTE date-text DQUOTE; a naive datetime at midnight (search
        dates ignore time and zone, RFC 9051 section 6.4.4)."""
        quoted = self.take(b'"')
        m = _DATE.match(self.line, self.pos)
        if m is None:
            raise self.error("expected a date like 1-Feb-1994")
        self.pos = m.end()
        if quoted:
            self.expect(b'"')
        month = _MONTHS.get(m.group(2).upper())
        try:
            if month is None:
                raise ValueError("month")
            return datetime(int(m.group(3)), month, int(m.group(1)))
        except ValueError:
            raise self.error("invalid date") from None

    def date_time(self) -> datetime:
        """date-time (RFC 9051 section 9): an aware datetime in the zone given."""
        m = _DATE_TIME.match(self.line, self.pos)
        if m is None:
            raise self.error('expected a date-time like "17-Jul-1996 02:44:25 -0700"')
        self.pos = m.end()
        day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
        month = _MONTHS.get(mon.upper())
        try:
            if month is None or int(zm) > 59:
                raise ValueError("month or zone")
            offset = timedelta(hours=int(zh), minutes=int(zm))
            tz = timezone(-offset if sign == b"-" else offset)
            # A leap second (60) is folded into the second before it.
            return datetime(int(year), month, int(day), int(hh), int(mm), min(int(ss), 59),
                            tzinfo=tz)
        except ValueError:
            raise self.error("invalid date-time") from None

    def flag(self, *, keyword_only: bool = False) -> str:
        """flag (RFC 9051 section 9): a system flag in canonical form or a keyword atom.
        ``\\Recent`` and other ``\\`` extensions are refused: clients may not set them."""
        if self.take(b"\\"):
            name = "\\" + self.atom()
            canonical = SYSTEM_FLAGS.get(name.upper())
            if keyword_only or canonical is None:
                raise self.error(f"flag {name} cannot be used here")
            return canonical
        return self.atom()

    def flag_list(self) -> tuple[str, ...]:
        """flag-list = "(" [flag *(SP flag)] ")"."""
        self.expect(b"(")
        flags: list[str] = []
        if not self.take(b")"):
            flags.append(self.flag())
            while not self.take(b")"):
                self.sp()
                flags.append(self.flag())
        return tuple(dict.fromkeys(flags))

    def mailbox(self) -> tuple[str, bytes]:
        """mailbox = "INBOX" / astring: the decoded name (UTF-8; INBOX in any case becomes
        "INBOX", RFC 9051 section 5.1) and the raw wire octets. The session applies modified
        UTF-7 decoding for IMAP4rev1 clients."""
        raw = self.astring()
        name = self.text_utf8(raw, "mailbox name")
        if name.upper() == "INBOX":
            name = "INBOX"
        return name, raw

    def paren_list(self, item: str = "item") -> list[str]:
        """``"(" atom *(SP atom) ")"``, upper-cased; at least one item."""
        self.expect(b"(")
        items = [self.keyword()]
        while not self.take(b")"):
            self.sp()
            items.append(self.keyword())
        return items
