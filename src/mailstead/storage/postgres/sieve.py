"""PostgreSQL store: Sieve scripts and the log of automatic sends (interfaces.SieveStore).

Mirrors storage/sqlite/sieve.py. Changes that read before they write (activate, delete,
rename) first lock the account's script rows, so the same change made on two nodes at once
runs one after the other, as it does behind the SQLite store's single writer.

Names and scripts arrive over ManageSieve, so they pass through ``pg_text`` (PostgreSQL text
holds no NUL); the Sieve log's keys are envelope addresses and get the same treatment.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from mailstead.core.errors import AlreadyExists, InUse, NotFound, StoreError
from mailstead.storage.interfaces import SieveScript
from mailstead.storage.postgres.base import PgBase, db_errors
from mailstead.storage.postgres.outbound import pg_text, rowcount
from mailstead.storage.sqlite.writer import inbox_name

_SCRIPT = "SELECT name, content, active, updated_at FROM sieve_scripts"


def _script(row: Any) -> SieveScript:
    return SieveScript(str(row[0]), str(row[1]), bool(row[2]), float(row[3]))


async def _lock_scripts(conn: asyncpg.Connection, account_id: int) -> dict[str, bool]:
    """Locks the account's scripts for this transaction; returns name -> active."""
    rows = await conn.fetch(
        "SELECT name, active FROM sieve_scripts WHERE account_id = $1 ORDER BY name"
        " FOR UPDATE",
        account_id,
    )
    return {str(r[0]): bool(r[1]) for r in rows}


class SieveMixin(PgBase):
    """See the module docstring; conventions in base.py."""

    async def put_sieve_script(self, account_id: int, name: str, content: str) -> None:
        """Creates or replaces the script, keeping its active state; NotFound for an
        unknown account."""
        self.check_open()
        now = time.time()
        name, content = pg_text(name), pg_text(content)
        try:
            async with db_errors("storing a Sieve script"), self.pool.acquire() as conn:
                if await conn.fetchval("SELECT 1 FROM accounts WHERE id = $1", account_id) is None:
                    raise NotFound(f"no account {account_id}")
                await conn.execute(
                    "INSERT INTO sieve_scripts (account_id, name, content, active, updated_at)"
                    " VALUES ($1, $2, $3, 0, $4) ON CONFLICT (account_id, name)"
                    " DO UPDATE SET content = EXCLUDED.content,"
                    " updated_at = EXCLUDED.updated_at",
                    account_id, name, content, now,
                )
        except StoreError as exc:
            if isinstance(exc.__cause__, asyncpg.ForeignKeyViolationError):
                raise NotFound(f"no account {account_id}") from None  # removed meanwhile
            raise

    async def get_sieve_script(self, account_id: int, name: str) -> SieveScript | None:
        self.check_open()
        async with db_errors("reading a Sieve script"):
            row = await self.pool.fetchrow(
                _SCRIPT + " WHERE account_id = $1 AND name = $2", account_id, pg_text(name)
            )
        return None if row is None else _script(row)

    async def list_sieve_scripts(self, account_id: int) -> list[SieveScript]:
        """By name (byte order, as SQLite compares; RFC 5804 names compare exactly)."""
        self.check_open()
        async with db_errors("listing Sieve scripts"):
            rows = await self.pool.fetch(
                _SCRIPT + ' WHERE account_id = $1 ORDER BY name COLLATE "C"', account_id
            )
        return [_script(r) for r in rows]

    async def active_sieve_script(self, account_id: int) -> SieveScript | None:
        self.check_open()
        async with db_errors("reading the active Sieve script"):
            row = await self.pool.fetchrow(
                _SCRIPT + " WHERE account_id = $1 AND active = 1", account_id
            )
        return None if row is None else _script(row)

    async def sieve_mailbox_exists(self, account_id: int, name: str) -> bool:
        """Whether a fileinto target exists (INBOX in any case, RFC 3501 section 5.1): one
        probe of the (account_id, name) index, without the counts ``get_mailbox`` adds."""
        self.check_open()
        stored = inbox_name(name)
        if pg_text(stored) != stored:
            return False  # no mailbox name holds what PostgreSQL cannot store
        async with db_errors("looking up a mailbox"):
            found = await self.pool.fetchval(
                "SELECT 1 FROM mailboxes WHERE account_id = $1 AND name = $2",
                account_id, stored,
            )
        return found is not None

    async def set_active_sieve_script(self, account_id: int, name: str | None) -> None:
        """Makes ``name`` the only active script (None: none); NotFound for an unknown one."""
        self.check_open()
        name = None if name is None else pg_text(name)
        async with (
            db_errors("activating a Sieve script"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            scripts = await _lock_scripts(conn, account_id)
            if name is not None and name not in scripts:
                raise NotFound(f"no script {name!r}")
            # Two statements, not one CASE: the one-active unique index is checked row by
            # row, so the old script must be off before the new one goes on.
            await conn.execute(
                "UPDATE sieve_scripts SET active = 0 WHERE account_id = $1 AND active = 1",
                account_id,
            )
            if name is not None:
                await conn.execute(
                    "UPDATE sieve_scripts SET active = 1 WHERE account_id = $1 AND name = $2",
                    account_id, name,
                )

    async def delete_sieve_script(self, account_id: int, name: str) -> None:
        """NotFound, or InUse for the active script (RFC 5804 section 2.10)."""
        self.check_open()
        name = pg_text(name)
        async with (
            db_errors("deleting a Sieve script"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            scripts = await _lock_scripts(conn, account_id)
            if name not in scripts:
                raise NotFound(f"no script {name!r}")
            if scripts[name]:
                raise InUse(f"script {name!r} is active")
            await conn.execute(
                "DELETE FROM sieve_scripts WHERE account_id = $1 AND name = $2",
                account_id, name,
            )

    async def rename_sieve_script(self, account_id: int, old: str, new: str) -> None:
        """Keeps the active state; NotFound or AlreadyExists."""
        self.check_open()
        old, new = pg_text(old), pg_text(new)
        try:
            async with (
                db_errors("renaming a Sieve script"),
                self.pool.acquire() as conn,
                conn.transaction(),
            ):
                scripts = await _lock_scripts(conn, account_id)
                if old not in scripts:
                    raise NotFound(f"no script {old!r}")
                if old != new and new in scripts:
                    raise AlreadyExists(f"script {new!r} exists already")
                await conn.execute(
                    "UPDATE sieve_scripts SET name = $3 WHERE account_id = $1 AND name = $2",
                    account_id, old, new,
                )
        except StoreError as exc:
            # A script of that name was created by another node after our lock was taken.
            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise AlreadyExists(f"script {new!r} exists already") from None
            raise

    async def count_sieve_events(
        self, account_id: int, kind: str, key: str | None, since: float
    ) -> int:
        """Log rows of ``kind`` at or after ``since`` (of ``key`` only, when given)."""
        self.check_open()
        kind = pg_text(kind)
        async with db_errors("reading the Sieve log"):
            if key is None:
                count = await self.pool.fetchval(
                    "SELECT COUNT(*) FROM sieve_log WHERE account_id = $1 AND kind = $2"
                    " AND at >= $3",
                    account_id, kind, since,
                )
            else:
                count = await self.pool.fetchval(
                    "SELECT COUNT(*) FROM sieve_log WHERE account_id = $1 AND kind = $2"
                    " AND key = $3 AND at >= $4",
                    account_id, kind, pg_text(key), since,
                )
        return int(count)

    async def add_sieve_event(self, account_id: int, kind: str, key: str, at: float) -> None:
        self.check_open()
        async with db_errors("writing the Sieve log"):
            await self.pool.execute(
                "INSERT INTO sieve_log (account_id, kind, key, at) VALUES ($1, $2, $3, $4)",
                account_id, pg_text(kind), pg_text(key), at,
            )

    async def prune_sieve_events(self, before: float) -> int:
        self.check_open()
        async with db_errors("pruning the Sieve log"):
            status = await self.pool.execute("DELETE FROM sieve_log WHERE at < $1", before)
        return rowcount(status)
