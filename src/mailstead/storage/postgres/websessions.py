"""PostgreSQL store: the web pages' sessions (interfaces.WebSessionStore, migration 0011), shared
by every node so that a load balancer may send each request of a browser to any of them.

Each operation is one statement except ``prune``, whose deletes need no common snapshot (each
removes what is stale or over its cap when it runs)."""

from __future__ import annotations

from collections.abc import Sequence

from mailstead.storage.interfaces import WebSessionRow
from mailstead.storage.postgres.base import PgBase, db_errors
from mailstead.storage.postgres.outbound import rowcount


class WebSessionMixin(PgBase):
    """See the module docstring; conventions in base.py."""

    async def put_web_session(
        self, key: str, account_id: int | None, data: str, created: float, last_seen: float
    ) -> None:
        self.check_open()
        async with db_errors("storing a web session"), self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO web_sessions (key, account_id, data, created, last_seen)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO UPDATE SET"
                " account_id = EXCLUDED.account_id, data = EXCLUDED.data,"
                " created = EXCLUDED.created, last_seen = EXCLUDED.last_seen",
                key, account_id, data, float(created), float(last_seen),
            )

    async def update_web_session(self, key: str, data: str, last_seen: float) -> bool:
        self.check_open()
        async with db_errors("storing a web session"), self.pool.acquire() as conn:
            status: str = await conn.execute(
                "UPDATE web_sessions SET data = $1, last_seen = GREATEST(last_seen, $2)"
                " WHERE key = $3",
                data, float(last_seen), key,
            )
        return rowcount(status) > 0

    async def get_web_session(self, key: str) -> WebSessionRow | None:
        self.check_open()
        async with db_errors("reading a web session"), self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT account_id, data, created, last_seen FROM web_sessions WHERE key = $1",
                key,
            )
        if row is None:
            return None
        account_id = None if row[0] is None else int(row[0])
        return WebSessionRow(account_id, str(row[1]), float(row[2]), float(row[3]))

    async def touch_web_session(self, key: str, last_seen: float) -> None:
        self.check_open()
        async with db_errors("storing a web session"), self.pool.acquire() as conn:
            await conn.execute(
                "UPDATE web_sessions SET last_seen = $1 WHERE key = $2 AND last_seen < $1",
                float(last_seen), key,
            )

    async def drop_web_sessions(self, keys: Sequence[str]) -> None:
        self.check_open()
        async with db_errors("ending web sessions"), self.pool.acquire() as conn:
            await conn.execute("DELETE FROM web_sessions WHERE key = ANY($1::text[])", list(keys))

    async def drop_account_web_sessions(self, account_id: int, except_key: str | None) -> int:
        self.check_open()
        async with db_errors("ending web sessions"), self.pool.acquire() as conn:
            status: str = await conn.execute(
                "DELETE FROM web_sessions WHERE account_id = $1 AND key IS DISTINCT FROM $2",
                account_id, except_key,
            )
        return rowcount(status)

    async def count_web_sessions(self) -> tuple[int, int]:
        self.check_open()
        async with db_errors("counting web sessions"), self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT COUNT(*) - COUNT(account_id), COUNT(account_id) FROM web_sessions"
            )
        assert row is not None
        return int(row[0]), int(row[1])

    async def prune_web_sessions(
        self, idle_before: float, created_before: float, max_anonymous: int, max_signed_in: int
    ) -> int:
        self.check_open()
        async with db_errors("pruning web sessions"), self.pool.acquire() as conn:
            status: str = await conn.execute(
                "DELETE FROM web_sessions WHERE last_seen < $1 OR created < $2",
                float(idle_before), float(created_before),
            )
            removed = rowcount(status)
            for kind, cap in (("IS NULL", max_anonymous), ("IS NOT NULL", max_signed_in)):
                # The rows past the first ``cap`` of the kind, most recently seen first.
                status = await conn.execute(
                    "DELETE FROM web_sessions WHERE key IN (SELECT key FROM web_sessions"  # noqa: S608
                    f" WHERE account_id {kind} ORDER BY last_seen DESC OFFSET $1)",
                    max(cap, 0),
                )
                removed += rowcount(status)
        return removed
