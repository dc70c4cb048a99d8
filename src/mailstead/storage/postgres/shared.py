"""PostgreSQL store: leases and failed-login counts shared by every node
(interfaces.SharedStateStore, migration 0009).

Each operation is one statement, so none needs a transaction. A lease is taken by a single
``INSERT ... ON CONFLICT DO UPDATE ... WHERE``: when two nodes ask at once, PostgreSQL makes
the second wait on the row the first inserted or updated and then evaluates the WHERE against
that committed row (READ COMMITTED), so exactly one of them gets a row back.
"""

from __future__ import annotations

from mailstead.storage.postgres.base import PgBase, db_errors

NETWORK = "network"
ACCOUNT = "account"


class SharedStateMixin(PgBase):
    """See the module docstring; conventions in base.py."""

    async def acquire_lease(self, name: str, owner: str, now: float, ttl: float) -> bool:
        self.check_open()
        async with db_errors("taking a lease"), self.pool.acquire() as conn:
            got = await conn.fetchval(
                "INSERT INTO leases (name, owner, until) VALUES ($1, $2, $3)"
                " ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner,"
                " until = EXCLUDED.until"
                " WHERE leases.owner = EXCLUDED.owner OR leases.until <= $4"
                " RETURNING owner",
                name, owner, float(now + ttl), float(now),
            )
        return got is not None

    async def release_lease(self, name: str, owner: str) -> None:
        self.check_open()
        async with db_errors("releasing a lease"), self.pool.acquire() as conn:
            await conn.execute(
                "DELETE FROM leases WHERE name = $1 AND owner = $2", name, owner
            )

    async def add_auth_failure(self, network: str, account: str, at: float) -> None:
        self.check_open()
        async with db_errors("recording a failed login"), self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO auth_failures (kind, key, at) VALUES ($1, $2, $5), ($3, $4, $5)",
                NETWORK, network, ACCOUNT, account, float(at),
            )

    async def auth_failures(self, network: str, account: str, since: float) -> tuple[int, int]:
        self.check_open()
        async with db_errors("counting failed logins"), self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT"
                " (SELECT COUNT(*) FROM auth_failures WHERE kind = $1 AND key = $2 AND at > $5),"
                " (SELECT COUNT(*) FROM auth_failures WHERE kind = $3 AND key = $4 AND at > $5)",
                NETWORK, network, ACCOUNT, account, float(since),
            )
        assert row is not None
        return int(row[0]), int(row[1])

    async def clear_auth_failures(self, network: str) -> None:
        self.check_open()
        async with db_errors("clearing failed logins"), self.pool.acquire() as conn:
            await conn.execute(
                "DELETE FROM auth_failures WHERE kind = $1 AND key = $2", NETWORK, network
            )

    async def prune_auth_failures(self, before: float) -> int:
        self.check_open()
        async with db_errors("pruning failed logins"), self.pool.acquire() as conn:
            status: str = await conn.execute(
                "DELETE FROM auth_failures WHERE at <= $1", float(before)
            )
        # The command tag is "DELETE <rows>".
        return int(status.rsplit(" ", 1)[-1])
