"""PostgreSQL store: Greylisting and the Bayesian token counts (interfaces.SpamStore).

Mirrors storage/sqlite/spam.py. Greylisting is upserts, so two nodes seeing the same new
triplet at once agree on one first_seen. Learning takes row locks in a fixed order (the
message's ``bayes_learned`` row, then its tokens ascending), so two nodes learning at once
neither count one message twice nor deadlock on shared tokens.

Triplet keys separate their parts with NUL (filters/greylist.py), which PostgreSQL text cannot
hold: they are stored through ``pg_text``, as ``store migrate`` copies them, and since they are
only ever looked up, never read back, the difference is invisible.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from mailstead.core.errors import StoreError
from mailstead.storage.postgres.base import PgBase, db_errors
from mailstead.storage.postgres.outbound import pg_text, rowcount

# ORDER BY makes the upsert lock the token rows in ascending order in every transaction: two
# concurrent learners with overlapping tokens then wait for each other instead of deadlocking.
# GREATEST(0, ...) as in SQLite: a count never drops below zero when a message is moved.
_ADD_TOKENS = (
    "INSERT INTO bayes_tokens (account_id, token, spam, ham)"
    " SELECT $1, t, $3, $4 FROM unnest($2::bigint[]) AS t ORDER BY t"
    " ON CONFLICT (account_id, token) DO UPDATE SET"
    " spam = GREATEST(0, bayes_tokens.spam + EXCLUDED.spam),"
    " ham = GREATEST(0, bayes_tokens.ham + EXCLUDED.ham)"
)


class SpamMixin(PgBase):
    """See the module docstring; conventions in base.py."""

    async def greylist_touch(self, triplet: str, now: float) -> tuple[float, bool]:
        """(first_seen, passed), recording the triplet as first seen ``now`` when new; one
        upsert, so concurrent first sightings on several nodes keep a single row."""
        self.check_open()
        async with db_errors("greylisting"):
            row = await self.pool.fetchrow(
                "INSERT INTO greylist (triplet, first_seen, last_seen) VALUES ($1, $2, $2)"
                " ON CONFLICT (triplet) DO UPDATE SET last_seen = EXCLUDED.last_seen"
                " RETURNING first_seen, passed",
                pg_text(triplet), now,
            )
        return float(row[0]), bool(row[1])

    async def greylist_restart(self, triplet: str, now: float) -> None:
        self.check_open()
        async with db_errors("greylisting"):
            await self.pool.execute(
                "UPDATE greylist SET first_seen = $2, last_seen = $2, passed = 0"
                " WHERE triplet = $1",
                pg_text(triplet), now,
            )

    async def greylist_pass(self, triplet: str, network: str, now: float) -> None:
        self.check_open()
        async with (
            db_errors("greylisting"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            await conn.execute(
                "UPDATE greylist SET passed = 1, last_seen = $2 WHERE triplet = $1",
                pg_text(triplet), now,
            )
            await conn.execute(
                "INSERT INTO greylist_networks (network, last_seen) VALUES ($1, $2)"
                " ON CONFLICT (network) DO UPDATE SET last_seen = EXCLUDED.last_seen",
                pg_text(network), now,
            )

    async def greylist_network_seen(self, network: str) -> float | None:
        self.check_open()
        async with db_errors("greylisting"):
            seen = await self.pool.fetchval(
                "SELECT last_seen FROM greylist_networks WHERE network = $1", pg_text(network)
            )
        return None if seen is None else float(seen)

    async def greylist_prune(self, before: float) -> int:
        self.check_open()
        async with (
            db_errors("pruning the greylist"),
            self.pool.acquire() as conn,
            conn.transaction(),
        ):
            n = rowcount(await conn.execute("DELETE FROM greylist WHERE last_seen < $1", before))
            n += rowcount(
                await conn.execute("DELETE FROM greylist_networks WHERE last_seen < $1", before)
            )
        return n

    async def bayes_totals(self, account_id: int) -> tuple[int, int]:
        """(spam, ham) messages learned by the account."""
        self.check_open()
        async with db_errors("reading Bayes totals"):
            row = await self.pool.fetchrow(
                "SELECT COALESCE(SUM(spam), 0), COALESCE(SUM(1 - spam), 0) FROM bayes_learned"
                " WHERE account_id = $1",
                account_id,
            )
        return int(row[0]), int(row[1])

    async def bayes_tokens(
        self, account_id: int, tokens: Sequence[int]
    ) -> dict[int, tuple[int, int]]:
        """(spam, ham) counts of those of ``tokens`` the account has seen."""
        self.check_open()
        unique = sorted(set(tokens))
        if not unique:
            return {}
        async with db_errors("reading Bayes tokens"):
            rows = await self.pool.fetch(
                "SELECT token, spam, ham FROM bayes_tokens WHERE account_id = $1"
                " AND token = ANY($2::bigint[])",
                account_id, unique,
            )
        return {int(r[0]): (int(r[1]), int(r[2])) for r in rows}

    async def bayes_learn(
        self, account_id: int, message: str, tokens: Sequence[int], spam: bool
    ) -> bool:
        """Counts the message's tokens as spam or ham, moving them when it was learned as
        the other class; False when learned as this class already or the account is gone.

        The ``bayes_learned`` row is claimed first: an INSERT that creates it means a first
        learning; otherwise the row is locked (FOR UPDATE), so a concurrent learner of the
        same message on another node waits and then sees this one's outcome."""
        self.check_open()
        unique = sorted(set(tokens))
        flag = int(spam)
        try:
            async with (
                db_errors("learning a message"),
                self.pool.acquire() as conn,
                conn.transaction(),
            ):
                if await conn.fetchval("SELECT 1 FROM accounts WHERE id = $1", account_id) is None:
                    return False
                # DO NOTHING waits for a concurrent insert of the same row to commit first.
                created = await conn.fetchval(
                    "INSERT INTO bayes_learned (account_id, message, spam) VALUES ($1, $2, $3)"
                    " ON CONFLICT (account_id, message) DO NOTHING RETURNING 1",
                    account_id, message, flag,
                )
                if created is None:
                    before = await conn.fetchval(
                        "SELECT spam FROM bayes_learned WHERE account_id = $1 AND message = $2"
                        " FOR UPDATE",
                        account_id, message,
                    )
                    if before is None:  # removed with its account meanwhile
                        return False
                    if bool(before) == spam:
                        return False  # learned as this already: counting twice would skew
                    # Learned as the other class: take those counts back first.
                    await conn.execute(
                        _ADD_TOKENS, account_id, unique, -1 if not spam else 0,
                        -1 if spam else 0,
                    )
                    await conn.execute(
                        "UPDATE bayes_learned SET spam = $3 WHERE account_id = $1"
                        " AND message = $2",
                        account_id, message, flag,
                    )
                await conn.execute(
                    _ADD_TOKENS, account_id, unique, 1 if spam else 0, 0 if spam else 1
                )
        except StoreError as exc:
            if isinstance(exc.__cause__, asyncpg.ForeignKeyViolationError):
                return False  # the account was removed by another node meanwhile
            raise
        return True
