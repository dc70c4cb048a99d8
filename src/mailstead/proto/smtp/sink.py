"""Where the SMTP core puts message content as it arrives: a sink the server gives it.

The core never holds a whole message: DATA content is dot-unstuffed and BDAT octets are
handed on line block by line block (``write``), so the server can spool them to a file past a
threshold and bound the memory that unfinished transactions hold across sessions. The core
stays free of files and clocks (DESIGN rule 1); ``BufferSink`` is the in-memory sink it uses
when the server gives none (clients of the core in tests, tools).
"""

from __future__ import annotations

from typing import Protocol

from mailstead.core.reply import Reply


class ContentSink(Protocol):
    """Receives one message's content at a time; reused for the session's next message."""

    def open(self) -> Reply | None:
        """A message's content starts (DATA accepted, or its first BDAT chunk); a reply
        refuses it (e.g. 452 4.3.1 when the server has no room for it)."""

    def write(self, chunk: bytes) -> None:
        """The next unstuffed octets of the open message."""

    def failure(self) -> Reply | None:
        """Why the content written so far cannot be kept (e.g. the spool is full), or None."""

    def close(self) -> None:
        """The message is done with, delivered or not: release everything it holds."""


class BufferSink:
    """Keeps the content in memory; ``getvalue`` returns it until ``close``."""

    __slots__ = ("_chunks",)

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def open(self) -> Reply | None:
        self._chunks = []
        return None

    def write(self, chunk: bytes) -> None:
        if chunk:
            self._chunks.append(chunk)

    def failure(self) -> Reply | None:
        return None

    def close(self) -> None:
        self._chunks = []

    def getvalue(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks = [data] if data else []
        return data
