"""IMAP framing: command lines and their literals, split before anything is parsed.

DESIGN rule 3. A command is one or more CRLF lines; a line ending in a literal header
(``{n}``, ``{n+}``, ``~{n}``, ``~{n+}``) is followed by exactly n opaque octets and then the rest
of the command on a new line (RFC 9051 section 4.3). The framer splits the stream into
``CommandFrame`` s without interpreting the grammar, so a literal's content can never be taken
for a command (literal injection) and every size is checked before anything is buffered:
each line is bounded by ``max_line``, each literal by ``max_literal``, a whole frame by
``max_line + max_literal``. Scanning uses C-level ``bytes.find``, never a Python loop per byte.
A literal over ``spool_at`` octets is not kept at all: its octets leave as ``LiteralChunk``
events while they arrive (the server writes them to a temporary file), so a large APPEND
holds no more memory than one read.

The contract, h11-style: ``receive_data(bytes)`` then ``next_event()`` until it returns
``NEED_DATA``. Events are produced lazily, so a server that gets an IDLE or AUTHENTICATE frame
can call ``expect_line()`` before the framer looks at the bytes after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

CRLF = b"\r\n"
# RFC 7162 section 4: servers SHOULD accept command lines of at least 8192 octets; clients
# send long UID sets after a resync, so we allow much more by default.
DEFAULT_MAX_LINE = 64 * 1024
DEFAULT_MAX_LITERAL = 64 * 1024 * 1024
# RFC 9051 section 9: tag = 1*<any ASTRING-CHAR except "+">.
_TAG = re.compile(rb"[\x21\x23-\x24\x26-\x27\x2c-\x5b\x5d-\x7a\x7c-\x7e]+")
# RFC 9051 section 9: literal = "{" number64 ["+"] "}" CRLF; literal8 = "~{" number64 "}"
# (RFC 3516 section 4.1, RFC 7888 section 3 for the "+" of a non-synchronising literal).
_HEADER = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}\Z")
_TAG_PEEK = 64  # longest tag echoed in an error reply for a line the framer refused
_HEADER_TAIL = 26  # longest header: "~{" + 20 digits + "+}"; kept from a discarded line


class Sentinel(Enum):
    NEED_DATA = "NEED_DATA"


NEED_DATA = Sentinel.NEED_DATA


@dataclass(frozen=True, slots=True)
class LiteralHeader:
    """A literal announced at the end of a line; ``start`` is where ``{`` (or ``~``) begins."""

    start: int
    size: int
    sync: bool  # False for LITERAL+ ``{n+}`` (RFC 7888): no continuation request
    binary: bool  # literal8 ``~{n}`` (RFC 3516): may contain NUL


def literal_header(line: bytes) -> LiteralHeader | None:
    """The literal header ending ``line``, if it ends in one; the parser uses the same rule."""
    if not line.endswith(b"}"):
        return None
    m = _HEADER.search(line, max(0, len(line) - _HEADER_TAIL))
    if m is None:
        return None
    return LiteralHeader(m.start(), int(m.group(2)), not m.group(3), bool(m.group(1)))


def tag_of(line: bytes) -> str | None:
    """The tag at the start of a command line, or None when it is not a valid tag. Only the
    first ``_TAG_PEEK`` octets are looked at, so an error reply never echoes a huge tag."""
    m = _TAG.match(line, 0, _TAG_PEEK + 1)
    if m is None or m.end() > _TAG_PEEK or (m.end() < len(line) and line[m.end()] != 0x20):
        return None
    return m.group().decode("ascii")


@dataclass(frozen=True, slots=True)
class Literal:
    """A literal's octets, or (``spooled``) only their size and whether a NUL was among
    them, when they went out as ``LiteralChunk`` events instead."""

    data: bytes
    binary: bool = False  # sent as literal8 (``~{n}``)
    spooled: bool = False
    size: int = 0  # octets of a spooled literal (``len(data)`` otherwise)
    has_nul: bool = False  # a spooled literal held a NUL octet

    @property
    def nul(self) -> bool:
        """RFC 9051 section 4.3: only a literal8 may hold NUL; the parser checks this."""
        return self.has_nul if self.spooled else b"\x00" in self.data


@dataclass(frozen=True, slots=True)
class CommandFrame:
    """A complete command: ``lines`` without CRLF, ``literals[i]`` following ``lines[i]``
    (whose end is the literal header, left in place), so ``len(lines) == len(literals) + 1``."""

    lines: tuple[bytes, ...]
    literals: tuple[Literal, ...] = ()

    @property
    def tag(self) -> str | None:
        return tag_of(self.lines[0])


@dataclass(frozen=True, slots=True)
class NeedContinuation:
    """A synchronising literal was announced: send ``+ Ready for literal data`` (RFC 9051
    section 7.5) and feed the data; the framer is already waiting for its octets."""

    tag: str | None
    size: int


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """A line went over ``max_line`` (or the frame over its total budget): answer
    ``<tag> BAD`` (``* BAD`` when ``tag`` is None). The rest of the command, including any
    LITERAL+ octets it announces, is discarded silently."""

    tag: str | None


@dataclass(frozen=True, slots=True)
class LiteralTooBig:
    """A literal over ``max_literal``: answer ``<tag> NO [TOOBIG]`` (RFC 7889 section 4).

    For a synchronising literal (``sync``) the client sends nothing more for this command and
    framing goes on. A non-synchronising one (``{n+}``) is on its way already and could be
    gigabytes long: the framer stops (``CommandFramer.closed``) and the server answers
    ``NO [TOOBIG]``, then ``* BYE``, and closes (RFC 7888 section 4 allows it)."""

    tag: str | None
    size: int
    sync: bool = True


@dataclass(frozen=True, slots=True)
class LiteralChunk:
    """Octets of a literal over ``spool_at``, in order as they arrive; ``end`` on the last
    one. The frame that follows carries a ``spooled`` ``Literal`` in its place."""

    data: bytes
    end: bool


@dataclass(frozen=True, slots=True)
class RawLine:
    """The line asked for by ``expect_line()``: IDLE's ``DONE``, an AUTHENTICATE response."""

    data: bytes


Event = CommandFrame | NeedContinuation | LineTooLong | LiteralTooBig | LiteralChunk | RawLine


class CommandFramer:
    """Splits the client's byte stream into command frames and the events around them.

    Memory held is bounded by ``max_line + max_literal`` per command plus what the server has
    fed and not yet pulled, whatever the client sends.
    """

    __slots__ = (
        "_buf", "_chunks", "_discard", "_expect", "_left", "_lines", "_lit_binary",
        "_literals", "_long", "_long_raw", "_nul", "_scanned", "_size", "_spool",
        "_spool_size", "_spooled", "_tag", "_tail", "closed", "max_line", "max_literal",
        "max_spooled", "spool_at",
    )

    def __init__(
        self,
        max_line: int = DEFAULT_MAX_LINE,
        max_literal: int = DEFAULT_MAX_LITERAL,
        spool_at: int | None = None,
    ) -> None:
        self.max_line = max_line  # octets per line, CRLF included
        # The server may change both limits between commands (a smaller literal limit
        # before authentication); they apply from the next line framed.
        self.max_literal = max_literal
        self.spool_at = spool_at  # literals over this many octets leave as LiteralChunk
        # Octets of spooled literals one command may send in all (RFC 3502 MULTIAPPEND and
        # RFC 4469 CATENATE send several); None: ``max_literal``, one literal's worth. They
        # go to disk, not memory, so they do not count against ``max_line + max_literal``.
        self.max_spooled: int | None = None
        self._spooled = 0  # octets of spooled literals in the command being framed
        self._buf = bytearray()
        self._scanned = 0  # bytes at the front of _buf known to hold no CRLF (but a final CR)
        self._lines: list[bytes] = []  # lines of the command being framed
        self._literals: list[Literal] = []
        self._size = 0  # octets in _lines and _literals
        self._tag: str | None = None
        self._left = 0  # octets of the current literal still to come
        self._lit_binary = False
        self._chunks: list[bytes] = []  # pieces of the current literal (when kept)
        self._spool = False  # the current literal goes out as LiteralChunk events
        self._nul = False  # ... and a NUL was among its octets so far
        self._spool_size = 0
        self._discard = False  # dropping the rest of the current command
        self._long = False  # inside an over-long line: drop up to the next CRLF
        self._long_raw = False  # ... which was an expect_line() line
        self._tail = b""  # last octets of the over-long line, to spot a LITERAL+ header
        self._expect = False
        # Set after a LiteralTooBig with sync False: the rest of the stream is never framed.
        self.closed = False

    # ------------------------------------------------------------------ server API

    def receive_data(self, data: bytes) -> None:
        """Append bytes from the client; then pull events with ``next_event``."""
        if not self.closed:
            self._buf += data

    def expect_line(self) -> None:
        """Deliver the next line whole as a ``RawLine`` rather than framing it as a command
        (IDLE's ``DONE``, RFC 2177; AUTHENTICATE responses, RFC 9051 section 6.2.2)."""
        self._expect = True

    def take_buffered(self) -> bytes:
        """Remove and return the bytes not framed yet: after STARTTLS they are discarded
        (RFC 9051 section 6.2.1: no plaintext injection); after COMPRESS they are
        decompressed and fed back."""
        data = bytes(self._buf)
        self._buf.clear()
        self._scanned = 0
        return data

    @property
    def in_command(self) -> bool:
        """True between the first line of a command and its end (for timeouts and logs)."""
        return bool(self._lines) or self._left > 0 or self._discard or self._long

    def next_event(self) -> Event | Sentinel:
        """The next event, or ``NEED_DATA`` when more bytes are needed."""
        buf = self._buf
        while True:
            if self.closed:
                buf.clear()
                return NEED_DATA
            if self._left:
                take = min(self._left, len(buf))
                if not take:
                    return NEED_DATA
                if self._spool and not self._discard:
                    chunk = bytes(buf[:take])
                    del buf[:take]
                    self._left -= take
                    self._nul = self._nul or b"\x00" in chunk
                    if not self._left:
                        self._spool = False
                        self._literals.append(Literal(
                            b"", self._lit_binary, spooled=True,
                            size=self._spool_size, has_nul=self._nul))
                    return LiteralChunk(chunk, end=not self._left)
                if not self._discard:
                    self._chunks.append(bytes(buf[:take]))
                del buf[:take]
                self._left -= take
                if self._left:
                    return NEED_DATA
                if not self._discard:
                    self._literals.append(Literal(b"".join(self._chunks), self._lit_binary))
                    self._chunks.clear()
                continue
            end = buf.find(CRLF, max(0, self._scanned - 1))
            if end < 0:
                event = self._partial_line()
                if event is not None:
                    return event
                return NEED_DATA
            line = bytes(buf[:end])
            del buf[: end + 2]
            self._scanned = 0
            if self._long:
                self._long = False
                if self._long_raw:
                    continue  # the rest of an over-long expect_line() line
                line = self._tail + line
                self._tail = b""
                fatal = self._end_discarded_line(line)
                if fatal is not None:
                    return fatal
                continue
            framed = self._line(line)
            if framed is not None:
                return framed

    # ------------------------------------------------------------------ internals

    def _reset(self) -> None:
        self._lines = []
        self._literals = []
        self._size = 0
        self._spooled = 0
        self._tag = None
        self._discard = False

    def _partial_line(self) -> LineTooLong | None:
        """No CRLF in the buffer yet: keep it, or start discarding an over-long line."""
        buf = self._buf
        keep = 1 if buf.endswith(b"\r") else 0  # maybe the first half of the CRLF
        if self._long:
            end = len(buf) - keep
            self._tail = (self._tail + bytes(buf[max(0, end - _HEADER_TAIL) : end]))[
                -_HEADER_TAIL:
            ]
            del buf[: len(buf) - keep]
            self._scanned = len(buf)
            return None
        if len(buf) + 2 - keep <= self.max_line - self._budget_used():
            self._scanned = len(buf)
            return None
        # RFC 7162 section 4 lets servers cap line length; a line that can no longer fit is
        # refused now, without buffering the rest of it.
        raw = self._expect and not self._lines
        self._long, self._long_raw = True, raw
        self._tail = bytes(buf[max(0, len(buf) - keep - _HEADER_TAIL) : len(buf) - keep])
        tag = self._tag if self._lines or self._discard else tag_of(bytes(buf[: _TAG_PEEK + 1]))
        del buf[: len(buf) - keep]
        self._scanned = len(buf)
        if raw:
            self._expect = False
            return LineTooLong(None)  # not a command: no tag to answer with
        already = self._discard
        self._reset()
        self._discard = True
        self._tag = tag  # for a LiteralTooBig the discarded command may still cause
        return None if already else LineTooLong(tag)

    def _budget_used(self) -> int:
        """Octets a continuation line may not use: the frame's total stays within
        max_line + max_literal."""
        if not self._lines:
            return 0
        return max(0, self._size - self.max_literal)

    def _end_discarded_line(self, line: bytes) -> LiteralTooBig | None:
        """A line of a command being discarded ended; skip the LITERAL+ octets it announces
        (the client sends them unasked), else the command is over. Skipping is bounded by
        ``max_literal``: a bigger LITERAL+ ends the connection instead."""
        header = literal_header(line)
        if header is not None and not header.sync:
            if header.size > self.max_literal:
                return self._refuse_non_sync(self._tag, header.size)
            self._left = header.size
            return None
        self._reset()
        return None

    def _refuse_non_sync(self, tag: str | None, size: int) -> LiteralTooBig:
        """RFC 7888 section 4: a LITERAL+ over the limit may be rejected by closing the
        connection; reading and discarding it would let one client tie up a connection for
        up to 2^63 octets, so framing stops here for good."""
        self._reset()
        self._left = 0
        self.closed = True
        self._buf.clear()
        return LiteralTooBig(tag, size, sync=False)

    def _line(self, line: bytes) -> Event | None:
        if self._expect and not self._lines:
            self._expect = False
            if len(line) + 2 > self.max_line:
                return LineTooLong(None)
            return RawLine(line)
        if self._discard:
            return self._end_discarded_line(line)
        if not self._lines:
            self._tag = tag_of(line)
        if len(line) + 2 > self.max_line - self._budget_used():
            tag = self._tag
            self._reset()
            self._discard = True
            self._tag = tag
            fatal = self._end_discarded_line(line)
            return fatal if fatal is not None else LineTooLong(tag)
        header = literal_header(line)
        self._lines.append(line)
        self._size += len(line)
        if header is None:
            frame = CommandFrame(tuple(self._lines), tuple(self._literals))
            self._reset()
            return frame
        n = header.size
        # A large literal (an APPEND message, in practice) is not held in memory: the
        # server spools it to disk from LiteralChunk events.
        spool = self.spool_at is not None and n > self.spool_at
        spool_limit = self.max_literal if self.max_spooled is None else self.max_spooled
        if n > self.max_literal or (
            self._spooled + n > spool_limit if spool
            else self._size + n > self.max_line + self.max_literal
        ):
            tag = self._tag
            self._reset()
            if header.sync:
                # RFC 7889 section 4 / RFC 9051 section 7.1: NO [TOOBIG] instead of "+";
                # the client sends neither the literal nor the rest of the command.
                return LiteralTooBig(tag, n)
            # RFC 7888 section 4: the octets of a non-synchronising literal come anyway;
            # rather than read them all, refuse and close.
            return self._refuse_non_sync(tag, n)
        if spool:
            self._spooled += n
        else:
            self._size += n
        self._left = n
        self._lit_binary = header.binary
        self._chunks = []
        self._spool = spool
        self._spool_size, self._nul = n, False
        if n == 0:
            self._literals.append(Literal(b"", header.binary))
        if header.sync:
            return NeedContinuation(self._tag, n)
        return None
