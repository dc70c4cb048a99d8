"""Content-addressed message bodies on disk: ``ROOT/ab/cd/<sha256 hex>``.

A blob is written to a temp file in its final directory, made durable, renamed into place and
the rename made durable, so a name that exists after a crash always holds the complete bytes.

``write_many`` does this for a whole group-commit batch, in one of two modes:
- ``"syncfs"`` (Linux default): create every new file under its final name, then one
  ``syncfs(2)`` makes all data, names and new directories durable: one device flush per
  batch whatever its size (see ``_write_direct`` for why no temp file is needed). The
  price: syncfs also flushes other dirty data on the same filesystem, so keep the data
  directory off filesystems that take heavy unrelated writes.
- ``"fsync"`` (portable): fdatasync each temp file and fsync each touched directory, issued
  in parallel from a thread pool so the journal can merge what it can.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from mailstead.core.errors import NotFound
from mailstead.storage.integrity import Integrity

_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")
_FILE_MODE = 0o600
_DIR_MODE = 0o700

SyncMode = Literal["syncfs", "fsync"]


def _find_syncfs() -> Callable[[int], int] | None:
    """libc's syncfs(2) (Linux 2.6.39+; reports writeback errors since 5.8), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    result: Callable[[int], int] = func
    return result


def blob_hash(data: bytes) -> str:
    """The name of ``data`` in the store: its SHA-256 as lower-case hex."""
    return hashlib.sha256(data).hexdigest()


def is_blob_name(name: str) -> bool:
    """True for a well-formed blob name; anything else never reaches the filesystem."""
    return _HEX64.match(name) is not None


class BlobStore:
    """The blob tree under ``root``. Thread-safe: it holds no state besides the paths."""

    def __init__(
        self,
        root: Path,
        *,
        parallelism: int = 16,
        sync: SyncMode | None = None,
        integrity: Integrity | None = None,
    ) -> None:
        self.root = root
        self.integrity = integrity if integrity is not None else Integrity()
        self._root = str(root)
        self._parallelism = parallelism
        # Second-level directories seen to exist, so a batch does not stat them again (blobs
        # are removed, directories never are; one removed behind our back is recreated).
        self._dirs: set[str] = set()
        root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        self._syncfs = _find_syncfs() if sync in (None, "syncfs") else None
        if sync == "syncfs" and self._syncfs is None:
            raise OSError("syncfs(2) is not available on this system")
        self.sync_mode: SyncMode = "syncfs" if self._syncfs is not None else "fsync"
        self._make_first_level()

    def _make_first_level(self) -> None:
        """Creates the 256 ``ab/`` directories up front (once per store; later opens only
        list the root), so a delivery creates at most one directory, and fsyncs the root
        when any was new, since deliveries then never fsync it."""
        present = set(os.listdir(self._root))
        created = False
        for n in range(256):
            name = f"{n:02x}"
            if name not in present:
                try:
                    os.mkdir(os.path.join(self._root, name), _DIR_MODE)
                    created = True
                except FileExistsError:
                    continue
        if created:
            _fsync_dir(self.root)

    def _sync_filesystem(self) -> None:
        assert self._syncfs is not None
        fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            if self._syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"syncfs: {os.strerror(err)}")
        finally:
            os.close(fd)

    def path(self, name: str) -> Path:
        """Where blob ``name`` lives; raises NotFound for a malformed name."""
        return Path(self._file(name))

    def _file(self, name: str) -> str:
        """``path`` as a string (the hot paths skip pathlib's per-call overhead)."""
        if not is_blob_name(name):
            raise NotFound(f"no such blob: {name[:80]!r}")
        return f"{self._root}/{name[:2]}/{name[2:4]}/{name}"

    def exists(self, name: str) -> bool:
        return os.path.exists(self._file(name))

    def read_quiet(self, name: str) -> bytes | None:
        """The bytes of blob ``name`` if present and intact, else None, reporting nothing."""
        try:
            data = self.path(name).read_bytes()
        except (FileNotFoundError, NotFound):
            return None
        return data if self.integrity.intact(name, data) else None

    def read(self, name: str) -> bytes:
        """The bytes of blob ``name``, checked against their name; raises NotFound, and
        CorruptData when the file holds other bytes (a disk or a hand damaged it)."""
        try:
            data = self.path(name).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no such blob: {name}") from None
        return self.integrity.check_blob(name, data)

    def write(self, name: str, data: bytes) -> None:
        """Makes one blob durable with per-file fsyncs (for big bodies written outside a batch:
        their cost is then proportional to their own size only)."""
        self._write_fsync({name: data}, None)

    def write_many(
        self, items: Sequence[tuple[str, bytes]], pool: ThreadPoolExecutor | None = None
    ) -> None:
        """Makes every ``(name, data)`` durable before returning; raises OSError on failure.

        Existing blobs are not rewritten (same name, same bytes), but are still flushed: a
        previous batch may have failed before its flush.
        ``pool`` runs the fsyncs concurrently; without it a private one is used.
        """
        unique: dict[str, bytes] = {}
        for name, data in items:
            self._file(name)  # validates
            unique.setdefault(name, data)
        if not unique:
            return
        if self._syncfs is None:
            self._write_fsync(unique, pool)
            return
        for name, data in unique.items():
            self._write_direct(self._file(name), data)
        # One flush makes every new file, its name, and every new directory durable.
        self._sync_filesystem()

    def _write_direct(self, final: str, data: bytes) -> None:
        """syncfs mode: create ``final`` directly (a rename per blob is a costly metadata
        operation here). Nothing references the file until the batch's syncfs and commit have
        both succeeded; a leftover from a crash or a concurrent writer is read back and, if its
        bytes differ, atomically replaced through a temp file."""
        try:
            fd = self._create(final)
        except FileExistsError:
            try:
                with open(final, "rb") as f:
                    if f.read() == data:
                        return
            except FileNotFoundError:
                pass
            path = Path(final)
            os.replace(_write_temp(path, data, sync=False), path)
            return
        try:
            _write_all(fd, data)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(final)
            raise
        os.close(fd)

    def _create(self, final: str) -> int:
        """``O_EXCL``-creates ``final``, making its directory first when it is not known to
        exist; raises FileExistsError when the file exists."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        directory = os.path.dirname(final)
        if directory not in self._dirs:
            self._ensure_dir(Path(directory))
            self._dirs.add(directory)
        try:
            return os.open(final, flags, _FILE_MODE)
        except FileNotFoundError:  # the directory was removed after we saw it
            self._ensure_dir(Path(directory))
            return os.open(final, flags, _FILE_MODE)

    def _write_fsync(self, unique: dict[str, bytes], pool: ThreadPoolExecutor | None) -> None:
        dirs: set[Path] = set()
        to_write: list[tuple[Path, bytes]] = []
        for name, data in unique.items():
            final = self.path(name)
            dirs.update(self._ensure_dir(final.parent))
            dirs.add(final.parent)
            if not final.exists():
                to_write.append((final, data))
        own_pool = pool is None
        executor = pool or ThreadPoolExecutor(max_workers=self._parallelism)
        try:
            for _ in executor.map(_write_one, to_write):
                pass
            for _ in executor.map(_fsync_dir, sorted(dirs)):
                pass
        finally:
            if own_pool:
                executor.shutdown(wait=True)

    def remove(self, names: Iterable[str]) -> int:
        """Unlinks the given blobs (garbage collection); returns how many were removed."""
        removed = 0
        for name in names:
            try:
                self.path(name).unlink()
                removed += 1
            except FileNotFoundError:
                continue
        return removed

    def _ensure_dir(self, directory: Path) -> list[Path]:
        """Creates ``directory`` (two levels below root) and returns the parents whose entries
        changed and therefore need an fsync too."""
        if directory.is_dir():
            return []
        changed: list[Path] = []
        for level in (directory.parent, directory):
            try:
                level.mkdir(mode=_DIR_MODE)
                changed.append(level.parent)
            except FileExistsError:
                continue
        return changed


def _write_one(job: tuple[Path, bytes]) -> None:
    final, data = job
    os.replace(_write_temp(final, data, sync=True), final)


def _write_temp(final: Path, data: bytes, *, sync: bool) -> Path:
    """Writes ``data`` to a new temp file beside ``final``, fdatasync'd when ``sync``."""
    tmp = final.parent / f".tmp-{secrets.token_hex(8)}"
    fd = os.open(
        tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), _FILE_MODE
    )
    try:
        _write_all(fd, data)
        if sync:
            os.fdatasync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
