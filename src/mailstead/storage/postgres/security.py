"""PostgreSQL store: Two-factor secrets, app passwords, the login audit and IP blocks
(interfaces.SecurityStore).

Mirrors storage/sqlite/security.py. The single-use checks (a TOTP time step, a recovery code)
are one conditional UPDATE or DELETE each: of two nodes trying the same code at once, the
second waits for the first's row lock, re-checks its condition against the committed row and
finds nothing to change, so one code opens at most one login across the whole cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from mailstead.core.errors import AlreadyExists, NotFound, StoreError
from mailstead.storage.interfaces import (
    KEY_CHECK,
    KEY_SEALED,
    AppPassword,
    IpBlock,
    LoginRecord,
    SecondFactor,
)
from mailstead.storage.postgres.base import PgBase, db_errors
from mailstead.storage.postgres.outbound import pg_text, rowcount
from mailstead.storage.sqlite.security import login_record

_APP = (
    "SELECT id, account_id, name, digest, protocols, created_at, last_used, last_ip"
    " FROM app_passwords"
)


def _app(row: Any) -> AppPassword:
    return AppPassword(
        id=int(row[0]),
        account_id=int(row[1]),
        name=str(row[2]),
        digest=str(row[3]),
        protocols=tuple(str(row[4]).split()),
        created_at=float(row[5]),
        last_used=None if row[6] is None else float(row[6]),
        last_ip=None if row[7] is None else str(row[7]),
    )


def _account_gone(exc: StoreError) -> bool:
    """Whether ``exc`` wraps a foreign-key failure: the account was removed by another node
    between our check and our insert (the SQLite writer cannot interleave so)."""
    return isinstance(exc.__cause__, asyncpg.ForeignKeyViolationError)


class SecurityMixin(PgBase):
    """See the module docstring; conventions in base.py."""

    async def get_second_factor(self, account_id: int) -> SecondFactor | None:
        self.check_open()
        async with db_errors("reading the second factor"):
            row = await self.pool.fetchrow(
                "SELECT secret, last_counter, created_at,"
                " (SELECT COUNT(*) FROM recovery_codes r WHERE r.account_id = t.account_id)"
                " FROM totp t WHERE account_id = $1",
                account_id,
            )
        if row is None:
            return None
        return SecondFactor(account_id, str(row[0]), int(row[1]), float(row[2]), int(row[3]))

    async def set_second_factor(
        self, account_id: int, secret: str, recovery_digests: Sequence[str], created_at: float
    ) -> None:
        """Turns TOTP on, replacing any previous secret and recovery codes; NotFound for an
        unknown account."""
        self.check_open()
        digests = list(recovery_digests)
        try:
            async with (
                db_errors("setting the second factor"),
                self.pool.acquire() as conn,
                conn.transaction(),
            ):
                if await conn.fetchval("SELECT 1 FROM accounts WHERE id = $1", account_id) is None:
                    raise NotFound(f"no account with id {account_id}")
                await conn.execute("DELETE FROM recovery_codes WHERE account_id = $1", account_id)
                await conn.execute(
                    "INSERT INTO totp (account_id, secret, last_counter, created_at)"
                    " VALUES ($1, $2, -1, $3) ON CONFLICT (account_id) DO UPDATE SET"
                    " secret = EXCLUDED.secret, last_counter = -1,"
                    " created_at = EXCLUDED.created_at",
                    account_id, secret, created_at,
                )
                await conn.execute(
                    "INSERT INTO recovery_codes (account_id, digest)"
                    " SELECT $1, d FROM unnest($2::text[]) AS d ON CONFLICT DO NOTHING",
                    account_id, digests,
                )
        except StoreError as exc:
            if _account_gone(exc):
                raise NotFound(f"no account with id {account_id}") from None
            raise

    async def remove_second_factor(self, account_id: int) -> bool:
        self.check_open()
        async with (
            db_errors("removing the second factor"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            await conn.execute("DELETE FROM recovery_codes WHERE account_id = $1", account_id)
            status = await conn.execute("DELETE FROM totp WHERE account_id = $1", account_id)
        return rowcount(status) > 0

    async def use_totp_counter(self, account_id: int, counter: int) -> bool:
        """One conditional UPDATE (RFC 6238 section 5.2: a code is accepted once); see the
        module docstring for why it holds across nodes."""
        self.check_open()
        async with db_errors("recording the TOTP step"):
            status = await self.pool.execute(
                "UPDATE totp SET last_counter = $2 WHERE account_id = $1 AND last_counter < $2",
                account_id, counter,
            )
        return rowcount(status) > 0

    async def use_recovery_code(self, account_id: int, digest: str) -> bool:
        """One DELETE: the node whose DELETE removed the row is the one that used it."""
        self.check_open()
        async with db_errors("using a recovery code"):
            status = await self.pool.execute(
                "DELETE FROM recovery_codes WHERE account_id = $1 AND digest = $2",
                account_id, digest,
            )
        return rowcount(status) > 0

    async def add_app_password(
        self, account_id: int, name: str, digest: str, protocols: Sequence[str], created_at: float
    ) -> AppPassword:
        """Raises AlreadyExists for a name the account uses (case-insensitive), NotFound for
        an unknown account."""
        self.check_open()
        wanted = tuple(protocols)
        name = pg_text(name)  # typed into a web form
        try:
            async with db_errors("adding an app password"), self.pool.acquire() as conn:
                if await conn.fetchval("SELECT 1 FROM accounts WHERE id = $1", account_id) is None:
                    raise NotFound(f"no account with id {account_id}")
                new_id = await conn.fetchval(
                    "INSERT INTO app_passwords (account_id, name, name_key, digest, protocols,"
                    " created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    account_id, name, name.lower(), digest, " ".join(wanted), created_at,
                )
        except StoreError as exc:
            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise AlreadyExists(f"an app password named {name!r} exists already") from None
            if _account_gone(exc):
                raise NotFound(f"no account with id {account_id}") from None
            raise
        return AppPassword(int(new_id), account_id, name, digest, wanted, created_at, None, None)

    async def list_app_passwords(self, account_id: int) -> list[AppPassword]:
        """Oldest first."""
        self.check_open()
        async with db_errors("reading app passwords"):
            rows = await self.pool.fetch(_APP + " WHERE account_id = $1 ORDER BY id", account_id)
        return [_app(r) for r in rows]

    async def revoke_app_password(self, account_id: int, name: str) -> None:
        self.check_open()
        async with db_errors("revoking an app password"):
            status = await self.pool.execute(
                "DELETE FROM app_passwords WHERE account_id = $1 AND name_key = $2",
                account_id, pg_text(name).lower(),
            )
        if rowcount(status) == 0:
            raise NotFound(f"no app password named {name!r}")

    # The installation key's record, in store_meta like the SQLite store's.

    async def security_key_record(self) -> tuple[str | None, str | None]:
        self.check_open()
        async with db_errors("reading the security key record"):
            rows = await self.pool.fetch(
                "SELECT key, value FROM store_meta WHERE key = ANY($1::text[])",
                [KEY_CHECK, KEY_SEALED],
            )
        found = {str(r[0]): str(r[1]) for r in rows}
        return found.get(KEY_CHECK), found.get(KEY_SEALED)

    async def record_security_key(self, check: str) -> str:
        self.check_open()
        async with db_errors("recording the security key"), self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO store_meta (key, value) VALUES ($1, $2)"
                " ON CONFLICT (key) DO NOTHING", KEY_CHECK, check,
            )
            value = await conn.fetchval(
                "SELECT value FROM store_meta WHERE key = $1", KEY_CHECK
            )
        return str(value)

    async def set_sealed_security_key(self, sealed: str | None) -> None:
        self.check_open()
        async with db_errors("storing the sealed security key"):
            if sealed is None:
                await self.pool.execute("DELETE FROM store_meta WHERE key = $1", KEY_SEALED)
            else:
                await self.pool.execute(
                    "INSERT INTO store_meta (key, value) VALUES ($1, $2)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    KEY_SEALED, sealed,
                )

    async def count_keyed_secrets(self) -> int:
        self.check_open()
        async with db_errors("counting second factors and app passwords"):
            value = await self.pool.fetchval(
                "SELECT (SELECT COUNT(*) FROM totp) + (SELECT COUNT(*) FROM app_passwords)"
            )
        return int(value)

    async def add_login_records(self, records: Sequence[LoginRecord]) -> None:
        """Appends audit rows and updates the app passwords used, in one transaction."""
        wanted = tuple(records)
        if not wanted:
            return
        self.check_open()
        used = [
            (r.at, pg_text(r.client_ip), r.app_password_id)
            for r in wanted
            if r.success and r.app_password_id is not None
        ]
        async with (
            db_errors("writing the login audit"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            # An account removed since the attempt is recorded without it (its rows went
            # with it): the subquery yields NULL instead of a dangling id.
            await conn.executemany(
                "INSERT INTO login_audit (at, account_id, username, protocol, client_ip,"
                " mechanism, success, reason, app_password) VALUES ($1,"
                " (SELECT id FROM accounts WHERE id = $2), $3, $4, $5, $6, $7, $8, $9)",
                [
                    (
                        # The user name (and more) is whatever the client sent.
                        r.at, r.account_id, pg_text(r.username), pg_text(r.protocol),
                        pg_text(r.client_ip), pg_text(r.mechanism), int(r.success),
                        pg_text(r.reason),
                        None if r.app_password is None else pg_text(r.app_password),
                    )
                    for r in wanted
                ],
            )
            if used:
                # Never moves last_used backwards: batches of two nodes may commit out of order.
                await conn.executemany(
                    "UPDATE app_passwords SET last_used = $1, last_ip = $2 WHERE id = $3"
                    " AND (last_used IS NULL OR last_used <= $1)",
                    used,
                )

    async def list_logins(self, account_id: int, limit: int) -> list[LoginRecord]:
        """The newest ``limit`` attempts of the account, newest first."""
        self.check_open()
        async with db_errors("reading the login audit"):
            rows = await self.pool.fetch(
                "SELECT at, account_id, username, protocol, client_ip, mechanism, success,"
                " reason, app_password FROM login_audit WHERE account_id = $1"
                " ORDER BY at DESC, id DESC LIMIT $2",
                # SQLite reads a negative LIMIT as "no limit"; PostgreSQL spells that NULL.
                account_id, None if limit < 0 else limit,
            )
        return [login_record(r) for r in rows]

    async def prune_logins(self, before: float) -> int:
        self.check_open()
        async with (
            db_errors("pruning the login audit"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            status = await conn.execute("DELETE FROM login_audit WHERE at < $1", before)
            # Expired blocks serve nobody: drop them with the old audit rows.
            await conn.execute("DELETE FROM ip_blocks WHERE until < $1", before)
        return rowcount(status)

    async def add_block(self, block: IpBlock) -> None:
        """Blocks ``block.network``, replacing an existing block of it."""
        self.check_open()
        async with db_errors("adding an IP block"):
            await self.pool.execute(
                "INSERT INTO ip_blocks (network, until, failures, created_at, reason)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (network) DO UPDATE SET"
                " until = EXCLUDED.until, failures = EXCLUDED.failures,"
                " created_at = EXCLUDED.created_at, reason = EXCLUDED.reason",
                block.network, block.until, block.failures, block.created_at, block.reason,
            )

    async def active_blocks(self, now: float) -> list[IpBlock]:
        """Blocks with ``until > now``, soonest to end first."""
        self.check_open()
        async with db_errors("reading IP blocks"):
            rows = await self.pool.fetch(
                "SELECT network, until, failures, created_at, reason FROM ip_blocks"
                " WHERE until > $1 ORDER BY until",
                now,
            )
        return [IpBlock(str(r[0]), float(r[1]), int(r[2]), float(r[3]), str(r[4])) for r in rows]

    async def remove_block(self, network: str) -> bool:
        self.check_open()
        async with db_errors("removing an IP block"):
            status = await self.pool.execute("DELETE FROM ip_blocks WHERE network = $1", network)
        return rowcount(status) > 0
