"""SMTP framing: command lines, DATA content and BDAT chunks, split before anything is parsed.

DESIGN rule 3. The only line terminator is CRLF (RFC 5321 section 2.3.8): a bare CR or bare
LF never ends a command line, never ends the data and never starts a line, so none of the
SMTP smuggling variants (``\\n.\\n``, ``\\r.\\r``, ``\\r\\n.\\n``, ...) can end a message or
start a second transaction; such input is refused as a whole. Every frame has a hard size
limit and memory stays bounded whatever the peer sends. All scanning uses ``bytes.find``-style
C loops, never a Python loop per byte.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

CRLF = b"\r\n"
# RFC 5321 section 4.1.1.4: the end of mail data is CRLF "." CRLF. The data stream is scanned
# as if it began with the CRLF that ended the DATA command, so an empty message (".\r\n"
# right after the 354 reply) is found by the same search.
END_OF_DATA = b"\r\n.\r\n"


class LineProblem(Enum):
    TOO_LONG = "too long"  # over the limit; the rest up to the next CRLF was discarded
    BARE_EOL = "bare CR or LF"  # the line held a CR or LF that was not part of its CRLF


@dataclass(frozen=True, slots=True)
class BadLine:
    """A command line that was dropped whole; the core answers it with 500 5.5.2."""

    problem: LineProblem


class LineReader:
    """Extracts CRLF-terminated lines from a buffer with a hard length limit.

    Lines longer than the limit are reported once and skipped up to the next CRLF without
    keeping them in memory.
    """

    __slots__ = ("_discarding", "_scanned")

    def __init__(self) -> None:
        self._discarding = False  # inside an over-long line: drop bytes up to the next CRLF
        self._scanned = 0  # bytes of the buffer known to contain no CRLF (minus a final CR)

    def reset(self) -> None:
        self._discarding = False
        self._scanned = 0

    def read_line(self, buf: bytearray, limit: int) -> bytes | BadLine | None:
        """Take one line (without its CRLF) from the front of ``buf``; None when incomplete.

        ``limit`` counts the CRLF, as RFC 5321 section 4.5.3.1.4 does.
        """
        start = max(0, self._scanned - 1)
        end = buf.find(CRLF, start)
        if self._discarding:
            if end < 0:
                # Keep a final CR: it may be the first half of the CRLF we wait for.
                keep = 1 if buf.endswith(b"\r") else 0
                del buf[: len(buf) - keep]
                self._scanned = len(buf)
                return None
            del buf[: end + 2]
            self._discarding = False
            self._scanned = 0
            return None if not buf else self.read_line(buf, limit)
        if end < 0:
            if len(buf) > limit - (1 if buf.endswith(b"\r") else 2):
                # RFC 5321 section 4.5.3.1.4: too long already, whatever comes next.
                self._discarding = True
                keep = 1 if buf.endswith(b"\r") else 0
                del buf[: len(buf) - keep]
                self._scanned = len(buf)
                return BadLine(LineProblem.TOO_LONG)
            self._scanned = len(buf)
            return None
        self._scanned = 0
        line = bytes(buf[:end])
        del buf[: end + 2]
        if end + 2 > limit:
            return BadLine(LineProblem.TOO_LONG)
        if b"\r" in line or b"\n" in line:
            # RFC 5321 section 2.3.8: only CRLF ends a line; a bare CR or LF is never one.
            return BadLine(LineProblem.BARE_EOL)
        return line


class DataProblem(Enum):
    BARE_EOL = "bare CR or LF"
    TOO_BIG = "too big"
    LINE_TOO_LONG = "line too long"


@dataclass(frozen=True, slots=True)
class DataDone:
    """The end of the data was seen. ``content`` is the dot-unstuffed message (empty when a
    problem made the core stop keeping it, or when it went to the reader's ``out``);
    ``problem`` is the first fault found, or None."""

    content: bytes
    problem: DataProblem | None
    size: int  # octets of content seen (dot-unstuffed), even when it was not kept


class DataReader:
    """Reads DATA content up to CRLF "." CRLF with dot-unstuffing (RFC 5321 section 4.5.2).

    Faults are recorded but reading goes on to the real end of the data, so the client gets
    one reply at the end and no byte of the message is ever taken as a command. After a
    fault only a few bytes are retained, whatever the message size. With ``out`` the
    unstuffed content is handed to it block by block as it arrives instead of being kept, so
    the reader holds at most a partial line plus one read; once a fault is found nothing more
    is handed out (the caller discards what it got).
    """

    __slots__ = ("_buf", "_chunks", "_max_line", "_max_size", "_midline", "_out",
                 "_problem", "_size")

    def __init__(
        self, max_size: int, max_line: int, out: Callable[[bytes], None] | None = None
    ) -> None:
        self._out = out
        self._max_size = max_size
        self._max_line = max_line
        self._buf = bytearray(CRLF)  # unprocessed data; starts with the CRLF ending a line
        self._midline = False  # True: _buf starts inside an over-long line, not with CRLF
        self._chunks: list[bytes] = []
        self._size = 0
        self._problem: DataProblem | None = None

    def _fault(self, problem: DataProblem) -> None:
        # A bare CR/LF outranks the other faults: it is the smuggling signal worth reporting.
        if self._problem is None or problem is DataProblem.BARE_EOL:
            self._problem = problem
        self._chunks.clear()

    def feed(self, inbuf: bytearray) -> DataDone | None:
        """Consume ``inbuf``; when the data ends, return DataDone and leave in ``inbuf`` the
        bytes that follow the end of data (pipelined commands)."""
        buf = self._buf
        buf += inbuf
        inbuf.clear()
        if self._midline:
            end = buf.find(CRLF)
            if end < 0:
                keep = 1 if buf.endswith(b"\r") else 0
                self._note_bare(bytes(buf[: len(buf) - keep]))
                self._size += len(buf) - keep
                del buf[: len(buf) - keep]
                return None
            self._note_bare(bytes(buf[:end]))
            self._size += end + 2  # the CRLF ending the line is content too
            del buf[:end]
            self._midline = False
        end = buf.find(END_OF_DATA)
        if end >= 0:
            self._take(bytes(buf[: end + 2]))
            inbuf += buf[end + 5 :]
            buf.clear()
            content = b"".join(self._chunks) if self._problem is None else b""
            self._chunks.clear()
            return DataDone(content, self._problem, self._size)
        last = buf.rfind(CRLF)
        if last > 0:
            self._take(bytes(buf[: last + 2]))
            del buf[:last]
        # buf is now CRLF + a partial line (no CRLF inside).
        partial = len(buf) - 2 - (1 if buf.endswith(b"\r") else 0)
        if partial > self._max_line:
            # RFC 5322 section 2.1.1: at most 998 octets plus CRLF; drop the line's body.
            self._fault(DataProblem.LINE_TOO_LONG)
            keep = 1 if buf.endswith(b"\r") else 0
            self._note_bare(bytes(buf[2 : len(buf) - keep]))
            # Counted as unstuffed, as _take would: a leading "." is not content.
            self._size += len(buf) - 2 - keep - (1 if buf[2:3] == b"." else 0)
            del buf[: len(buf) - keep]
            self._midline = True
        return None

    def _note_bare(self, text: bytes) -> None:
        if b"\r" in text or b"\n" in text:
            self._fault(DataProblem.BARE_EOL)

    def _take(self, block: bytes) -> None:
        """Process complete lines: ``block`` is CRLF + lines, each ending in CRLF."""
        body = block[2:]
        crlf = body.count(CRLF)
        if body.count(b"\r") != crlf or body.count(b"\n") != crlf:
            # RFC 5321 section 2.3.8: a bare CR or LF in the content is refused (smuggling).
            self._fault(DataProblem.BARE_EOL)
        if len(body) > self._max_line + 2 and max(map(len, body.split(CRLF))) > self._max_line:
            self._fault(DataProblem.LINE_TOO_LONG)
        # RFC 5321 section 4.5.2: a line starting with "." loses that first ".".
        unstuffed = block.replace(b"\r\n.", CRLF)[2:]
        self._size += len(unstuffed)
        if self._size > self._max_size:
            # RFC 1870 section 6.3: refuse after the end of data; keep nothing meanwhile.
            self._fault(DataProblem.TOO_BIG)
        if self._problem is None and unstuffed:
            if self._out is not None:
                self._out(unstuffed)
            else:
                self._chunks.append(unstuffed)


class LineEndCheck:
    """Judges the line ends of a BDAT message as DATA's are judged: every CR must be followed
    by LF and every LF preceded by CR, across chunk boundaries (a CR ending one chunk and the
    LF starting the next are one CRLF).

    RFC 5321 section 2.3.8 and RFC 5322 section 2.3: a bare CR or LF is not a line end, yet
    downstream parsers (IMAP clients, the outbound peer, DKIM verifiers) read a bare LF as
    one; refusing it here means every later reader sees the same header lines as our checks.
    With BODY=BINARYMIME (RFC 3030 section 3) the body may hold any octet, so only the header
    section, up to its empty line, is judged then.
    """

    __slots__ = ("_done", "_header_only", "_tail", "fault")

    def __init__(self, header_only: bool) -> None:
        self._header_only = header_only
        # The last octets judged (at most 3), to find the empty line that ends the header
        # across chunks and to pair a final CR with the next chunk's LF. It starts as the CRLF
        # that ended the BDAT command, so an empty header ("\r\n" first) ends at once.
        self._tail = CRLF
        self._done = False  # header_only: the header ended, nothing more to judge
        self.fault = False

    def feed(self, piece: bytes) -> None:
        """Judge the next octets of the message."""
        if self.fault or self._done or not piece:
            return
        if self._header_only:
            end = (self._tail + piece).find(b"\r\n\r\n")
            if end >= 0:
                piece = piece[: end + 4 - len(self._tail)]
                self._done = True
        pending = self._tail.endswith(b"\r")
        text = b"\r" + piece if pending else piece
        # A final CR is judged with the next piece (or at the end of the message).
        crs = text.count(b"\r") - (1 if text.endswith(b"\r") else 0)
        pairs = text.count(CRLF)
        if crs != pairs or text.count(b"\n") != pairs:
            self.fault = True
        self._tail = (self._tail + piece)[-3:]

    def finish(self) -> None:
        """The message is complete: a CR at its very end had no LF."""
        if not self._done and self._tail.endswith(b"\r"):
            self.fault = True


class BdatReader:
    """Reads exactly ``size`` octets of one BDAT chunk (RFC 3030 section 2), keeping them
    only when ``keep`` is set; the octets are opaque (CRLF "." CRLF means nothing here)
    except to ``check``, which judges their line ends as they arrive. With ``out`` the kept
    octets are handed to it as they arrive instead (the chunk returned is then empty), so a
    large chunk is never held whole."""

    __slots__ = ("_check", "_chunks", "_keep", "_out", "remaining")

    def __init__(self, size: int, keep: bool, out: Callable[[bytes], None] | None = None,
                 check: LineEndCheck | None = None) -> None:
        self._out = out
        self.remaining = size
        self._keep = keep
        self._check = check
        self._chunks: list[bytes] = []

    def feed(self, inbuf: bytearray) -> bytes | None:
        """Consume up to the chunk's end from ``inbuf``; return the chunk when complete (empty
        when not kept), leaving any following bytes in ``inbuf``."""
        take = min(self.remaining, len(inbuf))
        if take:
            piece = bytes(inbuf[:take]) if self._keep else b""
            if self._check is not None:
                self._check.feed(piece)
                if self._check.fault:
                    self._keep = False  # refused at the chunk's end: keep nothing meanwhile
                    self._chunks.clear()
            if self._keep and self._out is not None:
                self._out(piece)
            elif self._keep:
                self._chunks.append(piece)
            del inbuf[:take]
            self.remaining -= take
        if self.remaining:
            return None
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def dot_stuff(body: bytes) -> bytes:
    """The DATA form of ``body`` (CRLF lines), terminator included (RFC 5321 section 4.5.2);
    for clients and tests."""
    if body and not body.endswith(CRLF):
        body += CRLF
    stuffed = (CRLF + body).replace(b"\r\n.", b"\r\n..")[2:]
    return stuffed + b".\r\n"
