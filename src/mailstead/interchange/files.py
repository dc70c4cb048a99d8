"""Import from and export to files: Maildir trees and mbox files, through the import sink
(imports) and the store interface (exports).

Imports keep a bounded window of messages in flight, so the store's group commit shares its
fsyncs between them while memory stays bounded whatever the size of the source. Exports read
the bodies in batches bounded by octets and write each file durably (fsync) before the next.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from mailstead.core.errors import MailsteadError, StoreError
from mailstead.interchange.maildir import MaildirWriter, folders_of, scan
from mailstead.interchange.mbox import (
    SIDECAR_SUFFIX,
    Format,
    MboxFailure,
    MboxMessage,
    MboxWriter,
    read_mbox,
    read_sidecar,
)
from mailstead.interchange.names import special_use_of
from mailstead.interchange.sink import ImportItem, ImportReport, ImportSink
from mailstead.storage.interfaces import Store

# Messages being committed at once: enough for group commit to batch fsyncs.
WINDOW = 32
# Octets of bodies an export holds in memory at once (beyond one larger message).
EXPORT_BATCH = 16 << 20

Progress = Callable[[str, int], None]  # (folder, octets) after each message


class ExportRefused(MailsteadError):
    """An export cannot start (the destination holds files, the account is unknown)."""


async def _drain(sink: ImportSink, items: Iterable[ImportItem], progress: Progress) -> None:
    """Adds every item with at most WINDOW in flight; a failure of one message is counted
    in the report (by the sink) and the import goes on."""
    pending: set[asyncio.Task[bool]] = set()

    async def one(item: ImportItem) -> bool:
        try:
            return await sink.add(item)
        except StoreError:
            return False
        finally:
            progress(item.folder, len(item.data))

    for item in items:
        if len(pending) >= WINDOW:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        pending.add(asyncio.create_task(one(item)))
    if pending:
        await asyncio.wait(pending)


async def import_maildir(
    store: Store, address: str, root: Path, progress: Progress
) -> ImportReport:
    """Imports every folder of the Maildir (or Maildir++) tree at ``root``."""
    root = root.resolve()
    if not root.is_dir():
        raise MailsteadError(f"{root} is not a directory")
    sink = await ImportSink.open(store, address, f"maildir:{root}")
    try:
        known: dict[str, set[str]] = {}

        def items() -> Iterable[ImportItem]:
            for entry in scan(root):
                if entry.folder not in known:
                    continue
                if entry.origin in known[entry.folder]:
                    sink.report.skipped += 1
                    progress(entry.folder, 0)
                    continue
                try:
                    data = entry.path.read_bytes()
                except OSError as exc:
                    sink.fail(entry.folder, entry.origin, f"cannot read {entry.path}: {exc}")
                    continue
                yield ImportItem(entry.folder, data, entry.flags, entry.internal_date,
                                 entry.origin)

        for folder in folders_of(root):
            target = await sink.ensure_folder(folder, special_use_of(folder))
            known[folder] = await sink.known(target)
        await _drain(sink, items(), progress)
    finally:
        await sink.close()
    return sink.report


async def import_mbox(
    store: Store, address: str, paths: Iterable[Path], folder: str, fmt: Format,
    progress: Progress,
) -> ImportReport:
    """Imports each mbox file (Apple Mail's ``NAME.mbox`` directory: its ``mbox`` file)
    into ``folder``."""
    report = ImportReport()
    for given in paths:
        path = given.resolve()
        if path.is_dir() and (path / "mbox").is_file():
            path = path / "mbox"
        if not path.is_file():
            raise MailsteadError(f"{given} is not an mbox file")
        sink = await ImportSink.open(store, address, f"mbox:{path}")
        try:
            target = await sink.ensure_folder(folder, special_use_of(folder))
            known = await sink.known(target)
            sidecar_path = str(path) + SIDECAR_SUFFIX
            sidecar = read_sidecar(sidecar_path) if os.path.exists(sidecar_path) else None
            with open(path, "rb") as f:
                found = read_mbox(f, fmt, sidecar=sidecar)
                await _drain(sink, _mbox_items(sink, found, folder, known, progress), progress)
        finally:
            await sink.close()
        _merge(report, sink.report)
    return report


def _mbox_items(
    sink: ImportSink, found: Iterable[MboxMessage | MboxFailure], folder: str,
    known: set[str], progress: Progress,
) -> Iterable[ImportItem]:
    for one in found:
        if isinstance(one, MboxFailure):
            sink.fail(folder, f"offset {one.offset}", one.reason)
            continue
        if one.origin in known:
            sink.report.skipped += 1
            progress(folder, 0)
            continue
        yield ImportItem(folder, one.data, one.flags, one.internal_date, one.origin)


def _merge(total: ImportReport, part: ImportReport) -> None:
    total.folders = max(total.folders, part.folders)
    total.messages += part.messages
    total.nbytes += part.nbytes
    total.skipped += part.skipped
    total.failed.extend(part.failed)


@dataclass
class ExportReport:
    """What an export wrote."""

    folders: int = 0
    messages: int = 0
    nbytes: int = 0
    dropped_keywords: int = 0


def _check_destination(dest: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ExportRefused(f"{dest} exists and is not empty: export into a new directory")
    dest.mkdir(parents=True, exist_ok=True)


async def _export(
    store: Store, address: str, write: Callable[[str, bytes, tuple[str, ...], float], None],
    start: Callable[[str], object], progress: Progress,
) -> ExportReport:
    account = await store.get_account(address)
    if account is None:
        raise ExportRefused(f"no account {address}")
    report = ExportReport()
    for box in await store.list_mailboxes(account.id):
        start(box.name)
        report.folders += 1
        rows = await store.list_messages_in(box.id)
        batch: list[tuple[str, tuple[str, ...], float]] = []
        held = 0
        for i, m in enumerate(rows):
            batch.append((m.blob, m.flags, m.internal_date))
            held += m.size
            if held < EXPORT_BATCH and i + 1 < len(rows):
                continue
            bodies = await store.read_blobs(list(dict.fromkeys(b for b, _, _ in batch)))
            for blob, flags, when in batch:
                data = bodies[blob]
                await asyncio.to_thread(write, box.name, data, flags, when)
                report.messages += 1
                report.nbytes += len(data)
                progress(box.name, len(data))
            batch, held = [], 0
    return report


async def export_maildir(
    store: Store, address: str, dest: Path, progress: Progress
) -> ExportReport:
    """Writes the account as Dovecot-compatible Maildir++ under ``dest`` (a new directory)."""
    _check_destination(dest)
    writer = MaildirWriter(dest)

    def write(folder: str, data: bytes, flags: tuple[str, ...], when: float) -> None:
        writer.add(folder, data, flags, when)

    report = await _export(store, address, write, writer.make_folder, progress)
    writer.sync_dirs()
    report.dropped_keywords = writer.dropped_keywords
    return report


def mbox_path(dest: Path, folder: str) -> Path:
    """Where a folder's mbox goes: ``A/B`` as ``DEST/A/B.mbox``, names as they read (UTF-8);
    a component that would climb out of DEST or hide ("..", ".x") gets a leading "_"."""
    parts = [p if p and not p.startswith(".") else "_" + p for p in folder.split("/")]
    return dest.joinpath(*parts[:-1], parts[-1] + ".mbox")


async def export_mbox(
    store: Store, address: str, dest: Path, progress: Progress
) -> ExportReport:
    """Writes one mboxrd file per folder under ``dest`` (a new directory), each with its
    sidecar of flags and internal dates."""
    _check_destination(dest)
    writers: dict[str, MboxWriter] = {}

    def start(folder: str) -> None:
        path = mbox_path(dest, folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        writers[folder] = MboxWriter(str(path))

    def write(folder: str, data: bytes, flags: tuple[str, ...], when: float) -> None:
        writers[folder].add(data, flags, when)

    try:
        return await _export(store, address, write, start, progress)
    finally:
        for w in writers.values():
            w.close()
