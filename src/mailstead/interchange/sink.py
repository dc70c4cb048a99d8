"""Where every importer (IMAP, Maildir, mbox) puts messages: one account's folders in the
store, each message made durable by ``accept_message`` with its flags and internal date, and
its origin recorded so that a second or interrupted run copies only what is missing.

Nothing is duplicated even when an import is killed between committing a message and
recording its origin: a message of the same bytes already in the folder that no origin of
this source claims is claimed instead of stored again (the multiset of stored SHA-256 names
minus the claimed ones; identical messages within one source folder are each kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter
from dataclasses import dataclass, field

from mailstead.core.errors import AlreadyExists, MailsteadError, StoreError
from mailstead.core.message import summarize
from mailstead.storage.blobs import blob_hash
from mailstead.storage.flags import SYSTEM_FLAGS, canonical_flags
from mailstead.storage.interfaces import (
    Account,
    IncomingMessage,
    LocalDelivery,
    MailboxInfo,
    Store,
)

# Origin rows are written in batches (one write transaction each) rather than per message.
ORIGIN_BATCH = 200


class ImportRefused(MailsteadError):
    """An import cannot start (unknown account, a folder that cannot be created)."""


@dataclass(frozen=True, slots=True)
class ImportItem:
    """One message to import, as its source has it."""

    folder: str  # Mailstead mailbox name ("/" hierarchy, "INBOX" for the inbox)
    data: bytes  # the message byte for byte
    flags: tuple[str, ...]  # IMAP flags and keywords; \Recent and invalid ones are dropped
    internal_date: float  # Unix time
    origin: str  # stable identity of the message within its source folder


@dataclass
class ImportReport:
    """What an import did: counts, and each failure with its folder, origin and reason."""

    folders: int = 0
    messages: int = 0
    nbytes: int = 0
    skipped: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one line each, for the summary


def import_flags(flags: tuple[str, ...]) -> tuple[str, ...]:
    """The flags the store can hold (storage/flags.py's rules): system flags canonical,
    valid keywords as given; what a foreign source may still send (\\Recent, unknown system
    flags, malformed keywords) is dropped instead of failing the message."""
    kept: list[str] = []
    for flag in flags:
        try:
            one = canonical_flags((flag,))
        except StoreError:
            continue
        if one and (not one[0].startswith("\\") or one[0] in SYSTEM_FLAGS):
            kept.append(one[0])
    return canonical_flags(kept)


@dataclass
class _Folder:
    info: MailboxInfo
    origins: dict[str, str]  # origin -> blob, recorded for this source
    unclaimed: Counter[str]  # stored blobs no origin of this source claims
    pending: list[tuple[str, str]] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ImportSink:
    """Imports into one account from one ``source`` ("imap://user@host:993",
    "maildir:/abs/path"); create with ``await ImportSink.open(...)``, end with ``close``."""

    def __init__(self, store: Store, account: Account, source: str) -> None:
        self.store = store
        self.account = account
        self.source = source
        self.report = ImportReport()
        self._targets: dict[str, str] = {}
        self._folders: dict[str, _Folder] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self.quota: int | None = None
        self.used = 0

    @classmethod
    async def open(cls, store: Store, address: str, source: str) -> ImportSink:
        account = await store.get_account(address)
        if account is None:
            raise ImportRefused(
                f"no account {address}: create it first with 'mailstead user add {address}'"
            )
        sink = cls(store, account, source)
        quota = await store.get_quota(account.id)
        sink.quota, sink.used = quota.limit, quota.used
        return sink

    async def ensure_folder(self, name: str, special_use: str | None = None) -> str:
        """Makes ``name`` ready to receive messages and returns the folder they go to: the
        account's folder with that special use (RFC 6154) when it has one, else ``name``,
        created with its parents when missing."""
        target = name
        if special_use is not None and name.upper() != "INBOX":
            for box in await self.store.list_mailboxes(self.account.id):
                if box.special_use == special_use:
                    target = box.name
                    break
        self._targets[name] = target
        await self._folder(target, special_use if target == name else None)
        return target

    async def known(self, folder: str) -> set[str]:
        """The origins of this source already in ``folder``."""
        return set((await self._folder(self._targets.get(folder, folder))).origins)

    async def renumbered(self, folder: str, current: str) -> int:
        """The source gave ``folder`` a new UIDVALIDITY: its UIDs no longer name the messages
        recorded under the old one (RFC 3501 section 2.3.1.1). Releases those origins, so
        ``add`` matches the messages by content instead (each stored copy claimed once); the
        origins under the ``current`` prefix stay. Returns how many were released."""
        found = await self._folder(self._targets.get(folder, folder))
        async with found.lock:
            old = [(o, b) for o, b in found.origins.items() if not o.startswith(current)]
            for origin, blob in old:
                del found.origins[origin]
                found.unclaimed[blob] += 1
        return len(old)

    async def add(self, item: ImportItem) -> bool:
        """Stores the message durably; False (counted as skipped) when its origin is there
        already. A failure of this one message is counted in the report and re-raised."""
        folder = await self._folder(self._targets.get(item.folder, item.folder))
        if item.origin in folder.origins:
            self.report.skipped += 1
            return False
        blob = blob_hash(item.data)
        async with folder.lock:
            if item.origin in folder.origins:
                self.report.skipped += 1
                return False
            claimed = folder.unclaimed[blob] > 0
            if claimed:
                folder.unclaimed[blob] -= 1
                folder.pending.append((item.origin, blob))
            # Reserved at once, so a second item of the same origin meanwhile is skipped; the
            # row is written only once the message is durable.
            folder.origins[item.origin] = blob
        if claimed:
            # Stored by an earlier run that was stopped before it recorded the origin.
            self.report.skipped += 1
            await self._flush_if_full(folder)
            return False
        try:
            self._charge(len(item.data))
            summary = summarize(item.data)
            await self.store.accept_message(IncomingMessage(
                data=item.data,
                queue_id="import-" + secrets.token_hex(6),
                mail_from="",
                local=[LocalDelivery(
                    self.account.id, folder.info.name, import_flags(item.flags)
                )],
                remote=[],
                internal_date=item.internal_date,
                envelope=summary.envelope,
                bodystructure=summary.bodystructure,
                thread_keys=summary.thread_keys,
            ))
        except BaseException as exc:
            del folder.origins[item.origin]
            if isinstance(exc, StoreError):
                self.used -= len(item.data)
                self.report.failed.append((item.folder, item.origin, str(exc)))
            raise
        folder.pending.append((item.origin, blob))
        self.report.messages += 1
        self.report.nbytes += len(item.data)
        await self._flush_if_full(folder)
        return True

    def fail(self, folder: str, origin: str, reason: str) -> None:
        """Counts a message the source could not give (the importer says why)."""
        self.report.failed.append((folder, origin, reason))

    async def close(self) -> None:
        """Records the origins still pending; call it at the end, also after a failure."""
        for folder in self._folders.values():
            await self._flush(folder)

    def _charge(self, size: int) -> None:
        # RFC 9208 section 4.3 as for APPEND: an import never takes the account past its
        # quota; the messages that do not fit are listed as failed with the reason.
        if self.quota is not None and self.used + size > self.quota:
            raise StoreError(
                f"over the account's quota ({self.used:,} of {self.quota:,} octets used)"
            )
        self.used += size

    async def _flush_if_full(self, folder: _Folder) -> None:
        if len(folder.pending) >= ORIGIN_BATCH:
            await self._flush(folder)

    async def _flush(self, folder: _Folder) -> None:
        rows, folder.pending = folder.pending, []
        if rows:
            await self.store.add_import_origins(folder.info.id, self.source, rows)

    async def _folder(self, name: str, special_use: str | None = None) -> _Folder:
        found = self._folders.get(name)
        if found is not None:
            return found
        lock = self._opening.setdefault(name, asyncio.Lock())
        async with lock:
            found = self._folders.get(name)
            if found is not None:
                return found
            info = await self.store.get_mailbox(self.account.id, name)
            if info is None:
                info = await self._create(name, special_use)
            origins = await self.store.import_origins(info.id, self.source)
            stored = Counter(m.blob for m in await self.store.list_messages_in(info.id))
            stored.subtract(Counter(origins.values()))
            folder = _Folder(info, origins, +stored)
            self._folders[name] = folder
            self.report.folders += 1
            return folder

    async def _create(self, name: str, special_use: str | None) -> MailboxInfo:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if await self.store.get_mailbox(self.account.id, parent) is None:
                with contextlib.suppress(AlreadyExists):
                    await self.store.create_mailbox(self.account.id, parent)
        try:
            return await self.store.create_mailbox(self.account.id, name, special_use)
        except AlreadyExists:
            info = await self.store.get_mailbox(self.account.id, name)
            if info is None:
                raise
            return info
