"""Early writeback of temporary files that hold messages still arriving (the SMTP and IMAP
APPEND spools).

The store makes a batch of deliveries durable with one ``syncfs(2)`` of the data directory's
filesystem (storage/blobs.py), which also flushes every other dirty page there. Left to the
kernel, a client streaming a large message into the spool leaves hundreds of MB dirty until
background writeback starts (dirty_background_ratio of the memory), and the next commit of an
unrelated message then waits for all of it. Asking for writeback as each MiB is written keeps
the dirty part small, so a commit waits for the disk's share of one MiB per spool at most.
"""

from __future__ import annotations

import os

STEP = 1024 * 1024  # start writeback once this much has been written since the last time


class Writeback:
    """Counts what one file has had written and says when to start its writeback."""

    __slots__ = ("_done", "_written")

    def __init__(self) -> None:
        self._written = 0
        self._done = 0

    def due(self, count: int) -> bool:
        """``count`` more bytes were written: True once ``STEP`` are waiting (the caller then
        flushes its own buffer and calls ``start``)."""
        self._written += count
        return self._written - self._done >= STEP

    def start(self, fd: int) -> None:
        """POSIX_FADV_DONTNEED starts asynchronous writeback of the range's dirty pages
        (Linux: WB_SYNC_NONE) and drops its clean ones from the cache."""
        try:
            os.posix_fadvise(fd, self._done, self._written - self._done,
                             os.POSIX_FADV_DONTNEED)
        except OSError:
            return  # advice only: a filesystem that refuses it still works
        self._done = self._written
