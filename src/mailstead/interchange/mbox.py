"""mbox files: a streaming reader for mboxrd, mboxo and Content-Length mboxes (Thunderbird,
Apple Mail, Python's ``mailbox``, Solaris), and an mboxrd writer.

The formats are described in RFC 4155 (``application/mbox``) and in the qmail ``mbox(5)``
page (mboxrd quoting). The reader holds one message in memory at a time, never the file.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Literal

Format = Literal["mboxrd", "mboxo", "auto"]

# A line is read in chunks of this size, so a file without line breaks costs bounded memory.
_CHUNK = 1 << 16
SIDECAR_SUFFIX = ".mailstead.jsonl"
_FROM = b"From "
_QUOTED = re.compile(rb"^>+From ")
# asctime as in the From_ line (RFC 4155 section 2): "Mon Dec  7 16:52:30 2026", optionally
# with a zone before the year as some writers add.
_FROM_DATE = re.compile(
    rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) +(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +"
    rb"(\d{1,2}) +(\d{1,2}):(\d{2})(?::(\d{2}))?(?: +[A-Za-z+-][A-Za-z0-9+-]{0,5})? +(\d{4})"
)
_MONTHS = {m.encode(): i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
# Thunderbird's X-Mozilla-Status bits (mailnews/base/public/nsMsgMessageFlags.idl).
_MOZILLA_BITS = ((0x0001, "\\Seen"), (0x0002, "\\Answered"), (0x0004, "\\Flagged"),
                 (0x0008, "\\Deleted"), (0x1000, "$Forwarded"))
# Status: and X-Status: letters as mutt, Pine, Apple Mail and Python's mailbox write them.
_STATUS_LETTERS = {b"R": "\\Seen"}
_XSTATUS_LETTERS = {b"A": "\\Answered", b"F": "\\Flagged", b"D": "\\Deleted", b"T": "\\Draft"}


@dataclass(frozen=True, slots=True)
class MboxMessage:
    """One message of an mbox, unquoted; ``origin`` is its byte offset and SHA-256."""

    data: bytes
    flags: tuple[str, ...]
    internal_date: float
    origin: str
    offset: int


@dataclass(frozen=True, slots=True)
class MboxFailure:
    """A message the reader could not take (too large), counted and reported."""

    offset: int
    reason: str


def from_line_date(line: bytes) -> float | None:
    """The Unix time of a From_ line's asctime date, read as UTC; None when absent."""
    match = _FROM_DATE.search(line)
    if match is None:
        return None
    month, day, hour, minute, second, year = match.groups()
    try:
        stamp = calendar.timegm((int(year), _MONTHS[month], int(day), int(hour),
                                 int(minute), int(second or 0), 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    return float(stamp)


def header_block(data: bytes) -> bytes:
    """The header section of a message (up to the first empty line)."""
    for sep in (b"\n\n", b"\r\n\r\n"):
        end = data.find(sep)
        if end >= 0:
            return data[: end + 1]
    return data


def _header_values(headers: bytes, name: bytes) -> list[bytes]:
    values: list[bytes] = []
    prefix = name.lower() + b":"
    for line in headers.split(b"\n"):
        if line.lower().startswith(prefix):
            values.append(line[len(prefix):].strip())
    return values


def flags_from_headers(headers: bytes) -> tuple[str, ...]:
    """Flags from ``X-Mozilla-Status`` (Thunderbird), else ``Status:``/``X-Status:``."""
    flags: list[str] = []
    mozilla = _header_values(headers, b"X-Mozilla-Status")
    if mozilla:
        try:
            bits = int(mozilla[0][:8], 16)
        except ValueError:
            bits = 0
        flags = [flag for bit, flag in _MOZILLA_BITS if bits & bit]
        return tuple(flags)
    for name, table in ((b"Status", _STATUS_LETTERS), (b"X-Status", _XSTATUS_LETTERS)):
        for value in _header_values(headers, name)[:1]:
            for i in range(min(len(value), 16)):
                flag = table.get(value[i:i + 1])
                if flag is not None and flag not in flags:
                    flags.append(flag)
    return tuple(flags)


def _date_header(headers: bytes) -> float | None:
    import email.utils

    for value in _header_values(headers, b"Date")[:1]:
        try:
            parsed = email.utils.parsedate_tz(value.decode("latin-1"))
        except (ValueError, IndexError, TypeError):
            return None
        if parsed is None:
            return None
        try:
            return float(email.utils.mktime_tz(parsed))
        except (ValueError, OverflowError):
            return None
    return None


def _content_length(headers: bytes) -> int | None:
    for value in _header_values(headers, b"Content-Length")[:1]:
        if value.isdigit() and len(value) < 19:
            return int(value)
    return None


class _Lines:
    """Lines of a binary file in chunks of at most ``_CHUNK`` octets, with their offsets and
    whether each chunk starts a line."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._at_start = True
        self.pending: tuple[int, bytes, bool] | None = None

    def next(self) -> tuple[int, bytes, bool] | None:
        if self.pending is not None:
            item, self.pending = self.pending, None
            return item
        offset = self._f.tell()
        chunk = self._f.readline(_CHUNK)
        if not chunk:
            return None
        starts = self._at_start
        self._at_start = chunk.endswith(b"\n")
        return offset, chunk, starts

    def seek(self, offset: int) -> None:
        self.pending = None
        self._f.seek(offset)
        self._at_start = True


def _unquote(line: bytes, fmt: str) -> bytes:
    # mboxrd (qmail mbox(5)): every ">*From " line got one more ">"; remove one.
    # mboxo: only "From " got a ">", so ">From " loses it and ">>From " stays as written.
    if fmt == "mboxrd":
        return line[1:]
    return line[1:] if line.startswith(b">From ") else line


def read_sidecar(path: str) -> dict[str, dict[str, object]]:
    """Our own sidecar of an exported mbox: origin -> {"flags", "internal_date",
    "unterminated"}; bad lines are skipped, a missing file is an empty map."""
    result: dict[str, dict[str, object]] = {}
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed by the with below)
    except OSError:
        return result
    with f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("origin"), str):
                result[record["origin"]] = record
    return result


def read_mbox(f: BinaryIO, fmt: Format = "auto", max_size: int = 64 << 20,
              now: float | None = None,
              sidecar: dict[str, dict[str, object]] | None = None,
              ) -> Iterator[MboxMessage | MboxFailure]:
    """Every message of the mbox ``f`` (opened in binary, seekable), one at a time.

    A message starts at a line beginning ``From `` (RFC 4155 section 2) at the start of the
    file or after an empty line, and its last line break before the next one belongs to the
    separator. When the headers carry a Content-Length that lands exactly on the end of the
    file or on the next From_ line (Solaris and Apple ``mboxcl2``), the body is taken as
    counted, unquoted. ``auto`` reads mboxrd, except for Thunderbird's messages
    (X-Mozilla-Status), which are mboxo: the two quotings only differ on lines starting with
    ``>>From ``, which mboxrd writers produce from ``>From `` and mboxo writers never change,
    so for every file without such a line the result is the same either way.
    Messages over ``max_size`` are skipped whole and yielded as ``MboxFailure``. A
    ``sidecar`` (``read_sidecar``) of our own export gives back flags and exact dates.
    """
    lines = _Lines(f)
    first = lines.next()
    # Skip anything before the first From_ line (some exports start with a blank line).
    while first is not None and not (first[2] and first[1].startswith(_FROM)):
        first = lines.next()
    current = first
    while current is not None:
        start, from_line, _ = current
        body_start = start + len(from_line)
        chunks: list[bytes] = []
        size = 0
        too_big = False
        in_headers = True
        headers = b""
        prev_blank = False
        nxt: tuple[int, bytes, bool] | None = None
        cl_done = False
        while True:
            item = lines.next()
            if item is None:
                break
            offset, line, starts = item
            if starts and line.startswith(_FROM) and (prev_blank or offset == body_start):
                nxt = item
                break
            prev_blank = starts and line in (b"\n", b"\r\n")
            if in_headers and starts and line in (b"\n", b"\r\n"):
                in_headers = False
                headers = b"".join(chunks)
                length = _content_length(headers)
                if length is not None and length <= max_size:
                    counted = _try_counted(f, offset + len(line), length)
                    if counted is not None:
                        chunks.append(line)
                        chunks.append(counted[0])
                        size += len(line) + len(counted[0])
                        lines.seek(counted[1])
                        cl_done = True
                        nxt = lines.next()
                        break
            if not too_big:
                if starts and _QUOTED.match(line):
                    mozilla = in_headers is False and b"x-mozilla-status" in headers.lower()
                    mboxo = fmt == "mboxo" or (fmt == "auto" and mozilla)
                    line = _unquote(line, "mboxo" if mboxo else "mboxrd")
                size += len(line)
                if size > max_size:
                    too_big = True
                    chunks = []
                else:
                    chunks.append(line)
        if too_big:
            yield MboxFailure(start, f"message larger than {max_size} octets")
        else:
            data = b"".join(chunks)
            if not cl_done and nxt is not None:
                # The empty line before the next From_ line is the separator.
                if data.endswith(b"\r\n"):
                    data = data[:-2]
                elif data.endswith(b"\n"):
                    data = data[:-1]
            elif not cl_done and (data.endswith(b"\n\n") or data.endswith(b"\r\n\r\n")):
                # The last message: its final empty line is the separator writers append.
                data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
            if in_headers:
                headers = data
            origin = f"{start}:{hashlib.sha256(data).hexdigest()}"
            date = from_line_date(from_line) or _date_header(headers)
            flags = flags_from_headers(headers)
            ours = (sidecar or {}).get(origin)
            if ours is not None:
                flags, date, data = _apply_sidecar(ours, flags, date, data)
            yield MboxMessage(
                data=data,
                flags=flags,
                internal_date=date if date is not None else (time.time() if now is None else now),
                origin=origin,
                offset=start,
            )
        current = nxt


def _apply_sidecar(record: dict[str, object], flags: tuple[str, ...], date: float | None,
                   data: bytes) -> tuple[tuple[str, ...], float | None, bytes]:
    raw_flags = record.get("flags")
    if isinstance(raw_flags, list) and all(isinstance(x, str) for x in raw_flags):
        flags = tuple(str(x) for x in raw_flags)
    raw_date = record.get("internal_date")
    if isinstance(raw_date, (int, float)) and not isinstance(raw_date, bool):
        date = float(raw_date)
    if record.get("unterminated") is True and data.endswith(b"\n"):
        data = data[:-1]
    return flags, date, data


def _try_counted(f: BinaryIO, body_at: int, length: int) -> tuple[bytes, int] | None:
    """The body of ``length`` octets at ``body_at`` and the offset of what follows, when
    what follows is the end of the file or (after one optional empty line) a From_ line."""
    f.seek(body_at)
    body = f.read(length)
    after = f.tell()
    tail = f.read(len(_FROM) + 2)
    if len(body) == length:
        if tail == b"":
            return body, after
        for skip in (b"\n", b"\r\n", b""):
            if tail.startswith(skip) and tail[len(skip):].startswith(_FROM):
                return body, after + len(skip)
    f.seek(body_at)
    return None


def asctime(stamp: float) -> str:
    """The From_ line date (RFC 4155 section 2, asctime in UTC)."""
    return time.strftime("%a %b %e %H:%M:%S %Y", time.gmtime(stamp))


class MboxWriter:
    """Writes one mboxrd file (every ``>*From `` line gets one more ``>``) and its sidecar.

    The message bytes stay exactly as stored: flags and the exact internal date go to the
    sidecar ``FILE.mailstead.jsonl`` (one JSON line per message, keyed by the origin the
    reader will compute: byte offset and SHA-256), not into Status headers, so an import of
    the export gives back the same octets. Other programs see a plain mboxrd with the
    internal date in the From_ line.
    """

    def __init__(self, path: str) -> None:
        # "x": never overwrite a file; both stay open until close().
        self._f = open(path, "xb")  # noqa: SIM115
        self._side = open(path + SIDECAR_SUFFIX, "xb")  # noqa: SIM115

    def add(self, data: bytes, flags: Sequence[str], internal_date: float) -> int:
        """Append one message; returns the octets written."""
        offset = self._f.tell()
        header = f"From MAILER-DAEMON {asctime(internal_date)}\n".encode("ascii")
        out = [header]
        for line in data.splitlines(keepends=True):
            out.append(b">" + line if _QUOTED.match(line) or line.startswith(_FROM) else line)
        unterminated = not data.endswith(b"\n")
        if unterminated:
            out.append(b"\n")
        # The empty line that separates messages (RFC 4155 section 2).
        out.append(b"\n")
        blob = b"".join(out)
        self._f.write(blob)
        as_read = data + b"\n" if unterminated else data
        record = {
            # The reader keeps the line break added to an unterminated message; the sidecar
            # tells it to take it off again.
            "origin": f"{offset}:{hashlib.sha256(as_read).hexdigest()}",
            "flags": list(flags),
            "internal_date": internal_date,
            "unterminated": unterminated,
        }
        self._side.write(json.dumps(record).encode("utf-8") + b"\n")
        return len(blob)

    def close(self) -> None:
        """fsync and close both files."""
        for f in (self._f, self._side):
            f.flush()
            os.fsync(f.fileno())
            f.close()
