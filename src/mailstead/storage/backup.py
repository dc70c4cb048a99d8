"""Online backups of a data directory: layout, manifest, and the checks shared by ``backup``,
``backup --verify`` and ``restore``.

Layout of a backup DEST::

    DEST/blobs/ab/cd/<sha256>          message bodies, shared by every snapshot (a name is its
                                       content, so a later backup copies only new bodies)
    DEST/snapshots/<UTC time>/         one complete snapshot:
        manifest.json                  every file with SHA-256 and size, program and schema
                                       version, backend, time, counts
        mailstead.db                   the database, consistent as of one moment
        files/...                      mailstead.toml, security.key, node-id, tls/...

A snapshot is built under ``snapshots/.partial-*`` and renamed into place only once every file
and every body it needs is durable, so an interrupted backup never looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailstead.core.errors import StoreError
from mailstead.storage.blobs import is_blob_name

MANIFEST = "manifest.json"
SNAPSHOTS = "snapshots"
BLOBS = "blobs"
FILES = "files"
DATABASE = "mailstead.db"
FORMAT = 1
PARTIAL_PREFIX = ".partial-"
_SNAPSHOT_NAME = re.compile(r"^\d{8}T\d{6}(\.\d{6})?Z\Z")
_TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")
DUMP_PREFIX = "database/"
# Data-dir entries that are not copied as files: the database (snapshotted instead), its
# WAL/SHM/lock files, the bodies (copied by name) and the spool of messages in flight.
_SKIPPED = {BLOBS, "tmp", DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm", f"{DATABASE}-journal"}
_CHUNK = 1 << 20


class BackupError(StoreError):
    """A backup, check or restore that cannot go on; one line for the administrator."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a snapshot, by its path relative to the snapshot directory."""

    path: str
    sha256: str
    size: int


@dataclass
class Manifest:
    """What a snapshot holds and how to check it."""

    created: str
    backend: str
    program_version: str
    schema_version: int
    counts: dict[str, int]
    files: list[FileEntry] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # PostgreSQL: the dump's load order
    format: int = FORMAT

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "format": self.format,
            "created": self.created,
            "backend": self.backend,
            "program_version": self.program_version,
            "schema_version": self.schema_version,
            "counts": dict(sorted(self.counts.items())),
            "files": {f.path: {"sha256": f.sha256, "size": f.size} for f in self.files},
        }
        if self.tables:
            data["tables"] = list(self.tables)
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parses a manifest; raises BackupError with the reason for anything malformed."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BackupError(f"the manifest is not valid JSON: {exc}") from None
        try:
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise BackupError("the manifest has an unknown format")
            if not isinstance(data["files"], dict) or not isinstance(data["counts"], dict):
                raise BackupError("the manifest's files and counts must be JSON objects")
            files = []
            for path, entry in data["files"].items():
                check_relative(str(path))
                digest, size = str(entry["sha256"]), int(entry["size"])
                if not is_blob_name(digest) or size < 0:
                    raise BackupError(f"the manifest entry for {path!r} is malformed")
                files.append(FileEntry(str(path), digest, size))
            counts = {str(k): int(v) for k, v in data["counts"].items()}
            tables = data.get("tables", [])
            if not isinstance(tables, list) or not all(
                    isinstance(t, str) and _TABLE_NAME.match(t) for t in tables):
                raise BackupError("the manifest's tables are malformed")
            return cls(
                created=str(data["created"]),
                backend=str(data["backend"]),
                program_version=str(data["program_version"]),
                schema_version=int(data["schema_version"]),
                counts=counts,
                files=files,
                tables=list(tables),
            )
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise BackupError(f"the manifest is malformed ({exc!r})") from None


def check_relative(path: str) -> None:
    """Refuses a manifest path that could point outside the snapshot (absolute, ``..``)."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) \
            or "\\" in path or "\x00" in path:
        raise BackupError(f"the manifest names an unsafe path {path[:80]!r}")


def restore_target(data_dir: Path, path: str) -> Path:
    """Where ``restore`` writes the manifest file ``path``: the database at the top of
    ``data_dir``, ``files/...`` below it; anything else, or anything that would land outside
    ``data_dir``, is refused."""
    check_relative(path)
    if path == DATABASE:
        rel = DATABASE
    elif path.startswith(f"{FILES}/"):
        rel = path.removeprefix(f"{FILES}/")
        top = rel.split("/", 1)[0]
        if top in _SKIPPED:
            raise BackupError(f"the manifest puts {path[:80]!r} where the store keeps its own")
    else:
        raise BackupError(f"the manifest names an unexpected file {path[:80]!r}")
    target = data_dir / rel
    if not target.resolve().is_relative_to(data_dir.resolve()):
        raise BackupError(f"the manifest names an unsafe path {path[:80]!r}")
    return target


def check_restore_target(data_dir: Path, manifest: Manifest) -> None:
    """Refuses a non-empty ``data_dir`` and any manifest path restore would not write inside
    it, before anything is written."""
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise BackupError(f"{data_dir} is not empty: restore only into an empty directory")
    for entry in manifest.files:
        if not entry.path.startswith(DUMP_PREFIX):
            restore_target(data_dir, entry.path)


def restore_files(snapshot: Path, manifest: Manifest, data_dir: Path) -> None:
    """Copies the snapshot's files (not a PostgreSQL dump) into ``data_dir``, each checked
    against the manifest after the copy, then fsyncs the directories."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for entry in manifest.files:
        if entry.path.startswith(DUMP_PREFIX):
            continue
        source = snapshot / entry.path
        target = restore_target(data_dir, entry.path)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_durable(target, source.read_bytes(), source.stat().st_mode & 0o777)
        if sha256_file(target)[0] != entry.sha256:
            raise BackupError(f"{target} does not match the backup after the copy")
    for top, _dirs, _files in os.walk(data_dir):
        fsync_dir(Path(top))


def snapshot_name(now: float) -> str:
    """The directory name of a snapshot taken at ``now``: UTC, sortable, microseconds."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def copy_data_files(data_dir: Path, partial: Path) -> list[FileEntry]:
    """Copies the config, keys and other files of ``data_dir`` under ``partial/files/``."""
    entries = []
    for path in data_files(data_dir):
        rel = path.relative_to(data_dir).as_posix()
        target = partial / FILES / rel
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_durable(target, path.read_bytes(), path.stat().st_mode & 0o777)
        entries.append(FileEntry(f"{FILES}/{rel}", *sha256_file(target)))
    return entries


def finish_snapshot(partial: Path, final: Path, manifest: Manifest) -> None:
    """Writes the manifest last, makes everything durable, and only then gives the snapshot
    its name, so an interrupted backup never looks complete."""
    for top, _dirs, _files in os.walk(partial):
        fsync_dir(Path(top))
    write_durable(partial / MANIFEST, manifest.to_json().encode())
    fsync_dir(partial)
    os.rename(partial, final)
    fsync_dir(final.parent)


def load_manifest(snapshot: Path) -> Manifest:
    try:
        text = (snapshot / MANIFEST).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BackupError(f"{snapshot} has no {MANIFEST}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BackupError(f"cannot read {snapshot / MANIFEST}: {exc}") from None
    return Manifest.from_json(text)


def is_snapshot_name(name: str) -> bool:
    return _SNAPSHOT_NAME.match(name) is not None


def snapshots(dest: Path) -> list[str]:
    """The complete snapshots in ``dest``, oldest first (partial ones are skipped)."""
    root = dest / SNAPSHOTS
    if not root.is_dir():
        return []
    return sorted(n for n in os.listdir(root) if is_snapshot_name(n) and (root / n).is_dir())


def pick_snapshot(dest: Path, name: str | None) -> Path:
    """The snapshot ``name`` in ``dest``, or its newest one."""
    names = snapshots(dest)
    if name is None:
        if not names:
            raise BackupError(f"{dest} holds no complete backup (no {SNAPSHOTS}/<time>/)")
        return dest / SNAPSHOTS / names[-1]
    if name not in names:
        raise BackupError(f"{dest} has no snapshot {name!r}; it has: {', '.join(names) or 'none'}")
    return dest / SNAPSHOTS / name


def blob_path(root: Path, name: str) -> Path:
    return root / name[:2] / name[2:4] / name


def data_files(data_dir: Path) -> list[Path]:
    """The files of ``data_dir`` a restore needs besides the store: the config, the keys,
    the node id, the TLS files and anything else an administrator put there."""
    found: list[Path] = []
    for top, dirs, files in os.walk(data_dir):
        here = Path(top)
        if here == data_dir:
            dirs[:] = [d for d in dirs if d not in _SKIPPED]
            files = [f for f in files if f not in _SKIPPED]
        dirs.sort()
        for name in sorted(files):
            path = here / name
            if path.is_file() and not path.is_symlink():
                found.append(path)
    return found


def sha256_file(path: Path) -> tuple[str, int]:
    """(SHA-256 hex, size) of a file, read in chunks so a large file costs bounded memory."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Writes ``data`` to ``path`` through a temp name, fsync'd before the rename; the
    caller fsyncs the directory (once for many files)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class CheckReport:
    """What a check of one snapshot found."""

    snapshot: str
    files: int = 0
    blobs: int = 0
    bad_files: list[str] = field(default_factory=list)
    database: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.bad_files or self.database or self.missing or self.damaged)


def check_files(snapshot: Path, manifest: Manifest, report: CheckReport) -> None:
    """Every manifest file present with its size and SHA-256."""
    for entry in manifest.files:
        report.files += 1
        path = snapshot / entry.path
        if path.is_symlink():
            # A backup never holds links; one could make restore copy a file from anywhere.
            report.bad_files.append(f"{entry.path}: a symbolic link, not a file")
            continue
        try:
            digest, size = sha256_file(path)
        except FileNotFoundError:
            report.bad_files.append(f"{entry.path}: missing")
            continue
        except OSError as exc:
            report.bad_files.append(f"{entry.path}: unreadable ({exc.strerror})")
            continue
        if (digest, size) != (entry.sha256, entry.size):
            report.bad_files.append(f"{entry.path}: SHA-256 or size differs from the manifest")


def check_blobs(root: Path, names: Iterable[str], report: CheckReport) -> None:
    """Every body ``names`` lists present under ``root`` and hashing to its name."""
    for name in names:
        report.blobs += 1
        if not is_blob_name(name):
            report.damaged.append(name[:80])
            continue
        try:
            digest, _ = sha256_file(blob_path(root, name))
        except FileNotFoundError:
            report.missing.append(name)
            continue
        if digest != name:
            report.damaged.append(name)
