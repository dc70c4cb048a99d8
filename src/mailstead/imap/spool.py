"""APPEND messages too large to hold in memory while they arrive: one unnamed temporary file
per literal; the octets all sessions may read back at once to commit are bounded by one
``core.budget.ByteBudget``.

Many clients uploading large messages slowly then cost disk, not RAM; only the commits, which
need the whole message (to parse it once and hand it to the store), hold it in memory, and
together they stay within the budget.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import IO

from mailstead.core.writeback import Writeback


class LiteralSpool:
    """The octets of one literal on disk, as they arrive."""

    def __init__(self, directory: Path | None = None) -> None:
        # TemporaryFile is unlinked at once (O_TMPFILE on Linux): a crash leaves nothing.
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 (closed by close())
        self.size = 0
        self._writeback = Writeback()

    def write(self, data: bytes) -> None:
        """Appends a chunk (a page-cache write of at most one read's worth)."""
        self._file.write(data)
        self.size += len(data)
        if self._writeback.due(len(data)):
            self._file.flush()
            self._writeback.start(self._file.fileno())

    async def read(self) -> bytes:
        """Everything written, read back off the event loop."""
        def read_all() -> bytes:
            self._file.flush()
            self._file.seek(0)
            return self._file.read()
        return await asyncio.to_thread(read_all)

    def close(self) -> None:
        self._file.close()
