"""Message content of unfinished SMTP transactions: in memory up to 64 KiB, then a temp file.

A ``Spool`` is the ``ContentSink`` one SMTP session gives its core. ``SpoolLimits``, shared by
every session of the process, bounds what all unfinished transactions together hold: the
in-memory parts (each open message reserves ``MEMORY_THRESHOLD`` until it moves to a file),
the temp files on disk, and the content read back at the commit. Over a budget the client gets
452 4.3.1 (RFC 3463 section 3.4: mail system full), a temporary failure it retries later,
instead of the server running out of memory or disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from mailstead.core.budget import ByteBudget
from mailstead.core.reply import Reply
from mailstead.core.writeback import Writeback

log = logging.getLogger("mailstead.smtp")

# Content up to this size stays in memory; beyond it goes to a temp file.
MEMORY_THRESHOLD = 64 * 1024
SPOOL_PREFIX = "smtp-"
WARN_INTERVAL = 60.0  # seconds between two warnings about refused messages
_FILE_MODE = 0o600
_DIR_MODE = 0o700

# RFC 3463 section 3.4 (X.3.1, mail system full), as a 452 (RFC 5321 section 4.2.2:
# insufficient system storage).
R_NO_ROOM = Reply(452, "4.3.1", "Insufficient system storage, try again later")


class SpoolLimits:
    """The process-wide budgets of unfinished SMTP transactions, and their temp directory."""

    def __init__(self, directory: Path, memory_budget: int, disk_budget: int,
                 room: Callable[[int], bool] | None = None) -> None:
        """``memory_budget``: bytes in memory over all open messages (and again for those
        being read back at the commit); ``disk_budget``: bytes of all temp files; ``room``:
        whether that many more bytes fit above the data directory's free-space reserve
        (``SpaceGuard.admit``), so unfinished messages never eat the space deletions need."""
        self.room = room
        self.directory = directory
        self._warned = -float("inf")
        self._refusals = 0
        self.memory_budget = memory_budget
        self.disk_budget = disk_budget
        self.memory_used = 0
        self.disk_used = 0
        self.commits = ByteBudget(memory_budget)

    def refused(self, what: str) -> None:
        """Counts a message refused for room, warning at most once per ``WARN_INTERVAL``
        (a flood of refusals must not flood the log too)."""
        self._refusals += 1
        now = time.monotonic()
        if now - self._warned < WARN_INTERVAL:
            return
        self._warned = now
        log.warning("SMTP spool: %s (%d refused; memory %d/%d, disk %d/%d, or the data "
                    "directory is below its free-space reserve)", what, self._refusals,
                    self.memory_used, self.memory_budget, self.disk_used, self.disk_budget)
        self._refusals = 0

    def room_for(self, size: int) -> bool:
        """Whether a message of ``size`` octets (a MAIL SIZE= declaration) fits now."""
        return size <= MEMORY_THRESHOLD or self.disk_used + size <= self.disk_budget

    def prepare(self) -> None:
        """Creates the directory and removes what a previous run left (a crash mid-DATA):
        no spool file outlives its process, since nothing acknowledged lives there."""
        self.directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        for entry in os.scandir(self.directory):
            if entry.name.startswith(SPOOL_PREFIX) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

    def new_file(self) -> tuple[int, Path]:
        """A new temp file, only ours: O_EXCL so nothing planted is reused, mode 0600."""
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        while True:
            path = self.directory / f"{SPOOL_PREFIX}{secrets.token_hex(12)}"
            try:
                return os.open(path, flags, _FILE_MODE), path
            except FileExistsError:
                continue
            except FileNotFoundError:
                self.directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)


class Spool:
    """One session's message content (see the module docstring); reused message by message."""

    def __init__(self, limits: SpoolLimits) -> None:
        self._limits = limits
        self._buf = bytearray()
        self._reserved = 0  # memory budget taken by this message
        self._file: io.BufferedRandom | None = None
        self._path: Path | None = None
        self._on_disk = 0  # disk budget taken by this message
        self._writeback = Writeback()
        self._failed: Reply | None = None
        self.size = 0

    # ContentSink ---------------------------------------------------------------------

    def open(self) -> Reply | None:
        self.close()
        limits = self._limits
        if (limits.memory_used + MEMORY_THRESHOLD > limits.memory_budget
                or limits.disk_used >= limits.disk_budget
                or (limits.room is not None and not limits.room(0))):
            limits.refused("no room")
            return R_NO_ROOM
        limits.memory_used += MEMORY_THRESHOLD
        self._reserved = MEMORY_THRESHOLD
        return None

    def write(self, chunk: bytes) -> None:
        if self._failed is not None or not chunk:
            return
        self.size += len(chunk)
        if self._file is None and len(self._buf) + len(chunk) <= self._reserved:
            self._buf += chunk
            return
        limits = self._limits
        pending = len(self._buf) + len(chunk)
        if limits.disk_used + pending > limits.disk_budget or (
                limits.room is not None and not limits.room(pending)):
            limits.refused("no room on disk")
            self._fail()
            return
        try:
            if self._file is None:
                fd, self._path = limits.new_file()
                self._file = open(fd, "w+b")  # noqa: SIM115 - closed by close()
            limits.disk_used += pending
            self._on_disk += pending
            if self._buf:
                self._file.write(self._buf)
                self._buf = bytearray()
            # On disk the message holds no memory but the file's write buffer.
            self._release_memory()
            self._file.write(chunk)
            if self._writeback.due(pending):
                self._file.flush()
                self._writeback.start(self._file.fileno())
        except OSError:
            log.exception("cannot write the SMTP spool file")
            self._fail()

    def failure(self) -> Reply | None:
        return self._failed

    def close(self) -> None:
        """Forgets the message: the temp file is closed and unlinked, budgets given back."""
        self._drop_file()
        self._buf = bytearray()
        self._release_memory()
        self._failed = None
        self.size = 0

    # the server's side -----------------------------------------------------------------

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    async def read(self) -> bytes:
        """The whole content, for the delivery; the caller bounds how many are read at once
        (``SpoolLimits.commits``)."""
        if self._file is None:
            return bytes(self._buf)
        self._file.flush()
        # A duplicate descriptor: the session may close the spool while the thread reads.
        return await asyncio.to_thread(_read_all, os.dup(self._file.fileno()), self.size)

    def _fail(self) -> None:
        self._failed = R_NO_ROOM
        self._drop_file()
        self._buf = bytearray()
        self._release_memory()

    def _release_memory(self) -> None:
        self._limits.memory_used -= self._reserved
        self._reserved = 0

    def _drop_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            self._path = None
            self._writeback = Writeback()
        self._limits.disk_used -= self._on_disk
        self._on_disk = 0


def _read_all(fd: int, size: int) -> bytes:
    """``size`` bytes from the start of ``fd``, which it closes."""
    try:
        parts: list[bytes] = []
        offset = 0
        while offset < size:
            part = os.pread(fd, size - offset, offset)
            if not part:
                raise OSError(f"SMTP spool file shorter than expected ({offset}/{size})")
            parts.append(part)
            offset += len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)
