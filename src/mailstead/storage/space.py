"""The free-space reserve of a data directory: below it the store takes no new mail (SMTP
452 4.3.1, IMAP APPEND NO [UNAVAILABLE]) and the full-text indexer pauses, so the space that
is left stays for what frees space: deletions, expunges and the database writes they need
(SQLite needs room in its WAL to delete). Recovery needs nobody: every check probes again.

The probe (``os.statvfs``) and the clock are injected, so the rule is tested without a full
disk; one probe costs about a microsecond, and a result is reused for ``PROBE_INTERVAL``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from mailstead.core.errors import DiskFull
from mailstead.observability.log import log_event_at

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# Seconds a probe result is reused: recovery is seen this soon after space returns.
PROBE_INTERVAL = 0.25
# Seconds between two warnings about refused writes while below the reserve.
WARN_INTERVAL = 60.0


def reserve_bytes(total: int, reserve_mb: int, reserve_percent: int) -> int:
    """The reserve of a filesystem of ``total`` bytes: the smaller of ``reserve_mb`` MiB and
    ``reserve_percent`` % of it (a small disk is not all reserve); 0 turns the rule off."""
    return min(reserve_mb * MIB, total * reserve_percent // 100)


class SpaceGuard:
    """Whether the filesystem of ``path`` has more free space than the reserve. Thread-safe;
    logs once when the reserve is reached, once when space is back, and in between at most
    one warning per ``WARN_INTERVAL`` with the number of writes refused."""

    def __init__(
        self,
        path: Path,
        *,
        reserve_mb: int = 200,
        reserve_percent: int = 1,
        statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = str(path)
        self._reserve_mb = reserve_mb
        self._reserve_percent = reserve_percent
        self._statvfs = statvfs
        self._clock = clock
        self._lock = threading.Lock()
        self._checked = -float("inf")
        self._low = False
        self._free = 0
        self._spent = 0  # bytes admitted since the last probe
        self._reserve = 0
        self._refused = 0
        self._warned = -float("inf")

    def _probe(self) -> None:
        try:
            st = self._statvfs(self._path)
        except OSError as exc:  # cannot tell: let writes try (they fail on their own)
            log.warning("store.space_probe_failed path=%s error=%s", self._path, exc)
            self._low = False
            return
        # f_bavail: what an unprivileged writer may use; the root-only blocks are no reserve
        # of ours (the server may well run as root).
        self._free = st.f_bavail * st.f_frsize
        self._spent = 0
        self._reserve = reserve_bytes(st.f_blocks * st.f_frsize, self._reserve_mb,
                                      self._reserve_percent)
        # Back above the reserve by a margin (5%), so free space hovering at the line does
        # not flip the state (and log) at every probe.
        line = self._reserve * 105 // 100 if self._low else self._reserve
        self._set_low(self._reserve > 0 and self._free < line)

    def _set_low(self, low: bool) -> None:
        if low != self._low:
            self._low = low
            event = "store.disk_low" if low else "store.disk_ok"
            level = logging.ERROR if low else logging.WARNING
            log_event_at(log, level, event, path=self._path, free=self._free,
                         reserve=self._reserve, refused=self._refused,
                         action="free space: delete or expunge mail, or grow the disk"
                         if low else "new mail is taken again")
            if not low:
                self._refused = 0

    def _fresh(self) -> None:
        now = self._clock()
        if now - self._checked >= PROBE_INTERVAL:
            self._checked = now
            self._probe()

    def low(self) -> bool:
        """True while the free space is under the reserve (probed at most every
        ``PROBE_INTERVAL`` seconds)."""
        with self._lock:
            self._fresh()
            return self._low

    def _admit(self, size: int) -> bool:
        self._fresh()
        if self._low:
            return False
        if self._reserve <= 0 or self._free - self._spent - size >= self._reserve:
            self._spent += size
            return True
        if self._free - self._spent < self._reserve:
            self._set_low(True)
        # else: only this write is too big for the space left above the reserve
        return False

    def admit(self, size: int) -> bool:
        """Whether ``size`` more bytes fit above the reserve (then counted as spent until
        the next probe); quiet, for background work such as the full-text indexer."""
        with self._lock:
            return self._admit(size)

    def check(self, what: str, size: int = 0) -> None:
        """Raises DiskFull when below the reserve, or when writing ``size`` more bytes would
        take it there: bytes admitted since the last probe count as spent, so a burst
        between two probes cannot run through the reserve. ``what`` names the refused write
        in the (rate-limited) warning."""
        with self._lock:
            if self._admit(size):
                return
            now = self._clock()
            self._refused += 1
            warn = now - self._warned >= WARN_INTERVAL
            if warn:
                self._warned = now
            refused, free, reserve = self._refused, self._free, self._reserve
        if warn:
            log_event_at(log, logging.WARNING, "store.write_refused", what=what, free=free,
                         reserve=reserve, refused_so_far=refused)
        raise DiskFull(f"the disk is almost full ({free // MIB} MiB free, reserve "
                       f"{reserve // MIB} MiB): {what} refused until space is freed")
