"""Checks of stored data as it is read, shared by both backends.

A body is named by its SHA-256 (``blobs.blob_hash``), so every read of a whole body can prove
it is intact. The price is about 1.5 ms per MiB of body on one core (bench/blob_verify.py:
some 6 times what AES-GCM encryption for TLS costs with AES-NI), paid only by whole reads.
A damaged body or database page is counted here, logged loudly once per occurrence, and
reported to the caller as ``CorruptData``: a permanent error for that message only.
"""

from __future__ import annotations

import hashlib
import logging
import threading

from mailstead.core.errors import CorruptData
from mailstead.observability.log import log_event_at

log = logging.getLogger(__name__)

VERIFY_HINT = "run `mailstead verify` (it checks every page and every message body)"


class Integrity:
    """The integrity failures one store has met since it opened (there is no metrics module:
    these counters are what the log lines, ``doctor`` and tests read). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.corrupt_blobs = 0
        self.corrupt_database = 0

    @staticmethod
    def intact(name: str, data: bytes) -> bool:
        """Whether ``data`` is the body named ``name``, reporting nothing (``read_blobs``
        leaves a damaged body out; the ``read_blob`` that follows reports it, once)."""
        return hashlib.sha256(data).hexdigest() == name

    def check_blob(self, name: str, data: bytes) -> bytes:
        """``data`` when its SHA-256 is ``name``; otherwise counts, logs and raises
        CorruptData (the bytes are never handed on)."""
        if self.intact(name, data):
            return data
        with self._lock:
            self.corrupt_blobs += 1
            count = self.corrupt_blobs
        log_event_at(log, logging.ERROR, "store.blob_corrupt", blob=name, size=len(data),
                     corrupt_blobs=count,
                     action=f"restore this body from a backup; {VERIFY_HINT}")
        raise CorruptData(f"message body {name} is damaged: its SHA-256 differs from its name")

    def database_corrupt(self, what: str, detail: str) -> CorruptData:
        """Counts and logs a corrupt database found while ``what``; the error to raise."""
        with self._lock:
            self.corrupt_database += 1
            count = self.corrupt_database
        log_event_at(log, logging.ERROR, "store.database_corrupt", during=what, error=detail,
                     corrupt_database=count, action=f"stop the server and {VERIFY_HINT}")
        return CorruptData(f"the database is damaged ({detail}); {VERIFY_HINT}")
