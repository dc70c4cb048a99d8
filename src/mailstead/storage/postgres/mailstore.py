"""PostgreSQL store: mailbox access for IMAP and POP3 (interfaces.MailStore): mailboxes,
subscriptions, flags, expunge, copy and move, change tracking (RFC 7162 CONDSTORE/QRESYNC),
full-text search (fts.py) and quotas.

It behaves exactly as the SQLite reference (storage/sqlite/mailboxes.py, messages.py): same
results, same exceptions. What changes is how several nodes stay correct on one database:

- MODSEQ and UID rules (RFC 7162 section 3.1, RFC 9051 section 2.3.1.1): every operation that
  takes a MODSEQ or UIDs first locks the mailbox row (``FOR UPDATE``, or the ``UPDATE
  mailboxes ... RETURNING`` itself) and keeps it until commit, so two nodes never hand out the
  same UID and MODSEQs become visible in increasing order: a client that saw HIGHESTMODSEQ N
  can never later meet a change at a MODSEQ <= N that it missed. Copies lock their two
  mailboxes in id order, so opposite copies cannot deadlock; a deadlock or serialization
  failure that happens anyway (with a delivery, say) is retried.
- Every change to mailboxes or messages calls ``notify`` inside its transaction: PostgreSQL
  delivers it at commit to every node, whose IDLE sessions wake up (base.py).
- Reads of several statements (``changes_since``) run in one REPEATABLE READ snapshot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from mailstead.core.errors import AlreadyExists, LimitExceeded, NotFound, StoreError
from mailstead.storage import flags as flagset
from mailstead.storage.interfaces import (
    FlagChange,
    FlagOp,
    MailboxChanges,
    MailboxCounts,
    MailboxInfo,
    MessageInfo,
    Quota,
    RecentInfo,
    StoreFlagsResult,
)
from mailstead.storage.postgres import fts
from mailstead.storage.postgres.base import PgBase, db_errors

# The backend-neutral rules are the reference's own: mailbox name checks, the INBOX spelling,
# the 32-bit UID limit, wire-size measurement, and VANISHED_KEEP (read at call time, so one
# setting governs both backends).
from mailstead.storage.sqlite import messages as reference
from mailstead.storage.sqlite.mailboxes import DELIMITER, MAX_NAME_LENGTH, check_name
from mailstead.storage.sqlite.writer import MAX_UID, WireShape, inbox_name, wire_shape

log = logging.getLogger(__name__)

T = TypeVar("T")
Conn = Any  # asyncpg.Connection (mypy sees asyncpg as untyped, see pyproject.toml)

# A transaction that hits one of these is rolled back by PostgreSQL and can simply run again.
_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
ATTEMPTS = 3

# PostgreSQL BIGINT: no MODSEQ is larger (RFC 7162 mod-sequence-value is 63 bits anyway).
MAX_BIGINT = 2**63 - 1

# Temporary names during a rename; control characters never pass ``check_name``, and TEXT
# cannot hold the NUL the SQLite store uses.
_RENAME_TMP = "\x01rename\x01"

_INFO = (
    "SELECT b.id, b.account_id, b.name, b.special_use, b.uidvalidity, b.uidnext,"
    " b.highestmodseq, (SELECT COUNT(*) FROM messages m WHERE m.mailbox_id = b.id)"
    " FROM mailboxes b"
)


def _columns(envelope: bool = True, bodystructure: bool = True) -> str:
    """The MessageInfo columns of ``messages m``; the JSON ones a caller does not want are
    replaced by empty text, so they are neither read nor sent."""
    env = "m.envelope" if envelope else "''"
    body = "m.bodystructure" if bodystructure else "''"
    return (
        "m.id, m.mailbox_id, m.uid, m.modseq, m.flags, m.internal_date, m.size, m.blob,"
        f" {env}, {body}, m.wire_size, m.unterminated, m.saved_at, m.thread_id"
    )


_MESSAGES = "SELECT " + _columns() + " FROM messages m"  # noqa: S608


def _mailbox_info(row: Any) -> MailboxInfo:
    return MailboxInfo(
        int(row[0]), int(row[1]), str(row[2]), row[3], int(row[4]), int(row[5]), int(row[6]),
        int(row[7]),
    )


def _storable(text: str) -> bool:
    """False for text PostgreSQL cannot hold (NUL, lone surrogates): no stored name has it."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _new_name(name: str) -> str:
    """``check_name`` plus what PostgreSQL cannot store (SQLite refuses it when writing)."""
    stored = check_name(name)
    if not _storable(stored):
        raise StoreError("invalid mailbox name")
    return stored


def _uid_list(uids: Sequence[int]) -> list[int]:
    """Sorted distinct UIDs that can exist (1 to 2**32-1); others are ignored, as missing."""
    return sorted({int(u) for u in uids if 0 < int(u) <= MAX_UID})


async def _measure(conn: Conn, rows: Sequence[Any], found: dict[str, WireShape]) -> None:
    """Measures the bodies of rows copied from a store older than migration 0004 (``wire_size``
    NULL), once each; the caller records ``found`` on the rows afterwards (``_save_wire``)."""
    for name in {str(r[7]) for r in rows if r[10] is None} - found.keys():
        data = await conn.fetchval("SELECT data FROM blobs WHERE hash = $1", name)
        if data is None:
            # RETR of this message fails anyway; report the stored size and try again on the
            # next listing rather than recording a guess (as the SQLite store does).
            log.warning("cannot measure message body %s: it is missing", name[:80])
            continue
        found[name] = wire_shape(bytes(data))


async def message_infos(
    conn: Conn, rows: Sequence[Any], found: dict[str, WireShape]
) -> list[MessageInfo]:
    """MessageInfo of rows selected with ``_columns``; rows lacking their wire size are
    measured into ``found`` (see ``_measure``)."""
    if any(r[10] is None for r in rows):
        await _measure(conn, rows, found)
    infos = []
    for r in rows:
        if r[10] is not None:
            wire, unterminated = int(r[10]), bool(r[11])
        else:
            shape = found.get(str(r[7]))
            wire, unterminated = (int(r[6]), False) if shape is None else shape
        infos.append(MessageInfo(
            int(r[0]), int(r[1]), int(r[2]), int(r[3]), flagset.parse_stored(r[4]),
            float(r[5]), int(r[6]), str(r[7]), str(r[8]), str(r[9]), wire, unterminated,
            -1.0 if r[12] is None else float(r[12]), r[13] or "",
        ))
    return infos


async def _save_wire(conn: Conn, found: dict[str, WireShape]) -> None:
    """Records measured figures on every row of each blob still lacking them (copies share
    the blob)."""
    await conn.execute(
        "UPDATE messages SET wire_size = u.size, unterminated = u.unterminated"
        " FROM unnest($1::text[], $2::bigint[], $3::smallint[]) AS u(blob, size, unterminated)"
        " WHERE messages.blob = u.blob AND messages.wire_size IS NULL",
        list(found), [s.size for s in found.values()],
        [int(s.unterminated) for s in found.values()],
    )


async def next_uidvalidity(conn: Conn) -> int:
    """A UIDVALIDITY never handed out before in this database: creation time in seconds,
    bumped past the last one so a mailbox deleted and recreated within a second still gets a
    new value (RFC 3501 section 2.3.1.1). The meta row is locked until commit, so two nodes
    never take the same value."""
    value = await conn.fetchval(
        "UPDATE meta SET value = GREATEST(value + 1, $1::bigint)"
        " WHERE name = 'last_uidvalidity' RETURNING value",
        int(time.time()),
    )
    return int(value)


async def insert_mailbox(conn: Conn, account_id: int, name: str, special_use: str | None) -> int:
    """Creates a mailbox with a fresh UIDVALIDITY (inside the caller's transaction); returns
    its id. Raises AlreadyExists."""
    mailbox_id = await conn.fetchval(
        "INSERT INTO mailboxes (account_id, name, special_use, uidvalidity, uidnext,"
        " highestmodseq) VALUES ($1, $2, $3, $4, 1, 1)"
        " ON CONFLICT (account_id, name) DO NOTHING RETURNING id",
        account_id, name, special_use, await next_uidvalidity(conn),
    )
    if mailbox_id is None:
        raise AlreadyExists(f"mailbox {name!r} exists already")
    return int(mailbox_id)


async def _check_limit(conn: Conn, account_id: int, limit: int | None) -> None:
    """LimitExceeded when the account has ``limit`` mailboxes already. The account row is
    locked until commit first, so creates of one account on any node are counted one after
    the other and cannot pass the limit together."""
    if limit is None:
        return
    await conn.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", account_id)
    count = await conn.fetchval(
        "SELECT COUNT(*) FROM mailboxes WHERE account_id = $1", account_id
    )
    if int(count) >= limit:
        raise LimitExceeded(f"the account has {limit} mailboxes, the most it may have")


async def _require_account(conn: Conn, account_id: int) -> None:
    if await conn.fetchval("SELECT 1 FROM accounts WHERE id = $1", account_id) is None:
        raise NotFound(f"no account {account_id}")


async def _lock_by_name(conn: Conn, account_id: int, name: str) -> int:
    """The id of the account's mailbox ``name``, locked until commit; NotFound otherwise."""
    mailbox_id = None
    if _storable(name):
        mailbox_id = await conn.fetchval(
            "SELECT id FROM mailboxes WHERE account_id = $1 AND name = $2 FOR UPDATE",
            account_id, name,
        )
    if mailbox_id is None:
        raise NotFound(f"no mailbox {name!r}")
    return int(mailbox_id)


async def _lock(conn: Conn, mailbox_id: int) -> Any:
    """(account_id, uidnext, highestmodseq) of the mailbox, locked until commit: every MODSEQ
    and UID is taken under this lock. NotFound for an unknown mailbox."""
    row = await conn.fetchrow(
        "SELECT account_id, uidnext, highestmodseq FROM mailboxes WHERE id = $1 FOR UPDATE",
        mailbox_id,
    )
    if row is None:
        raise NotFound(f"no mailbox with id {mailbox_id}")
    return row


async def _bump(conn: Conn, mailbox_id: int) -> int:
    """Takes the next MODSEQ of the (locked) mailbox and makes it the HIGHESTMODSEQ."""
    value = await conn.fetchval(
        "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = $1"
        " RETURNING highestmodseq",
        mailbox_id,
    )
    return int(value)


async def _remove(conn: Conn, mailbox_id: int, uids: list[int]) -> None:
    """Deletes the messages of the locked mailbox and records them as vanished at one new
    MODSEQ (RFC 7162 section 3.2.10)."""
    modseq = await _bump(conn, mailbox_id)
    await conn.execute(
        "DELETE FROM messages WHERE mailbox_id = $1 AND uid = ANY($2::bigint[])",
        mailbox_id, uids,
    )
    await conn.execute(
        "INSERT INTO vanished (mailbox_id, uid, modseq)"
        " SELECT $1, u, $3 FROM unnest($2::bigint[]) AS u"
        " ON CONFLICT (mailbox_id, uid) DO UPDATE SET modseq = excluded.modseq",
        mailbox_id, uids, modseq,
    )
    await _compact_vanished(conn, mailbox_id)


async def remove_messages(conn: Conn, mailbox_id: int, uids: Sequence[int]) -> list[int]:
    """Removes those of ``uids`` the mailbox holds, whatever their flags, in the caller's
    transaction (RFC 8508 REPLACE); the mailbox is locked first. Returns the UIDs removed."""
    await _lock(conn, mailbox_id)
    rows = await conn.fetch(
        "SELECT uid FROM messages WHERE mailbox_id = $1 AND uid = ANY($2::bigint[]) ORDER BY uid",
        mailbox_id, _uid_list(uids),
    )
    gone = [int(r[0]) for r in rows]
    if gone:
        await _remove(conn, mailbox_id, gone)
    return gone


async def _compact_vanished(conn: Conn, mailbox_id: int) -> None:
    """Keeps at most VANISHED_KEEP rows per mailbox; raises ``vanished_floor`` to the highest
    MODSEQ forgotten, below which ``changes_since`` answers conservatively."""
    count = await conn.fetchval("SELECT COUNT(*) FROM vanished WHERE mailbox_id = $1", mailbox_id)
    excess = int(count) - reference.VANISHED_KEEP
    if excess <= 0:
        return
    floor = await conn.fetchval(
        "SELECT modseq FROM vanished WHERE mailbox_id = $1 ORDER BY modseq LIMIT 1 OFFSET $2",
        mailbox_id, excess - 1,
    )
    # Whole MODSEQs only: a MODSEQ is either exactly known or entirely below the floor.
    await conn.execute(
        "DELETE FROM vanished WHERE mailbox_id = $1 AND modseq <= $2", mailbox_id, floor
    )
    await conn.execute(
        "UPDATE mailboxes SET vanished_floor = GREATEST(vanished_floor, $2) WHERE id = $1",
        mailbox_id, floor,
    )


async def _copy(
    conn: Conn, src_id: int, uids: Sequence[int], dst_id: int, *, move: bool
) -> tuple[list[tuple[int, int]], set[int]]:
    """COPY/MOVE inside the caller's transaction; returns the COPYUID pairs and the accounts
    changed. The copies get consecutive new UIDs in source UID order (RFC 4315), one new
    MODSEQ, all from one ``UPDATE mailboxes ... RETURNING``; a move then expunges the sources
    (RFC 6851 section 3.3: atomically, as one command). Bodies are shared, not rewritten."""
    # Both rows locked in id order, so copies in opposite directions cannot deadlock.
    locked = {
        int(r[0]): int(r[1])
        for r in await conn.fetch(
            "SELECT id, account_id FROM mailboxes WHERE id = ANY($1::bigint[])"
            " ORDER BY id FOR UPDATE",
            sorted({src_id, dst_id}),
        )
    }
    for mailbox_id in (src_id, dst_id):
        if mailbox_id not in locked:
            raise NotFound(f"no mailbox with id {mailbox_id}")
    olds = [
        int(r[0])
        for r in await conn.fetch(
            "SELECT uid FROM messages WHERE mailbox_id = $1 AND uid = ANY($2::bigint[])"
            " ORDER BY uid",
            src_id, _uid_list(uids),
        )
    ]
    if not olds:
        return [], set()
    count = len(olds)
    row = await conn.fetchrow(
        "UPDATE mailboxes SET uidnext = uidnext + $2, highestmodseq = highestmodseq + 1"
        " WHERE id = $1 RETURNING uidnext - $2, highestmodseq",
        dst_id, count,
    )
    first, modseq = int(row[0]), int(row[1])
    if first + count - 1 > MAX_UID:  # RFC 9051 section 2.3.1.1: UIDs are 32-bit
        raise StoreError("the destination mailbox has run out of UIDs")  # rolls back
    pairs = [(old, first + i) for i, old in enumerate(olds)]
    # wire_size and unterminated travel with the copy (NULL stays NULL: measured lazily).
    await conn.execute(
        # RFC 8514 section 3: saved_at takes its default (now); the thread id travels.
        "INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, size, blob,"
        " envelope, bodystructure, wire_size, unterminated, thread_id)"
        " SELECT $1, u.new, $2, m.flags, m.internal_date, m.size, m.blob, m.envelope,"
        " m.bodystructure, m.wire_size, m.unterminated, m.thread_id"
        " FROM unnest($4::bigint[], $5::bigint[]) AS u(old, new)"
        " JOIN messages m ON m.mailbox_id = $3 AND m.uid = u.old",
        dst_id, modseq, src_id, olds, [new for _, new in pairs],
    )
    touched = {locked[dst_id]}
    if move:
        await _remove(conn, src_id, olds)
        touched.add(locked[src_id])
    return pairs, touched


class MailStoreMixin(PgBase):
    """The MailStore operations (see the module docstring; conventions in base.py)."""

    # Plumbing ------------------------------------------------------------------------------

    async def _read(
        self, what: str, fn: Callable[[Conn], Awaitable[T]], *, snapshot: bool = False
    ) -> T:
        """Runs ``fn`` on a pooled connection; ``snapshot``: in one read-only REPEATABLE
        READ transaction, so its statements see one consistent state."""
        self.check_open()
        async with db_errors(what), self.pool.acquire() as conn:
            if not snapshot:
                return await fn(conn)
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                return await fn(conn)

    async def _write(self, what: str, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """Runs ``fn`` in one transaction, again (up to ATTEMPTS times) when PostgreSQL
        aborted it for a deadlock or a serialization failure."""
        self.check_open()
        async with db_errors(what), self.pool.acquire() as conn:
            attempt = 1
            while True:
                try:
                    async with conn.transaction():
                        return await fn(conn)
                except _RETRYABLE:
                    if attempt >= ATTEMPTS:
                        raise
                    attempt += 1

    async def _measured(
        self,
        what: str,
        fn: Callable[[Conn, dict[str, WireShape]], Awaitable[T]],
        *,
        snapshot: bool = False,
    ) -> T:
        """A read that lists messages: rows copied from a store older than migration 0004
        are measured while read and their figures written back, so each is measured once.
        A failed write-back only costs a measurement next time."""
        found: dict[str, WireShape] = {}
        result = await self._read(what, lambda c: fn(c, found), snapshot=snapshot)
        if found:
            try:
                await self._write("recording wire sizes", lambda c: _save_wire(c, found))
            except StoreError as exc:
                log.warning("cannot record the wire sizes of %d bodies: %s", len(found), exc)
        return result

    # Mailboxes -----------------------------------------------------------------------------

    async def get_mailbox(self, account_id: int, name: str) -> MailboxInfo | None:
        stored = inbox_name(name)  # RFC 3501 section 5.1: INBOX in any case
        if not _storable(stored):
            return None

        async def run(conn: Conn) -> MailboxInfo | None:
            row = await conn.fetchrow(
                _INFO + " WHERE b.account_id = $1 AND b.name = $2", account_id, stored
            )
            return None if row is None else _mailbox_info(row)

        return await self._read("reading a mailbox", run)

    async def mailbox_by_id(self, mailbox_id: int) -> MailboxInfo | None:
        async def run(conn: Conn) -> MailboxInfo | None:
            row = await conn.fetchrow(_INFO + " WHERE b.id = $1", mailbox_id)
            return None if row is None else _mailbox_info(row)

        return await self._read("reading a mailbox", run)

    async def recent_info(self, mailbox_id: int) -> RecentInfo:
        async def run(conn: Conn) -> RecentInfo:
            row = await conn.fetchrow(
                "SELECT b.first_recent_uid, (SELECT COUNT(*) FROM messages m"
                " WHERE m.mailbox_id = b.id AND m.uid >= b.first_recent_uid)"
                " FROM mailboxes b WHERE b.id = $1",
                mailbox_id,
            )
            if row is None:
                raise NotFound(f"no mailbox with id {mailbox_id}")
            return RecentInfo(int(row[0]), int(row[1]))

        return await self._read("reading recent messages", run)

    async def claim_recent(self, mailbox_id: int, upto: int) -> int:
        # It only ever rises: at ``upto`` already, there is nothing to take and no lock to
        # wait for. Otherwise the row lock orders the claims of every node.
        first = (await self.recent_info(mailbox_id)).first_uid
        if first >= upto:
            return first

        async def run(conn: Conn) -> int:
            old = await conn.fetchval(
                "SELECT first_recent_uid FROM mailboxes WHERE id = $1 FOR UPDATE", mailbox_id
            )
            if old is None:
                raise NotFound(f"no mailbox with id {mailbox_id}")
            if upto > old:
                await conn.execute(
                    "UPDATE mailboxes SET first_recent_uid = $2 WHERE id = $1", mailbox_id, upto
                )
            return int(old)

        return await self._write("taking recent messages", run)

    async def create_mailbox(
        self, account_id: int, name: str, special_use: str | None = None,
        *, limit: int | None = None,
    ) -> MailboxInfo:
        stored = _new_name(name)

        async def run(conn: Conn) -> MailboxInfo:
            await _require_account(conn, account_id)
            await _check_limit(conn, account_id, limit)
            mailbox_id = await insert_mailbox(conn, account_id, stored, special_use)
            await self.notify(conn, [account_id])
            return _mailbox_info(await conn.fetchrow(_INFO + " WHERE b.id = $1", mailbox_id))

        return await self._write("creating a mailbox", run)

    async def delete_mailbox(self, account_id: int, name: str) -> None:
        stored = inbox_name(name)
        if stored == "INBOX":  # RFC 9051 section 6.3.5: it is an error to delete INBOX
            raise StoreError("INBOX cannot be deleted")

        async def run(conn: Conn) -> None:
            mailbox_id = await _lock_by_name(conn, account_id, stored)
            # Messages first, so the quota trigger still finds the account through the
            # mailbox (a cascade would run it after the mailbox is gone); their blobs wait for
            # garbage collection. Vanished rows go by ON DELETE CASCADE.
            await conn.execute("DELETE FROM messages WHERE mailbox_id = $1", mailbox_id)
            await conn.execute("DELETE FROM mailboxes WHERE id = $1", mailbox_id)
            await self.notify(conn, [account_id])

        await self._write("deleting a mailbox", run)

    async def rename_mailbox(
        self, account_id: int, old: str, new: str, *, limit: int | None = None
    ) -> None:
        source = inbox_name(old)
        target = _new_name(new)

        async def run(conn: Conn) -> None:
            source_id = await _lock_by_name(conn, account_id, source)
            if await conn.fetchval(
                "SELECT 1 FROM mailboxes WHERE account_id = $1 AND name = $2", account_id, target
            ):
                raise AlreadyExists(f"mailbox {target!r} exists already")
            try:
                if source == "INBOX":
                    # The one rename that adds a mailbox.
                    await _check_limit(conn, account_id, limit)
                    await self._rename_inbox(conn, account_id, source_id, target)
                else:
                    await _rename_tree(conn, account_id, source_id, source, target)
            except asyncpg.UniqueViolationError:
                # Another node created one of the new names after our checks.
                raise AlreadyExists(f"mailbox {target!r} exists already") from None
            await self.notify(conn, [account_id])

        await self._write("renaming a mailbox", run)

    async def _rename_inbox(
        self, conn: Conn, account_id: int, inbox_id: int, target: str
    ) -> None:
        """RFC 3501 section 6.3.5 / RFC 9051 section 6.3.6: renaming INBOX moves its messages
        to a new mailbox of that name and leaves INBOX empty; its inferiors are unaffected."""
        new_id = await insert_mailbox(conn, account_id, target, None)
        uids = [
            int(r[0])
            for r in await conn.fetch("SELECT uid FROM messages WHERE mailbox_id = $1", inbox_id)
        ]
        if uids:
            await _copy(conn, inbox_id, uids, new_id, move=True)

    async def set_subscribed(
        self, account_id: int, name: str, subscribed: bool, *, limit: int | None = None
    ) -> None:
        async def run(conn: Conn) -> None:
            await _require_account(conn, account_id)
            stored = _new_name(name)
            if subscribed and limit is not None:
                # The account row lock orders subscribes of one account on every node.
                await conn.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", account_id)
                known = await conn.fetchval(
                    "SELECT 1 FROM subscriptions WHERE account_id = $1 AND name = $2",
                    account_id, stored,
                )
                count = await conn.fetchval(
                    "SELECT COUNT(*) FROM subscriptions WHERE account_id = $1", account_id
                )
                if not known and int(count) >= limit:
                    raise LimitExceeded(
                        f"the account has {limit} subscriptions, the most it may have"
                    )
            if subscribed:
                await conn.execute(
                    "INSERT INTO subscriptions (account_id, name) VALUES ($1, $2)"
                    " ON CONFLICT DO NOTHING",
                    account_id, stored,
                )
            else:
                await conn.execute(
                    "DELETE FROM subscriptions WHERE account_id = $1 AND name = $2",
                    account_id, stored,
                )
            # IMAP NOTIFY SubscriptionChange (RFC 5465 section 5.5) watches subscriptions.
            await self.notify(conn, [account_id])

        await self._write("changing a subscription", run)

    async def list_subscriptions(self, account_id: int) -> list[str]:
        async def run(conn: Conn) -> list[str]:
            await _require_account(conn, account_id)
            # COLLATE "C": code point order, as SQLite's BINARY, whatever the database locale.
            rows = await conn.fetch(
                "SELECT name FROM subscriptions WHERE account_id = $1 ORDER BY name COLLATE \"C\"",
                account_id,
            )
            return [str(r[0]) for r in rows]

        return await self._read("listing subscriptions", run, snapshot=True)

    async def mailbox_counts(
        self, account_id: int, mailbox_id: int | None = None
    ) -> dict[int, MailboxCounts]:
        async def run(conn: Conn) -> dict[int, MailboxCounts]:
            # Flags are canonical and separated by single spaces (storage/flags.py); a
            # keyword cannot contain a backslash (RFC 9051 section 9), so the padded
            # substring finds exactly the system flag.
            sql = (
                "SELECT m.mailbox_id,"
                " COUNT(*) FILTER (WHERE strpos(' ' || m.flags || ' ', ' \\Seen ') = 0),"
                " COUNT(*) FILTER (WHERE strpos(' ' || m.flags || ' ', ' \\Deleted ') > 0),"
                " SUM(m.size) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
                " WHERE b.account_id = $1"
            )
            if mailbox_id is None:
                rows = await conn.fetch(sql + " GROUP BY m.mailbox_id", account_id)
            else:
                rows = await conn.fetch(
                    sql + " AND m.mailbox_id = $2 GROUP BY m.mailbox_id", account_id, mailbox_id
                )
            return {int(r[0]): MailboxCounts(int(r[1]), int(r[2]), int(r[3])) for r in rows}

        return await self._read("counting messages", run, snapshot=True)

    # Messages ------------------------------------------------------------------------------

    async def list_messages_in(self, mailbox_id: int) -> list[MessageInfo]:
        async def run(conn: Conn, found: dict[str, WireShape]) -> list[MessageInfo]:
            rows = await conn.fetch(
                _MESSAGES + " WHERE m.mailbox_id = $1 ORDER BY m.uid", mailbox_id
            )
            if not rows:
                await _require_mailbox(conn, mailbox_id)
            return await message_infos(conn, rows, found)

        return await self._measured("listing messages", run)

    async def get_messages(
        self,
        mailbox_id: int,
        uids: Sequence[int] | None,
        *,
        envelope: bool = True,
        bodystructure: bool = True,
    ) -> list[MessageInfo]:
        select = "SELECT " + _columns(envelope, bodystructure)
        wanted = None if uids is None else _uid_list(uids)

        async def run(conn: Conn, found: dict[str, WireShape]) -> list[MessageInfo]:
            if wanted is None:
                rows = await conn.fetch(
                    select + " FROM messages m WHERE m.mailbox_id = $1 ORDER BY m.uid",  # noqa: S608
                    mailbox_id,
                )
            else:
                rows = await _fetch_uids(conn, select, mailbox_id, wanted)
            if not rows:
                await _require_mailbox(conn, mailbox_id)
            return await message_infos(conn, rows, found)

        return await self._measured("reading messages", run)

    async def store_flags(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        op: FlagOp,
        flags: Sequence[str],
        unchanged_since: int | None = None,
    ) -> StoreFlagsResult:
        given = tuple(flags)
        wanted = _uid_list(uids)

        async def run(conn: Conn) -> StoreFlagsResult:
            mailbox = await _lock(conn, mailbox_id)
            canonical = flagset.canonical_flags(given)
            rows = await conn.fetch(
                "SELECT uid, modseq, flags FROM messages"
                " WHERE mailbox_id = $1 AND uid = ANY($2::bigint[]) ORDER BY uid",
                mailbox_id, wanted,
            )
            modified, updates = flagset.plan_store(rows, op, canonical, unchanged_since)
            if not updates:
                return StoreFlagsResult(changed=(), modified=tuple(modified))
            # RFC 7162 section 3.1: one command, one new MODSEQ for every message it changed.
            modseq = await _bump(conn, mailbox_id)
            await conn.execute(
                "UPDATE messages m SET flags = u.flags, modseq = $2"
                " FROM unnest($3::bigint[], $4::text[]) AS u(uid, flags)"
                " WHERE m.mailbox_id = $1 AND m.uid = u.uid",
                mailbox_id, modseq, [u for u, _ in updates], [" ".join(f) for _, f in updates],
            )
            await self.notify(conn, [int(mailbox["account_id"])])
            return StoreFlagsResult(
                changed=tuple(FlagChange(uid, modseq, after) for uid, after in updates),
                modified=tuple(modified),
            )

        return await self._write("storing flags", run)

    async def expunge(self, mailbox_id: int, uids: Sequence[int] | None = None) -> list[int]:
        wanted = None if uids is None else _uid_list(uids)
        # Flags are stored canonical and space-separated, so an exact token test suffices.
        deleted = "strpos(' ' || flags || ' ', ' \\Deleted ') > 0"

        async def run(conn: Conn) -> list[int]:
            mailbox = await _lock(conn, mailbox_id)
            if wanted is None:
                rows = await conn.fetch(
                    f"SELECT uid FROM messages WHERE mailbox_id = $1 AND {deleted}"  # noqa: S608
                    " ORDER BY uid",
                    mailbox_id,
                )
            else:
                rows = await conn.fetch(
                    f"SELECT uid FROM messages WHERE mailbox_id = $1 AND {deleted}"  # noqa: S608
                    " AND uid = ANY($2::bigint[]) ORDER BY uid",
                    mailbox_id, wanted,
                )
            return await self._remove_found(conn, mailbox_id, mailbox, rows)

        return await self._write("expunging messages", run)

    async def _remove_found(
        self, conn: Conn, mailbox_id: int, locked: Any, rows: Sequence[Any]
    ) -> list[int]:
        """Removes the messages of ``rows`` (their UID first, ascending) from the mailbox
        ``_lock`` gave ``locked`` for, and tells the account's watchers; returns the UIDs."""
        gone = [int(r[0]) for r in rows]
        if gone:
            await _remove(conn, mailbox_id, gone)
            await self.notify(conn, [int(locked["account_id"])])
        return gone

    async def delete_messages(self, mailbox_id: int, uids: Sequence[int]) -> list[int]:
        wanted = _uid_list(uids)

        async def run(conn: Conn) -> list[int]:
            mailbox = await _lock(conn, mailbox_id)
            rows = await conn.fetch(
                "SELECT uid FROM messages WHERE mailbox_id = $1 AND uid = ANY($2::bigint[])"
                " ORDER BY uid",
                mailbox_id, wanted,
            )
            return await self._remove_found(conn, mailbox_id, mailbox, rows)

        return await self._write("deleting messages", run)

    async def copy_messages(
        self, src_mailbox_id: int, uids: Sequence[int], dst_mailbox_id: int, *, move: bool = False
    ) -> list[tuple[int, int]]:
        wanted = tuple(uids)

        async def run(conn: Conn) -> list[tuple[int, int]]:
            pairs, touched = await _copy(conn, src_mailbox_id, wanted, dst_mailbox_id, move=move)
            await self.notify(conn, touched)
            return pairs

        return await self._write("copying messages", run)

    async def changes_since(self, mailbox_id: int, modseq: int) -> MailboxChanges:
        # Beyond BIGINT nothing can be newer; SQLite would fail on such a number instead.
        since = max(-MAX_BIGINT, min(int(modseq), MAX_BIGINT))

        async def run(conn: Conn, found: dict[str, WireShape]) -> MailboxChanges:
            state = await conn.fetchrow(
                "SELECT uidvalidity, uidnext, highestmodseq, vanished_floor"
                " FROM mailboxes WHERE id = $1",
                mailbox_id,
            )
            if state is None:
                raise NotFound(f"no mailbox with id {mailbox_id}")
            uidnext = int(state["uidnext"])
            changed = await message_infos(
                conn,
                await conn.fetch(
                    _MESSAGES + " WHERE m.mailbox_id = $1 AND m.modseq > $2 ORDER BY m.uid",
                    mailbox_id, since,
                ),
                found,
            )
            if since >= int(state["vanished_floor"]):
                rows = await conn.fetch(
                    "SELECT uid FROM vanished WHERE mailbox_id = $1 AND modseq > $2"
                    " ORDER BY uid",
                    mailbox_id, since,
                )
                vanished = [int(r[0]) for r in rows]
            else:
                # Older than what is remembered exactly: every UID below UIDNEXT that is not
                # present may have been expunged since (RFC 7162 section 3.2.5.1 allows such
                # extra UIDs).
                present = {
                    int(r[0])
                    for r in await conn.fetch(
                        "SELECT uid FROM messages WHERE mailbox_id = $1", mailbox_id
                    )
                }
                vanished = [uid for uid in range(1, uidnext) if uid not in present]
            return MailboxChanges(
                uidvalidity=int(state["uidvalidity"]),
                uidnext=uidnext,
                highestmodseq=int(state["highestmodseq"]),
                changed=tuple(changed),
                vanished=tuple(vanished),
            )

        return await self._measured("reading mailbox changes", run, snapshot=True)

    async def search_text(self, mailbox_id: int, text: str, *, part: str) -> set[int]:
        """See fts.py: the mailbox's pending blobs are indexed first, then one query over
        its documents answers."""
        fts.parse_part(part)  # StoreError for a bad part before any work

        async def run(conn: Conn) -> set[int]:
            await _require_mailbox(conn, mailbox_id)
            await fts.index_pending(conn, mailbox_id)
            return await fts.search(conn, mailbox_id, text, part)

        return await self._read("searching messages", run)

    # Quota ---------------------------------------------------------------------------------

    async def get_quota(self, account_id: int) -> Quota:
        async def run(conn: Conn) -> Quota:
            row = await conn.fetchrow(
                "SELECT used_bytes, quota, used_messages, quota_warned FROM accounts"
                " WHERE id = $1", account_id
            )
            if row is None:
                raise NotFound(f"no account {account_id}")
            return Quota(
                used=int(row[0]), limit=None if row[1] is None else int(row[1]),
                messages=int(row[2]), warned=int(row[3]),
            )

        return await self._read("reading a quota", run)

    async def set_quota(self, account_id: int, limit: int | None) -> None:
        if limit is not None and limit < 0:
            raise StoreError("a quota cannot be negative")

        async def run(conn: Conn) -> None:
            if await conn.fetchval(
                "UPDATE accounts SET quota = $2 WHERE id = $1 RETURNING id", account_id, limit
            ) is None:
                raise NotFound(f"no account {account_id}")

        await self._write("setting a quota", run)

    async def swap_quota_warning(self, account_id: int, level: int) -> int:
        async def run(conn: Conn) -> int:
            # The row lock makes the read and the write one step across nodes.
            old = await conn.fetchval(
                "SELECT quota_warned FROM accounts WHERE id = $1 FOR UPDATE", account_id
            )
            if old is None:
                raise NotFound(f"no account {account_id}")
            if int(old) != level:
                await conn.execute(
                    "UPDATE accounts SET quota_warned = $2 WHERE id = $1", account_id, level
                )
            return int(old)

        return await self._write("recording a quota warning", run)


async def _require_mailbox(conn: Conn, mailbox_id: int) -> None:
    if await conn.fetchval("SELECT 1 FROM mailboxes WHERE id = $1", mailbox_id) is None:
        raise NotFound(f"no mailbox with id {mailbox_id}")


async def _fetch_uids(conn: Conn, select: str, mailbox_id: int, uids: list[int]) -> list[Any]:
    """Rows of ``uids`` (sorted, distinct) in one statement, ascending by UID: long runs as
    index range scans, the rest as index probes of an ``= ANY`` array. Nothing else of the
    mailbox is read, so fetching one message costs one row."""
    if not uids:
        return []
    runs, loose = reference.uid_runs(uids)
    starts, ends = [a for a, _ in runs], [b for _, b in runs]
    # ``select`` is one of our own column lists (``_columns``), never client text.
    parts = []
    args: list[Any] = [mailbox_id]
    if loose:
        args.append(loose)
        parts.append(
            select + " FROM messages m"  # noqa: S608
            f" WHERE m.mailbox_id = $1 AND m.uid = ANY(${len(args)}::bigint[])"
        )
    if starts:
        args += [starts, ends]
        parts.append(
            select + f" FROM unnest(${len(args) - 1}::bigint[], ${len(args)}::bigint[])"  # noqa: S608
            " AS r(lo, hi) JOIN messages m ON m.mailbox_id = $1 AND m.uid BETWEEN r.lo AND r.hi"
        )
    sql = " UNION ALL ".join(parts) + " ORDER BY 3"  # column 3: uid
    rows: list[Any] = await conn.fetch(sql, *args)
    return rows


async def _rename_tree(
    conn: Conn, account_id: int, source_id: int, source: str, target: str
) -> None:
    """Renames the mailbox and every inferior (RFC 9051 section 6.3.6): "a/b" -> "x/b"."""
    if target == source or target.startswith(source + DELIMITER):
        raise StoreError("a mailbox cannot be renamed into itself")
    prefix = source + DELIMITER
    children = await conn.fetch(
        "SELECT id, name FROM mailboxes WHERE account_id = $1 AND starts_with(name, $2)"
        " ORDER BY id FOR UPDATE",
        account_id, prefix,
    )
    renames = [(source_id, target)] + [
        (int(i), target + DELIMITER + str(n)[len(prefix) :]) for i, n in children
    ]
    taken = {
        str(r[0])
        for r in await conn.fetch(
            "SELECT name FROM mailboxes WHERE account_id = $1 AND name = ANY($2::text[])",
            account_id, [n for _, n in renames[1:]],
        )
    }
    for _, name in renames[1:]:
        if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_LENGTH:
            raise StoreError("the renamed mailbox name would be too long")
        if name in taken:
            raise AlreadyExists(f"mailbox {name!r} exists already")
    ids = [i for i, _ in renames]
    # Two steps through unique temporary names, since PostgreSQL checks the unique
    # constraint row by row and a new name may be another row's old one.
    await conn.execute(
        "UPDATE mailboxes SET name = $2 || id::text WHERE id = ANY($1::bigint[])",
        ids, _RENAME_TMP,
    )
    await conn.execute(
        "UPDATE mailboxes b SET name = u.name FROM unnest($1::bigint[], $2::text[]) AS u(id, name)"
        " WHERE b.id = u.id",
        ids, [n for _, n in renames],
    )

