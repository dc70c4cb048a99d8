"""PostgreSQL store: domains, accounts, aliases, administrators, delivery (``accept_message``,
blobs, garbage collection) and the listings. Mirrors the SQLite store (sqlite/store.py,
writer.py, admin.py): same results, same exceptions.

Delivery is one statement, so one round trip and one (implicit) transaction per message; see
``_ACCEPT`` for how UIDs stay unique and ascending with several nodes delivering at once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from mailstead.core.errors import AlreadyExists, InUse, NotFound, StoreError
from mailstead.storage.blobs import blob_hash
from mailstead.storage.flags import canonical_flags
from mailstead.storage.interfaces import (
    DEFAULT_MAILBOXES,
    AcceptResult,
    Account,
    Alias,
    IncomingMessage,
    LoginRecord,
    MailboxInfo,
    MessageInfo,
    QueueEntry,
    address_key,
)
from mailstead.storage.postgres.base import CHANNEL, PgBase, db_errors
from mailstead.storage.postgres.mailstore import remove_messages
from mailstead.storage.postgres.outbound import QUEUE_COLUMNS, entry, rowcount
from mailstead.storage.queuedsn import row_values
from mailstead.storage.sqlite.admin import split_domain
from mailstead.storage.sqlite.security import login_record
from mailstead.storage.sqlite.writer import MAX_UID, WireShape, inbox_name, wire_shape
from mailstead.storage.threads import keys_of, own_thread

log = logging.getLogger(__name__)

_ACCOUNT = "SELECT id, address, password_hash, created_at FROM accounts"

# Everything RCPT asks about an address in one statement (see SQLiteStore.lookup_recipient):
# domain is local, the account, the room left under its quota (RFC 9208 section 5.1; NULL
# when unlimited), the text of its active Sieve script.
_RECIPIENT = (
    "SELECT (SELECT 1 FROM domains WHERE name = $1), a.id, a.address, a.password_hash,"
    " a.created_at, a.quota - a.used_bytes,"
    " (SELECT s.content FROM sieve_scripts s WHERE s.account_id = a.id AND s.active = 1)"
    " FROM (SELECT 1) AS one LEFT JOIN accounts a ON a.address_key = $2"
)

# The UIDVALIDITYs of ``$3`` new mailboxes, in one step: each above the last one ever handed
# out and at least the current time in seconds (as next_uidvalidity in sqlite/admin.py), so a
# mailbox deleted and recreated, even within the second, gets a new value (RFC 3501 section
# 2.3.1.1). The meta row's lock serialises account creation across nodes.
_NEW_MAILBOXES = (
    "WITH v AS (UPDATE meta SET value = GREATEST(value + 1, $2::bigint) + $3::bigint - 1"
    " WHERE name = 'last_uidvalidity' RETURNING value)"
    " INSERT INTO mailboxes (account_id, name, special_use, uidvalidity, uidnext, highestmodseq)"
    " SELECT $1, d.name, d.special_use, v.value - $3::bigint + d.i, 1, 1"
    " FROM v, unnest($4::text[], $5::text[]) WITH ORDINALITY AS d (name, special_use, i)"
    " ORDER BY d.i"
)

# One delivery, all or nothing, in one statement (an implicit transaction):
# - ``locked`` takes the row locks of the target mailboxes in id order before anything else,
#   so deliveries into overlapping mailboxes never deadlock, and a mailbox stays locked until
#   commit: a second node's delivery waits, then reads the UIDNEXT this one left. UIDs are
#   thus unique and become visible in ascending order (RFC 3501 section 2.3.1.1). With
#   ORDER BY and FOR UPDATE, PostgreSQL sorts first and locks in that order.
# - ``verdict``: every mailbox exists and has room for its UIDs (32 bits). When not, no
#   sub-statement writes anything and the caller raises, as the SQLite writer does.
# - ``boxes`` advances UIDNEXT by the copies of the message in each mailbox and HIGHESTMODSEQ
#   by as many: each copy gets a MODSEQ of its own, as one by one in SQLite (RFC 7162
#   section 3.1). It updates the latest row version (READ COMMITTED re-reads it).
# - the blob row: INSERT of the bytes, or for a body stored already only its created_at is
#   refreshed ("last used", as in SQLite): that row lock and new date keep collect_garbage
#   from deleting a body a delivery is about to reference.
# - ``copies`` inserts by account so the quota trigger (migration 0002) locks accounts in one
#   order too; ``queued`` one row per remote recipient (DESIGN rule 7).
# - the notification goes out at commit, to every node (base.py).
_ACCEPT = """
WITH wanted AS (
    SELECT * FROM unnest($5::bigint[], $6::text[], $7::bigint[]) AS w (account_id, name, n)
), locked AS (
    SELECT b.id, b.account_id, b.name, b.uidnext, w.n
      FROM mailboxes b JOIN wanted w ON b.account_id = w.account_id AND b.name = w.name
     ORDER BY b.id FOR UPDATE OF b
), verdict AS (
    SELECT count(*) = cardinality($5::bigint[])
           AND coalesce(max(uidnext + n - 1), 0) <= $23::bigint AS ok
      FROM locked
), blob AS (
    INSERT INTO blobs (hash, size, created_at, data)
    SELECT $1::text, $2::bigint, $3::float8, $4::bytea WHERE (SELECT ok FROM verdict)
    ON CONFLICT (hash) DO UPDATE SET created_at = EXCLUDED.created_at
), boxes AS (
    UPDATE mailboxes b SET uidnext = b.uidnext + l.n, highestmodseq = b.highestmodseq + l.n
      FROM locked l WHERE b.id = l.id AND (SELECT ok FROM verdict)
    RETURNING b.id, b.account_id, b.name, b.uidnext - l.n AS first_uid,
              b.highestmodseq - l.n AS last_modseq
), threads AS (
    -- RFC 8474 section 5.2 (storage/threads.py): per account, the thread of the first of the
    -- message's keys already filed there, else a new thread named after the body.
    SELECT a.account_id, coalesce(
               (SELECT t.thread_id FROM unnest($29::text[]) WITH ORDINALITY AS q (key, i)
                  JOIN thread_keys t ON t.account_id = a.account_id AND t.key = q.key
                 ORDER BY q.i LIMIT 1),
               $30::text) AS thread_id
      FROM (SELECT DISTINCT account_id FROM wanted) a
), filed AS (
    INSERT INTO thread_keys (account_id, key, thread_id)
    SELECT t.account_id, q.key, t.thread_id FROM threads t, unnest($29::text[]) AS q (key)
     WHERE (SELECT ok FROM verdict)
    ON CONFLICT DO NOTHING
), copies AS (
    INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, size, blob, envelope,
                          bodystructure, wire_size, unterminated, thread_id)
    SELECT x.id, x.first_uid + c.k, x.last_modseq + 1 + c.k, c.flags, $12::float8, $2::bigint,
           $1::text, $13::text, $14::text, $15::bigint, $16::smallint, t.thread_id
      FROM unnest($8::bigint[], $9::text[], $10::bigint[], $11::text[])
           AS c (account_id, name, k, flags)
      JOIN boxes x ON x.account_id = c.account_id AND x.name = c.name
      JOIN threads t ON t.account_id = c.account_id
     ORDER BY x.account_id, x.id, c.k
), queued AS (
    INSERT INTO queue (queue_id, mail_from, rcpt_to, blob, state, attempts, next_attempt,
                       created_at, auth_account_id, dsn_notify, dsn_orcpt, dsn_ret, dsn_envid,
                       requiretls)
    SELECT $18::text, $19::text, r.rcpt, $1::text, 'queued', 0, $3::float8, $3::float8,
           $20::bigint, r.notify, r.orcpt, $26::text, $27::text, $28::smallint
      FROM unnest($17::text[], $24::text[], $25::text[]) WITH ORDINALITY
           AS r (rcpt, notify, orcpt, i)
     WHERE (SELECT ok FROM verdict)
     ORDER BY r.i
), notified AS (
    SELECT pg_notify($22::text, $21::text)
     WHERE (SELECT ok FROM verdict) AND $21::text <> ''
)
SELECT v.ok, l.account_id, l.name, l.id, l.uidnext, (SELECT count(*) FROM notified)
  FROM verdict v LEFT JOIN locked l ON true
"""

_MESSAGE_COLUMNS = (
    "m.id, m.mailbox_id, m.uid, m.modseq, m.flags, m.internal_date, m.size, m.blob,"
    " m.envelope, m.bodystructure, m.wire_size, m.unterminated"
)


def _account(row: Any, at: int = 0) -> Account:
    return Account(int(row[at]), row[at + 1], row[at + 2], float(row[at + 3]))


class CoreMixin(PgBase):
    """The administration and delivery half of ``interfaces.Store``; conventions in base.py."""

    @contextlib.asynccontextmanager
    async def _connection(self, what: str) -> AsyncIterator[Any]:
        """A pooled connection; driver errors inside become StoreError (``db_errors``)."""
        self.check_open()
        async with db_errors(what), self.pool.acquire() as conn:
            yield conn

    # Domains -----------------------------------------------------------------------------

    async def add_domain(self, name: str) -> None:
        async with self._connection("adding a domain") as conn:
            try:
                await conn.execute(
                    "INSERT INTO domains (name, created_at) VALUES ($1, $2)",
                    name.lower(), time.time(),
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists(f"domain {name} exists already") from None

    async def remove_domain(self, name: str) -> None:
        async with self._connection("removing a domain") as conn, conn.transaction():
            # FOR UPDATE: an account or alias being added on another node holds a key-share
            # lock on the domain row (its foreign key), so the counts below include it.
            ident = await conn.fetchval(
                "SELECT id FROM domains WHERE name = $1 FOR UPDATE", name.lower()
            )
            if ident is None:
                raise NotFound(f"domain {name} is not a local domain")
            accounts, aliases = await conn.fetchrow(
                "SELECT (SELECT COUNT(*) FROM accounts WHERE domain_id = $1),"
                " (SELECT COUNT(DISTINCT source) FROM aliases WHERE domain_id = $1)",
                ident,
            )
            if accounts or aliases:
                raise InUse(
                    f"domain {name} still has {accounts} account(s) and {aliases} alias(es); "
                    "remove them first"
                )
            await conn.execute("DELETE FROM domains WHERE id = $1", ident)
            # The domain's DKIM keys go with it (same transaction): a private key must not
            # outlive the domain, and a domain added again later gets fresh keys.
            await conn.execute("DELETE FROM dkim_keys WHERE domain = $1", name.lower())

    async def list_domains(self) -> list[str]:
        # COLLATE "C": byte order whatever the database's locale, as SQLite sorts.
        async with self._connection("listing domains") as conn:
            rows = await conn.fetch('SELECT name FROM domains ORDER BY name COLLATE "C"')
        return [str(r[0]) for r in rows]

    async def is_local_domain(self, name: str) -> bool:
        async with self._connection("looking up a domain") as conn:
            found = await conn.fetchval("SELECT 1 FROM domains WHERE name = $1", name.lower())
        return found is not None

    # Accounts ----------------------------------------------------------------------------

    async def add_account(self, address: str, password_hash: str) -> Account:
        domain = split_domain(address)
        created = time.time()
        async with self._connection("adding an account") as conn, conn.transaction():
            ident = await conn.fetchval("SELECT id FROM domains WHERE name = $1", domain)
            if ident is None:
                raise NotFound(f"domain {domain} is not a local domain")
            if not address.rpartition("@")[0]:
                raise StoreError(f"not an account address: {address[:200]!r}")
            try:
                account_id = await conn.fetchval(
                    "INSERT INTO accounts (domain_id, address, address_key, password_hash,"
                    " created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    ident, address, address_key(address), password_hash, created,
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists(f"account {address} exists already") from None
            except asyncpg.ForeignKeyViolationError:  # the domain was removed meanwhile
                raise NotFound(f"domain {domain} is not a local domain") from None
            await conn.execute(
                _NEW_MAILBOXES,
                account_id, int(created), len(DEFAULT_MAILBOXES),
                [name for name, _ in DEFAULT_MAILBOXES], [use for _, use in DEFAULT_MAILBOXES],
            )
        return Account(int(account_id), address, password_hash, created)

    async def get_account(self, address: str) -> Account | None:
        async with self._connection("looking up an account") as conn:
            row = await conn.fetchrow(_ACCOUNT + " WHERE address_key = $1", address_key(address))
        return None if row is None else _account(row)

    async def get_account_by_id(self, account_id: int) -> Account | None:
        async with self._connection("looking up an account") as conn:
            row = await conn.fetchrow(_ACCOUNT + " WHERE id = $1", account_id)
        return None if row is None else _account(row)

    async def lookup_recipient(
        self, domain: str, address: str
    ) -> tuple[bool, Account | None, int | None, str | None]:
        """(domain is local, account of ``address`` or None, octets left under its quota or
        None when unlimited, the text of the account's active Sieve script or None), in one
        round trip; the last two are None without an account. Nothing is cached: a change
        made elsewhere applies to the next call."""
        async with self._connection("looking up a recipient") as conn:
            row = await conn.fetchrow(_RECIPIENT, domain.lower(), address_key(address))
        local = row[0] is not None
        if row[1] is None:
            return local, None, None, None
        return local, _account(row, 1), None if row[5] is None else int(row[5]), row[6]

    async def list_accounts(self, domain: str | None = None) -> list[Account]:
        async with self._connection("listing accounts") as conn:
            if domain is None:
                rows = await conn.fetch(_ACCOUNT + ' ORDER BY address_key COLLATE "C"')
            else:
                rows = await conn.fetch(
                    _ACCOUNT + " WHERE domain_id = (SELECT id FROM domains WHERE name = $1)"  # noqa: S608
                    ' ORDER BY address_key COLLATE "C"',
                    domain.lower(),
                )
        return [_account(r) for r in rows]

    async def set_password(self, address: str, password_hash: str) -> None:
        async with self._connection("setting a password") as conn:
            status = await conn.execute(
                "UPDATE accounts SET password_hash = $1 WHERE address_key = $2",
                password_hash, address_key(address),
            )
        if rowcount(status) == 0:
            raise NotFound(f"no account {address}")

    async def remove_account(self, address: str) -> None:
        # Mailboxes, messages and the rest go by ON DELETE CASCADE; the blobs wait for
        # collect_garbage.
        async with self._connection("removing an account") as conn:
            status = await conn.execute(
                "DELETE FROM accounts WHERE address_key = $1", address_key(address)
            )
        if rowcount(status) == 0:
            raise NotFound(f"no account {address}")

    # Aliases -----------------------------------------------------------------------------

    async def add_alias(self, source: str, targets: Sequence[str]) -> None:
        wanted = tuple(targets)
        if not wanted:
            raise StoreError("an alias needs at least one target")
        domain = split_domain(source)
        async with self._connection("adding an alias") as conn, conn.transaction():
            ident = await conn.fetchval("SELECT id FROM domains WHERE name = $1", domain)
            if ident is None:
                raise NotFound(f"domain {domain} is not a local domain")
            for target in wanted:
                split_domain(target)  # a target must at least look like an address
            try:
                await conn.executemany(
                    "INSERT INTO aliases (domain_id, source, source_key, target, target_key)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source_key, target_key) DO NOTHING",
                    [(ident, source, address_key(source), t, address_key(t)) for t in wanted],
                )
            except asyncpg.ForeignKeyViolationError:  # the domain was removed meanwhile
                raise NotFound(f"domain {domain} is not a local domain") from None

    async def get_alias(self, source: str) -> tuple[str, ...] | None:
        async with self._connection("looking up an alias") as conn:
            rows = await conn.fetch(
                "SELECT target FROM aliases WHERE source_key = $1 ORDER BY id",
                address_key(source),
            )
        return tuple(str(r[0]) for r in rows) if rows else None

    async def list_aliases(self) -> list[Alias]:
        async with self._connection("listing aliases") as conn:
            rows = await conn.fetch(
                'SELECT source, source_key, target FROM aliases ORDER BY source_key COLLATE "C", id'
            )
        grouped: dict[str, tuple[str, list[str]]] = {}
        for source, key, target in rows:
            grouped.setdefault(key, (source, []))[1].append(target)
        return [Alias(source, tuple(targets)) for source, targets in grouped.values()]

    async def remove_alias(self, source: str, targets: Sequence[str] = ()) -> None:
        key = address_key(source)
        wanted = tuple(targets)
        async with self._connection("removing an alias") as conn, conn.transaction():
            if not wanted:
                status = await conn.execute("DELETE FROM aliases WHERE source_key = $1", key)
                if rowcount(status) == 0:
                    raise NotFound(f"no alias {source}")
                return
            rows = await conn.fetch(
                "DELETE FROM aliases WHERE source_key = $1 AND target_key = ANY($2::text[])"
                " RETURNING target_key",
                key, [address_key(t) for t in wanted],
            )
            removed = {str(r[0]) for r in rows}
            for target in wanted:
                # Raising rolls back the targets already removed: all or nothing. A target
                # named twice is missing the second time, as in SQLite.
                if address_key(target) not in removed:
                    raise NotFound(f"alias {source} has no target {target}")
                removed.discard(address_key(target))

    # Messages ----------------------------------------------------------------------------

    async def accept_message(self, message: IncomingMessage) -> AcceptResult:
        """Durable before it returns (committed; the database's own fsync). One statement,
        so one round trip and one transaction per message (``_ACCEPT``). If the caller is
        cancelled after sending it, the delivery may still be committed."""
        self.check_open()
        if not message.local and not message.remote:
            raise StoreError("a message needs at least one local or remote recipient")
        async with self._connection("delivering a message") as conn:
            result = await _accept_on(conn, message)
        if result.delivered:
            self.indexer.wake()
        return result

    async def accept_messages(
        self, batch: Sequence[IncomingMessage], *, replace: tuple[int, int] | None = None
    ) -> list[AcceptResult]:
        """All of ``batch`` in one transaction, or none (RFC 3502 MULTIAPPEND); ``replace``
        (mailbox id, UID) is removed in the same transaction (RFC 8508)."""
        self.check_open()
        if not batch:
            return []
        if any(not m.local or m.remote for m in batch):
            raise StoreError("a batch holds local deliveries only")
        async with self._connection("delivering messages") as conn, conn.transaction():
            results = [await _accept_on(conn, m) for m in batch]
            if replace is not None:
                await remove_messages(conn, replace[0], [replace[1]])
        self.indexer.wake()
        return results

    async def list_mailboxes(self, account_id: int) -> list[MailboxInfo]:
        async with self._connection("listing mailboxes") as conn:
            rows = await conn.fetch(
                "SELECT b.id, b.account_id, b.name, b.special_use, b.uidvalidity, b.uidnext,"
                " b.highestmodseq, (SELECT COUNT(*) FROM messages m WHERE m.mailbox_id = b.id)"
                " FROM mailboxes b WHERE b.account_id = $1 ORDER BY b.id",
                account_id,
            )
        return [
            MailboxInfo(
                int(r[0]), int(r[1]), r[2], r[3], int(r[4]), int(r[5]), int(r[6]), int(r[7])
            )
            for r in rows
        ]

    async def list_messages(self, account_id: int, mailbox: str) -> list[MessageInfo]:
        """Messages by ascending UID; raises NotFound when the mailbox does not exist. Rows
        copied from a store older than migration 0004 lack their wire size: it is measured
        from the body read in the same statement and written back, once per body."""
        name = inbox_name(mailbox)
        async with self._connection("listing messages") as conn:
            rows = await conn.fetch(
                f"SELECT {_MESSAGE_COLUMNS},"  # noqa: S608 (constant text)
                " CASE WHEN m.wire_size IS NULL"
                "  THEN (SELECT data FROM blobs WHERE hash = m.blob) END, m.saved_at, m.thread_id"
                " FROM mailboxes b LEFT JOIN messages m ON m.mailbox_id = b.id"
                " WHERE b.account_id = $1 AND b.name = $2 ORDER BY m.uid",
                account_id, name,
            )
            if not rows:
                raise NotFound(f"no mailbox {name!r}")
            infos, found = _message_infos(rows)
            if found:
                await _save_wire(conn, found)
        return infos

    async def read_blob(self, blob: str) -> bytes:
        async with self._connection("reading a message body") as conn:
            data = await conn.fetchval("SELECT data FROM blobs WHERE hash = $1", blob)
        if data is None:
            raise NotFound(f"no such blob: {blob[:80]!r}")
        # The hash is the row's key, not a check the database makes: verify it as SQLite does.
        return self.integrity.check_blob(blob, bytes(data))

    async def read_blobs(self, blobs: Sequence[str]) -> dict[str, bytes]:
        names = list(dict.fromkeys(blobs))
        if not names:
            return {}
        async with self._connection("reading message bodies") as conn:
            rows = await conn.fetch(
                "SELECT hash, data FROM blobs WHERE hash = ANY($1::text[])", names)
        out: dict[str, bytes] = {}
        for row in rows:
            data = bytes(row[1])
            if self.integrity.intact(row[0], data):  # read_blob reports a damaged one
                out[row[0]] = data
        return out

    async def verify_bodies(self) -> tuple[int, list[str], list[str]]:
        """(bodies referenced, missing, damaged) for ``mailstead verify``: every referenced
        body's SHA-256 computed by the server (sha256(), PostgreSQL 11), none sent here."""
        async with self._connection("verifying message bodies") as conn:
            rows = await conn.fetch(
                "WITH wanted AS (SELECT blob FROM messages"
                " UNION SELECT blob FROM queue WHERE blob IS NOT NULL)"
                " SELECT w.blob, b.hash IS NULL,"
                "  b.hash IS NOT NULL AND encode(sha256(b.data), 'hex') <> w.blob"
                " FROM wanted w LEFT JOIN blobs b ON b.hash = w.blob")
        missing = sorted(str(r[0]) for r in rows if r[1])
        damaged = sorted(str(r[0]) for r in rows if r[2])
        return len(rows), missing, damaged

    # Outbound queue ----------------------------------------------------------------------

    async def list_queue(self) -> list[QueueEntry]:
        async with self._connection("listing the queue") as conn:
            rows = await conn.fetch(f"SELECT {QUEUE_COLUMNS} FROM queue ORDER BY id")  # noqa: S608
        return [entry(r) for r in rows]

    # Maintenance -------------------------------------------------------------------------

    async def collect_garbage(self, grace: float = 3600.0) -> int:
        """Deletes blobs no message and no queue row references, last used (delivered)
        more than ``grace`` seconds ago, with their full-text rows; returns how many.

        Safe against deliveries on any node: a delivery locks the blob row (and refreshes
        its date) before it references it. Candidates are locked FOR UPDATE SKIP LOCKED, so
        a blob a delivery holds is skipped, and a delivery that comes later waits for this
        transaction, then inserts the body afresh. The delete re-checks the references in a
        new snapshot (READ COMMITTED), which sees deliveries committed meanwhile."""
        cutoff = time.time() - grace
        unreferenced = (
            " AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob = b.hash)"
            " AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.blob = b.hash)"
        )
        async with self._connection("collecting garbage") as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT hash FROM blobs b WHERE created_at < $1"  # noqa: S608 (constant text)
                + unreferenced + " FOR UPDATE SKIP LOCKED",
                cutoff,
            )
            if not rows:
                return 0
            rows = await conn.fetch(
                "DELETE FROM blobs b WHERE hash = ANY($1::text[])"  # noqa: S608 (constant text)
                + unreferenced + " RETURNING hash",
                [r[0] for r in rows],
            )
            names = [r[0] for r in rows]
            await conn.execute("DELETE FROM fts_docs WHERE blob = ANY($1::text[])", names)
            await conn.execute("DELETE FROM fts_pending WHERE blob = ANY($1::text[])", names)
        return len(names)

    # Administrators (issue 7) --------------------------------------------------------------

    async def set_admin(self, address: str, admin: bool) -> None:
        async with self._connection("setting an administrator") as conn:
            status = await conn.execute(
                "UPDATE accounts SET is_admin = $1 WHERE address_key = $2",
                1 if admin else 0, address_key(address),
            )
        if rowcount(status) == 0:
            raise NotFound(f"no account {address}")

    async def is_admin(self, account_id: int) -> bool:
        async with self._connection("looking up an administrator") as conn:
            flag = await conn.fetchval("SELECT is_admin FROM accounts WHERE id = $1", account_id)
        return bool(flag)

    async def list_admin_ids(self) -> list[int]:
        async with self._connection("listing administrators") as conn:
            rows = await conn.fetch("SELECT id FROM accounts WHERE is_admin = 1 ORDER BY id")
        return [int(r[0]) for r in rows]

    async def recent_login_failures(self, limit: int) -> list[LoginRecord]:
        """The newest failed attempts of every account (and of unknown names), newest first;
        ``limit`` is clamped to 1..10000 as in SQLite."""
        wanted = max(1, min(limit, 10_000))
        async with self._connection("listing failed logins") as conn:
            rows = await conn.fetch(
                "SELECT at, account_id, username, protocol, client_ip, mechanism, success,"
                " reason, app_password FROM login_audit WHERE success = 0"
                " ORDER BY at DESC, id DESC LIMIT $1",
                wanted,
            )
        return [login_record(r) for r in rows]


def _message_infos(rows: Sequence[Any]) -> tuple[list[MessageInfo], dict[str, WireShape]]:
    """MessageInfo of rows selected with ``_MESSAGE_COLUMNS`` plus the body (column 12) where
    the wire size is unknown; also the figures measured now, by blob. A LEFT JOIN row without
    a message (an empty mailbox) is skipped."""
    infos: list[MessageInfo] = []
    found: dict[str, WireShape] = {}
    for r in rows:
        if r[0] is None:
            continue
        if r[10] is not None:
            wire, unterminated = int(r[10]), bool(r[11])
        elif r[12] is not None:
            shape = found.get(r[7]) or wire_shape(bytes(r[12]))
            found[r[7]] = shape
            wire, unterminated = shape.size, shape.unterminated
        else:  # the body is missing: report the stored size (RETR fails anyway)
            wire, unterminated = int(r[6]), False
        infos.append(MessageInfo(
            int(r[0]), int(r[1]), int(r[2]), int(r[3]), tuple(r[4].split()), float(r[5]),
            int(r[6]), r[7], r[8], r[9], wire, unterminated,
            -1.0 if r[13] is None else float(r[13]), r[14] or "",
        ))
    return infos, found


async def _save_wire(conn: Any, found: dict[str, WireShape]) -> None:
    """Records lazily measured figures on every row of each blob still lacking them (copies
    share the blob). A failure only costs a measurement next time."""
    try:
        await conn.executemany(
            "UPDATE messages SET wire_size = $1, unterminated = $2"
            " WHERE blob = $3 AND wire_size IS NULL",
            [(s.size, int(s.unterminated), blob) for blob, s in found.items()],
        )
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("cannot record the wire sizes of %d bodies: %s", len(found), exc)


async def _accept_on(conn: Any, message: IncomingMessage) -> AcceptResult:
    """One delivery through ``_ACCEPT`` on ``conn`` (in its transaction, if one is open)."""
    msg = message
    data = msg.data
    name = blob_hash(data)
    shape: WireShape = wire_shape(data)
    # Each copy's place: its mailbox, and its rank among the copies in that mailbox.
    targets = [(local.account_id, inbox_name(local.mailbox)) for local in msg.local]
    copies: dict[tuple[int, str], int] = {}
    ranks: list[int] = []
    for target in targets:
        ranks.append(copies.get(target, 0))
        copies[target] = ranks[-1] + 1
    flags = [" ".join(canonical_flags(local.flags)) for local in msg.local]
    accounts = sorted({account for account, _ in targets})
    dsn = [row_values(msg, rcpt) for rcpt in msg.remote]
    rows = await conn.fetch(
        _ACCEPT,
        name, len(data), time.time(), data,
        [a for a, _ in copies], [n for _, n in copies], list(copies.values()),
        [a for a, _ in targets], [n for _, n in targets], ranks, flags,
        msg.internal_date, msg.envelope, msg.bodystructure,
        shape.size, int(shape.unterminated),
        list(msg.remote), msg.queue_id, msg.mail_from, msg.auth_account_id,
        ",".join(str(a) for a in accounts), CHANNEL, MAX_UID,
        [v[0] for v in dsn], [v[1] for v in dsn],
        msg.envelope_dsn.ret if msg.envelope_dsn else None,
        msg.envelope_dsn.envid if msg.envelope_dsn else None, int(msg.requiretls),
        list(keys_of(msg.thread_keys, msg.envelope)), own_thread(name),
    )
    first: dict[tuple[int, str], tuple[int, int]] = {
        (int(r[1]), str(r[2])): (int(r[3]), int(r[4])) for r in rows if r[1] is not None
    }
    if not rows[0][0]:  # nothing was written: say why, as the SQLite writer would
        for (account, box), rank in zip(targets, ranks, strict=True):
            if (account, box) not in first:
                raise NotFound(f"no mailbox {box!r} for account {account}")
            if first[account, box][1] + rank > MAX_UID:
                raise StoreError(f"mailbox {box!r} has run out of UIDs")
        raise StoreError("the delivery was refused by the database")
    delivered = tuple(
        (account, first[account, box][0], first[account, box][1] + rank)
        for (account, box), rank in zip(targets, ranks, strict=True)
    )
    return AcceptResult(blob=name, delivered=delivered, queued=len(msg.remote))
