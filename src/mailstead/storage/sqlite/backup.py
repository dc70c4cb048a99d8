"""Backup and restore of the embedded store: the database through SQLite's online backup
API (https://www.sqlite.org/backup.html: one read transaction, so the copy is consistent
while ``serve`` goes on writing), then the bodies that copy refers to."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mailstead import __version__
from mailstead.storage import backup as layout
from mailstead.storage.backup import BackupError, CheckReport, FileEntry, Manifest
from mailstead.storage.blobs import is_blob_name
from mailstead.storage.sqlite import check

# Called with (blobs done, bytes done) after each body.
Tick = Callable[[int, int], None]
_PARALLEL = 8


@dataclass
class BackupReport:
    """What one ``backup`` did."""

    snapshot: Path
    files: int = 0
    blobs: int = 0
    copied: int = 0
    present: int = 0
    copied_bytes: int = 0
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)


def _open_ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)


def _counts(conn: sqlite3.Connection) -> dict[str, int]:
    row = conn.execute(
        "SELECT (SELECT COUNT(*) FROM accounts), (SELECT COUNT(*) FROM mailboxes),"
        " (SELECT COUNT(*) FROM messages), (SELECT COUNT(*) FROM queue)"
    ).fetchone()
    return dict(zip(("accounts", "mailboxes", "messages", "queue"), map(int, row), strict=True))


def _schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def snapshot_database(source: Path, target: Path) -> None:
    """Copies the live database ``source`` into ``target`` in one step of the online backup
    API, so the copy is one consistent moment; then fsyncs it."""
    src = _open_ro(source)
    try:
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            src.backup(dst)  # pages=-1: everything in one step, under one read lock
            dst.execute("PRAGMA journal_mode = DELETE")
        finally:
            dst.close()
    finally:
        src.close()
    with target.open("rb") as f:
        os.fsync(f.fileno())


def _copy_blob(src_root: Path, dst_root: Path, name: str, full: bool) -> tuple[str, int]:
    """Copies one body if DEST lacks it (or, with ``full``, holds other bytes); returns
    ("copied" | "present" | "missing" | "damaged", bytes copied)."""
    target = layout.blob_path(dst_root, name)
    if target.exists() and not full:
        return "present", 0
    if target.exists():
        digest, _ = layout.sha256_file(target)
        if digest == name:
            return "present", 0
    try:
        data = layout.blob_path(src_root, name).read_bytes()
    except FileNotFoundError:
        return "missing", 0
    if hashlib.sha256(data).hexdigest() != name:
        return "damaged", 0
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    layout.write_durable(target, data)
    return "copied", len(data)


def take_backup(
    data_dir: Path, dest: Path, *, full: bool = False, tick: Tick | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> BackupReport:
    """Snapshots the store of ``data_dir`` (running or not) into ``dest``; raises
    BackupError, leaving only a ``.partial-*`` directory, when any body cannot be copied."""
    started = clock()
    db = data_dir / layout.DATABASE
    if not db.is_file():
        raise BackupError(f"no database at {db}")
    snaps = dest / layout.SNAPSHOTS
    blobs_dst = dest / layout.BLOBS
    for d in (dest, snaps, blobs_dst):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = time.time()
    name = layout.snapshot_name(now)
    partial = snaps / f"{layout.PARTIAL_PREFIX}{name}.{secrets.token_hex(4)}"
    partial.mkdir(mode=0o700)
    try:
        snap_db = partial / layout.DATABASE
        snapshot_database(db, snap_db)
        conn = _open_ro(snap_db)
        try:
            problems = check.quick_check(conn)
            if problems:
                raise BackupError(f"the database snapshot is damaged: {problems[0][:200]}")
            names = sorted(set(check.referenced_blobs(conn)))
            counts = _counts(conn)
            schema = _schema_version(conn)
        finally:
            conn.close()
        report = BackupReport(snapshot=snaps / name, blobs=len(names), counts=counts)
        bad: dict[str, list[str]] = {"missing": [], "damaged": []}
        src_root = data_dir / layout.BLOBS
        dirs: set[Path] = set()
        with ThreadPoolExecutor(_PARALLEL) as pool:
            results = pool.map(lambda n: _copy_blob(src_root, blobs_dst, n, full), names)
            for blob, (outcome, nbytes) in zip(names, results, strict=True):
                if outcome == "copied":
                    report.copied += 1
                    report.copied_bytes += nbytes
                    dirs.add(layout.blob_path(blobs_dst, blob).parent)
                elif outcome == "present":
                    report.present += 1
                else:
                    bad[outcome].append(blob)
                if tick is not None:
                    tick(1, nbytes)
        if bad["missing"] or bad["damaged"]:
            raise BackupError(_blob_failure(bad))
        for d in sorted(dirs):
            layout.fsync_dir(d)
            layout.fsync_dir(d.parent)
        layout.fsync_dir(blobs_dst)
        entries = [FileEntry(layout.DATABASE, *layout.sha256_file(snap_db))]
        entries += layout.copy_data_files(data_dir, partial)
        manifest = Manifest(
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            backend="sqlite",
            program_version=__version__,
            schema_version=schema,
            counts={**counts, "blobs": len(names)},
            files=entries,
        )
        layout.finish_snapshot(partial, report.snapshot, manifest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    report.files = len(entries) + 1
    report.seconds = clock() - started
    return report


def _blob_failure(bad: dict[str, list[str]]) -> str:
    parts = []
    if bad["missing"]:
        parts.append(
            f"{len(bad['missing'])} body file(s) the snapshot needs are gone from the store "
            f"(first {bad['missing'][0]}; expunged and collected during the backup, or lost: "
            "run `mailstead verify`, then the backup again)"
        )
    if bad["damaged"]:
        parts.append(
            f"{len(bad['damaged'])} body file(s) in the store are damaged (first "
            f"{bad['damaged'][0]}; run `mailstead verify`)"
        )
    return "backup not taken: " + "; ".join(parts)


load_manifest = layout.load_manifest


def _snapshot_blobs(db: Path, report: CheckReport) -> list[str]:
    """Integrity-checks the snapshot's database (read-only) and lists the bodies it needs."""
    if not db.is_file():
        report.database.append("the database file is missing")
        return []
    conn = _open_ro(db)
    try:
        report.database.extend(check.integrity_check(conn))
        try:
            return sorted(set(check.referenced_blobs(conn)))
        except sqlite3.DatabaseError as exc:
            report.database.append(f"cannot list the message bodies: {exc}")
            return []
    finally:
        conn.close()


def verify_backup(dest: Path, name: str | None = None, tick: Tick | None = None) -> CheckReport:
    """Checks one snapshot of ``dest`` without restoring it: the manifest's files, the
    database's integrity, and every body it refers to against its SHA-256 name."""
    snapshot = layout.pick_snapshot(dest, name)
    manifest = load_manifest(snapshot)
    report = CheckReport(snapshot.name)
    layout.check_files(snapshot, manifest, report)
    names = _snapshot_blobs(snapshot / layout.DATABASE, report)
    layout.check_blobs(dest / layout.BLOBS, names, report)
    if tick is not None:
        tick(len(names), 0)
    return report


def restore_backup(
    src: Path, data_dir: Path, name: str | None = None, tick: Tick | None = None
) -> CheckReport:
    """Restores one snapshot of ``src`` into the empty ``data_dir``, checking every file
    and body as it is copied; a body that is missing or damaged in the backup is left out
    and reported (``mailstead verify`` then names it too)."""
    snapshot = layout.pick_snapshot(src, name)
    manifest = load_manifest(snapshot)
    if manifest.backend != "sqlite":
        raise BackupError(f"{snapshot} is a {manifest.backend} backup, not an embedded store")
    layout.check_restore_target(data_dir, manifest)
    report = CheckReport(snapshot.name)
    layout.check_files(snapshot, manifest, report)
    if report.bad_files:
        raise BackupError(f"the backup is damaged, nothing restored: {report.bad_files[0]}")
    layout.restore_files(snapshot, manifest, data_dir)
    names = _snapshot_blobs(data_dir / layout.DATABASE, report)
    src_root, dst_root = src / layout.BLOBS, data_dir / layout.BLOBS
    dirs: set[Path] = set()

    def copy(blob: str) -> tuple[str, int]:
        if not is_blob_name(blob):
            return "damaged", 0
        return _copy_blob(src_root, dst_root, blob, False)

    with ThreadPoolExecutor(_PARALLEL) as pool:
        for blob, (outcome, nbytes) in zip(names, pool.map(copy, names), strict=True):
            report.blobs += 1
            if outcome == "missing":
                report.missing.append(blob)
            elif outcome == "damaged":
                report.damaged.append(blob[:80])
            else:
                dirs.add(layout.blob_path(dst_root, blob).parent)
            if tick is not None:
                tick(1, nbytes)
    for d in sorted(dirs):
        layout.fsync_dir(d)
        layout.fsync_dir(d.parent)
    for top, _dirs, _files in os.walk(data_dir):
        layout.fsync_dir(Path(top))
    return report
