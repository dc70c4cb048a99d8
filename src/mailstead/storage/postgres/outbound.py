"""PostgreSQL store: The outbound queue and DKIM keys (interfaces.OutboundStore).

Mirrors storage/sqlite/outbound.py row for row. Where SQLite relies on its single writer,
these statements rely on row locks instead, so several nodes can share one queue: a row is
claimed by one node at a time (``FOR UPDATE SKIP LOCKED``) and a lease that runs out (its node
died) is handed back by ``recover_active`` on any node.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from mailstead.core.errors import AlreadyExists, InUse, NotFound, StoreError
from mailstead.storage.interfaces import DkimKey, QueueEntry, QueueUpdate
from mailstead.storage.postgres.base import PgBase, db_errors
from mailstead.storage.queuedsn import DSN_COLUMNS, entry_fields

QUEUE_COLUMNS = (
    "id, queue_id, mail_from, rcpt_to, blob, state, attempts, next_attempt, created_at,"
    " last_error, warned, last_attempt, " + DSN_COLUMNS
)
UPDATE_STATES = ("delivered", "deferred", "bounced")
_KEY_COLUMNS = "domain, selector, algorithm, private_key, public_key, created_at, active"

# One statement picks the due rows of both classes and claims them, so the choice and the
# claim cannot be split by another node. Each class is locked with SKIP LOCKED: rows another
# node is claiming at this moment are passed over rather than waited for (and never claimed
# twice); rows locked but not chosen are released when the statement commits. The split is
# the SQLite store's (claim_due there): retries get min(due, max(limit - new due, half)) and
# new mail the rest, each oldest first.
_CLAIM = f"""
WITH fresh AS (
    SELECT id, next_attempt FROM queue WHERE state = 'queued' AND next_attempt <= $1
    ORDER BY next_attempt, id LIMIT $2 FOR UPDATE SKIP LOCKED
), retry AS (
    SELECT id, next_attempt FROM queue WHERE state = 'deferred' AND next_attempt <= $1
    ORDER BY next_attempt, id LIMIT $2 FOR UPDATE SKIP LOCKED
), split AS (
    SELECT LEAST((SELECT count(*) FROM retry),
                 GREATEST($2 - (SELECT count(*) FROM fresh), $3)) AS n_retry
), chosen AS (
    SELECT r.id FROM (SELECT id, row_number() OVER (ORDER BY next_attempt, id) AS k
                      FROM retry) r, split WHERE r.k <= split.n_retry
    UNION ALL
    SELECT f.id FROM (SELECT id, row_number() OVER (ORDER BY next_attempt, id) AS k
                      FROM fresh) f, split WHERE f.k <= $2 - split.n_retry
)
UPDATE queue SET state = 'active', next_attempt = $4, claimed_by = $5
WHERE id IN (SELECT id FROM chosen)
RETURNING {QUEUE_COLUMNS}
"""  # noqa: S608 (constant column list)


def pg_text(text: str) -> str:
    """``text`` as PostgreSQL can hold it: TEXT cannot contain NUL, and UTF-8 cannot encode a
    lone surrogate. Both become what ``store migrate`` (transfer.py) turns them into (U+FFFD
    and "?"), so values written here match rows copied from an embedded store. Used for text
    that comes from the network (a remote server's reply, a client's user name, a script)."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def rowcount(status: str) -> int:
    """The number of rows from an asyncpg command status such as ``"DELETE 3"``."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def entry(row: Any) -> QueueEntry:
    """A ``QueueEntry`` from a row selected with ``QUEUE_COLUMNS``."""
    return QueueEntry(
        id=int(row[0]),
        queue_id=str(row[1]),
        mail_from=str(row[2]),
        rcpt_to=str(row[3]),
        blob=str(row[4]),
        state=str(row[5]),
        attempts=int(row[6]),
        next_attempt=float(row[7]),
        created_at=float(row[8]),
        last_error=None if row[9] is None else str(row[9]),
        warned=bool(row[10]),
        last_attempt=None if row[11] is None else float(row[11]),
        **entry_fields(tuple(row[12:17])),  # type: ignore[arg-type]
    )


def _key(row: Any) -> DkimKey:
    return DkimKey(
        str(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), float(row[5]),
        bool(row[6]),
    )


class OutboundMixin(PgBase):
    """See the module docstring; conventions in base.py."""

    async def claim_due(
        self, now: float, limit: int, lease: float, owner: str = ""
    ) -> list[QueueEntry]:
        """Moves up to ``limit`` due rows to "active" with a lease, and returns them; see
        ``_CLAIM`` for the fairness split (DESIGN rule 7) and why no row is claimed twice."""
        self.check_open()
        if limit <= 0:
            return []
        half = max(1, limit // 2)
        async with db_errors("claiming queue rows"):
            rows = await self.pool.fetch(_CLAIM, now, limit, half, now + lease, owner)
        claimed = [entry(r) for r in rows]
        # One message's rows together, so the worker can group them into one transaction.
        claimed.sort(key=lambda e: (e.queue_id, e.id))
        return claimed

    async def update_queue(self, updates: Sequence[QueueUpdate]) -> None:
        """Records outcomes in one transaction; rows in a final state (or deleted) are not
        touched, so a final state is never undone."""
        wanted = tuple(updates)
        if not wanted:
            return
        self.check_open()
        for update in wanted:
            if update.state not in UPDATE_STATES:
                raise StoreError(f"bad queue state {update.state!r}")
            if update.state == "deferred" and update.next_attempt is None:
                raise StoreError("a deferred queue row needs a next attempt time")
        ended = time.time()
        async with (
            db_errors("recording queue outcomes"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            await conn.executemany(
                "UPDATE queue SET state = $1, next_attempt = COALESCE($2, next_attempt),"
                " last_error = COALESCE($3, last_error), attempts = attempts + 1,"
                " warned = GREATEST(warned, $4), last_attempt = $5"
                " WHERE id = $6 AND state NOT IN ('delivered', 'bounced')",
                [
                    (
                        u.state, u.next_attempt,
                        # The remote server's reply: it may hold anything.
                        None if u.last_error is None else pg_text(u.last_error),
                        int(u.warned), ended, u.id,
                    )
                    for u in wanted
                ],
            )

    async def recover_active(self, now: float, owner: str | None = None) -> int:
        """Active rows whose lease ran out (their node died or hangs), or that ``owner``
        claimed (it is starting again), go back to "queued", due at once in their original
        order; any node may do this for any other."""
        self.check_open()
        async with db_errors("recovering queue leases"):
            status = await self.pool.execute(
                "UPDATE queue SET state = 'queued', next_attempt = created_at, claimed_by = ''"
                " WHERE state = 'active' AND (next_attempt <= $1 OR claimed_by = $2)",
                now, owner or None,  # NULL matches no row: expired leases only
            )
        return rowcount(status)

    async def queue_entries(self, queue_id: str) -> list[QueueEntry]:
        self.check_open()
        async with db_errors("reading the queue"):
            rows = await self.pool.fetch(
                f"SELECT {QUEUE_COLUMNS} FROM queue WHERE queue_id = $1 ORDER BY id",  # noqa: S608
                pg_text(queue_id),
            )
        return [entry(r) for r in rows]

    async def retry_queue(self, queue_id: str | None, now: float) -> int:
        """Deferred (and not yet due queued) rows become due now."""
        self.check_open()
        sql = (
            "UPDATE queue SET state = 'queued', next_attempt = $1"
            " WHERE state IN ('deferred', 'queued') AND next_attempt > $1"
        )
        args: tuple[object, ...] = (now,)
        if queue_id is not None:
            sql += " AND queue_id = $2"
            args = (now, pg_text(queue_id))
        async with db_errors("retrying queue rows"):
            status = await self.pool.execute(sql, *args)
        return rowcount(status)

    async def delete_queue(self, queue_id: str) -> int:
        self.check_open()
        async with db_errors("deleting queue rows"):
            status = await self.pool.execute(
                "DELETE FROM queue WHERE queue_id = $1", pg_text(queue_id)
            )
        return rowcount(status)

    async def purge_finished(self, before: float) -> int:
        self.check_open()
        async with db_errors("purging finished queue rows"):
            status = await self.pool.execute(
                "DELETE FROM queue WHERE state IN ('delivered', 'bounced')"
                " AND COALESCE(last_attempt, created_at) < $1",
                before,
            )
        return rowcount(status)

    async def count_sent_since(self, account_id: int, since: float) -> int:
        self.check_open()
        async with db_errors("counting sent mail"):
            count = await self.pool.fetchval(
                "SELECT COUNT(*) FROM queue WHERE auth_account_id = $1 AND created_at >= $2",
                account_id, since,
            )
        return int(count)

    # DKIM keys -------------------------------------------------------------------------------

    async def add_dkim_key(self, key: DkimKey) -> None:
        self.check_open()
        try:
            async with db_errors("adding a DKIM key"):
                await self.pool.execute(
                    f"INSERT INTO dkim_keys ({_KEY_COLUMNS})"  # noqa: S608
                    " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    key.domain.lower(), key.selector, key.algorithm, key.private_key,
                    key.public_key, key.created_at, int(key.active),
                )
        except StoreError as exc:
            cause = exc.__cause__
            if isinstance(cause, asyncpg.UniqueViolationError):
                raise AlreadyExists(
                    f"DKIM selector {key.selector} of {key.domain} exists already"
                ) from None
            if isinstance(cause, asyncpg.IntegrityConstraintViolationError):
                raise StoreError(f"bad DKIM key for {key.domain}: {cause}") from None
            raise

    async def dkim_keys(self, domain: str) -> list[DkimKey]:
        """Every key of the domain, newest first."""
        self.check_open()
        async with db_errors("reading DKIM keys"):
            rows = await self.pool.fetch(
                f"SELECT {_KEY_COLUMNS} FROM dkim_keys WHERE domain = $1"  # noqa: S608
                " ORDER BY created_at DESC, id DESC",
                domain.lower(),
            )
        return [_key(r) for r in rows]

    async def set_dkim_active(self, domain: str, selectors: Sequence[str]) -> None:
        """Exactly ``selectors`` sign from now on. The domain's keys are locked first, so a
        concurrent change on another node waits rather than interleaving."""
        self.check_open()
        wanted = sorted(set(selectors))
        name = domain.lower()
        async with (
            db_errors("activating DKIM keys"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            known = {
                str(r[0])
                for r in await conn.fetch(
                    "SELECT selector FROM dkim_keys WHERE domain = $1 ORDER BY selector"
                    " FOR UPDATE",
                    name,
                )
            }
            missing = set(wanted) - known
            if missing:
                raise NotFound(f"no DKIM selector {', '.join(sorted(missing))} for {domain}")
            await conn.execute(
                "UPDATE dkim_keys SET active = CASE WHEN selector = ANY($2::text[])"
                " THEN 1 ELSE 0 END WHERE domain = $1",
                name, wanted,
            )

    async def remove_dkim_key(self, domain: str, selector: str) -> None:
        """Deletes one inactive key; NotFound when there is no such key, InUse when it signs
        (checked under the row's lock, so a concurrent activation cannot slip in between)."""
        self.check_open()
        name = domain.lower()
        async with (
            db_errors("removing a DKIM key"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            active = await conn.fetchval(
                "SELECT active FROM dkim_keys WHERE domain = $1 AND selector = $2"
                " FOR UPDATE",
                name, selector,
            )
            if active is None:
                raise NotFound(f"no DKIM selector {selector} for {domain}")
            if active:
                raise InUse(f"DKIM selector {selector} of {domain} still signs mail")
            await conn.execute(
                "DELETE FROM dkim_keys WHERE domain = $1 AND selector = $2", name, selector
            )
