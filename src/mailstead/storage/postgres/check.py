"""``mailstead verify`` on PostgreSQL: the same checks as ``sqlite/check.py``, in SQL. The
rows are read in one REPEATABLE READ READ ONLY transaction (one snapshot, which blocks no
writer); the bodies' SHA-256 and lengths are computed by the server, so no body is sent."""

from __future__ import annotations

import time
from typing import Any

from mailstead.storage.consistency import (
    AccountUsage,
    MailboxCounters,
    MessageRow,
    VerifyReport,
    lost_messages,
)
from mailstead.storage.postgres.base import db_errors

_COUNTERS = (
    "SELECT a.address, b.name, b.uidnext, b.highestmodseq,"
    " GREATEST(COALESCE((SELECT MAX(uid) FROM messages m WHERE m.mailbox_id = b.id), 0),"
    "          COALESCE((SELECT MAX(uid) FROM vanished v WHERE v.mailbox_id = b.id), 0)),"
    " GREATEST(COALESCE((SELECT MAX(modseq) FROM messages m WHERE m.mailbox_id = b.id), 0),"
    "          COALESCE((SELECT MAX(modseq) FROM vanished v WHERE v.mailbox_id = b.id), 0))"
    " FROM mailboxes b JOIN accounts a ON a.id = b.account_id ORDER BY b.id"
)
_USAGE = (
    "SELECT a.address, a.used_bytes, a.used_messages,"
    " (SELECT COALESCE(SUM(m.size), 0) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
    "   WHERE b.account_id = a.id),"
    " (SELECT COUNT(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
    "   WHERE b.account_id = a.id)"
    " FROM accounts a ORDER BY a.id"
)
# Every referenced body once, however many messages share it: found, intact (SHA-256 computed
# by the server), its length and whether it ends without LF. The CRLF-form size needs a count
# of bare LFs, which SQL on bytea cannot take cheaply; it is checked only for not being below
# the size.
_BODIES = (
    "WITH wanted AS (SELECT blob FROM messages UNION SELECT blob FROM queue"
    "  WHERE blob IS NOT NULL)"
    " SELECT w.blob, x.hash IS NOT NULL,"
    "  x.hash IS NOT NULL AND encode(sha256(x.data), 'hex') = w.blob,"
    "  COALESCE(octet_length(x.data), 0),"
    "  COALESCE(octet_length(x.data) > 0"
    "   AND get_byte(x.data, octet_length(x.data) - 1) <> 10, false)"
    " FROM wanted w LEFT JOIN blobs x ON x.hash = w.blob"
)
_MESSAGES = (
    "SELECT a.address, b.name, m.uid, m.blob, m.size, m.wire_size, m.unterminated"
    " FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
    " JOIN accounts a ON a.id = b.account_id ORDER BY m.id"
)
_ORPHANS = (
    "SELECT hash FROM blobs b WHERE created_at < $1"
    " AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob = b.hash)"
    " AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.blob = b.hash) ORDER BY hash"
)
_DANGLING_INDEX = (
    "SELECT blob FROM fts_docs f WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.hash = f.blob)"
)


def _row_faults(row: MessageRow, length: int, unterminated: bool) -> list[str]:
    found = []
    if row.size != length:
        found.append(f"message {row.where}: size {row.size}, its body has {length} bytes")
    if row.wire_size is not None and row.wire_size < length:
        found.append(f"message {row.where}: wire size {row.wire_size} is below its body's "
                     f"{length} bytes")
    if row.unterminated is not None and row.unterminated != unterminated:
        found.append(f"message {row.where}: last-line flag {int(row.unterminated)}, its body "
                     f"{int(unterminated)}")
    return found


async def verify_contents(pool: Any, report: VerifyReport, grace: float) -> None:
    """Fills ``report`` from one snapshot of the database."""
    cutoff = time.time() - grace
    async with db_errors("verifying the store"), pool.acquire() as conn, conn.transaction(
        isolation="repeatable_read", readonly=True
    ):
        counters = [MailboxCounters(str(r[0]), str(r[1]), *map(int, r[2:6]))
                    for r in await conn.fetch(_COUNTERS)]
        usage = [AccountUsage(str(r[0]), *map(int, r[1:5])) for r in await conn.fetch(_USAGE)]
        messages = await conn.fetch(_MESSAGES)
        bodies = {str(r[0]): (bool(r[1]), bool(r[2]), int(r[3]), bool(r[4]))
                  for r in await conn.fetch(_BODIES)}
        report.orphans = [str(r[0]) for r in await conn.fetch(_ORPHANS, cutoff)]
        index = [str(r[0]) for r in await conn.fetch(_DANGLING_INDEX)]
        report.files = int(await conn.fetchval("SELECT COUNT(*) FROM blobs"))
    report.mailboxes, report.accounts, report.messages = len(counters), len(usage), len(messages)
    for mailbox in counters:
        report.counters.extend(mailbox.faults())
    for account in usage:
        report.usage.extend(account.faults())
    report.index = [f"text-index document for body {name} that no longer exists"
                    for name in index]
    missing: set[str] = set()
    damaged: set[str] = set()
    rows: list[MessageRow] = []
    for r in messages:
        row = MessageRow(str(r[0]), str(r[1]), int(r[2]), str(r[3]), int(r[4]),
                         None if r[5] is None else int(r[5]),
                         None if r[6] is None else bool(r[6]))
        rows.append(row)
        found, intact, length, unterminated = bodies[row.blob]
        if found and intact:
            report.sizes.extend(_row_faults(row, length, unterminated))
    for name, (found, intact, _, _) in bodies.items():
        if not found:
            missing.add(name)
        elif not intact:
            damaged.add(name)
    report.bodies = len(bodies)
    report.missing, report.damaged = sorted(missing), sorted(damaged)
    report.lost = lost_messages(rows, missing, damaged)


async def repair(pool: Any, orphans: list[str], grace: float) -> list[str]:
    """Raises UIDNEXT and HIGHESTMODSEQ (never lowers them: RFC 9051 section 2.3.1.1), sets
    the quota usage from the messages and drops dangling index documents, in one
    transaction; each mailbox row is locked FOR UPDATE, as a delivery locks it, so a
    concurrent delivery is ordered before or after. Orphan bodies are left to
    ``collect_garbage``, which removes them safely against deliveries on any node."""
    del orphans, grace  # removed by collect_garbage with the same grace
    done: list[str] = []
    async with db_errors("repairing the store"), pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM mailboxes FOR UPDATE")
        for c in [MailboxCounters(str(r[0]), str(r[1]), *map(int, r[2:6]))
                  for r in await conn.fetch(_COUNTERS)]:
            uidnext = max(c.uidnext, c.max_uid + 1)
            modseq = max(c.highestmodseq, c.max_modseq)
            if (uidnext, modseq) != (c.uidnext, c.highestmodseq):
                await conn.execute(
                    "UPDATE mailboxes SET uidnext = $1, highestmodseq = $2 WHERE name = $3"
                    " AND account_id = (SELECT id FROM accounts WHERE address = $4)",
                    uidnext, modseq, c.name, c.account)
                done.append(f"mailbox {c.name!r} of {c.account}: UIDNEXT {c.uidnext} -> "
                            f"{uidnext}, HIGHESTMODSEQ {c.highestmodseq} -> {modseq}")
        await conn.execute("SELECT 1 FROM accounts FOR UPDATE")
        for u in [AccountUsage(str(r[0]), *map(int, r[1:5])) for r in await conn.fetch(_USAGE)]:
            if u.faults():
                await conn.execute(
                    "UPDATE accounts SET used_bytes = $1, used_messages = $2 WHERE address = $3",
                    u.sum_bytes, u.count, u.account)
                done.append(f"account {u.account}: quota usage set to {u.sum_bytes} bytes in "
                            f"{u.count} messages")
        index = [str(r[0]) for r in await conn.fetch(_DANGLING_INDEX)]
        if index:
            await conn.execute("DELETE FROM fts_docs WHERE blob = ANY($1::text[])", index)
            await conn.execute("DELETE FROM fts_pending WHERE blob = ANY($1::text[])", index)
            done.append(f"dropped {len(index)} dangling text-index documents")
    return done
