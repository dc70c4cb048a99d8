"""The outbound queue shared by several nodes on one PostgreSQL database (issue 10): each row
is claimed by one node at a time, a node never waits for rows another is claiming, and the
leases of a dead node come back through ``recover_active`` on any other."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

from mailstead.storage.interfaces import QueueUpdate
from mailstead.storage.postgres.store import PostgresStore
from pgserver import shared_server

BLOB = "ab" * 32
NOW = 1_800_000_000.0


async def _fill(dsn: str, queued: int, deferred: int = 0) -> list[int]:
    """Rows straight into the tables (no accounts or messages needed); returns their ids."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO blobs (hash, size, created_at, data) VALUES ($1, 4, $2, $3)"
            " ON CONFLICT DO NOTHING",
            BLOB, NOW, b"body",
        )
        rows = [
            (f"Q{i // 3}", f"r{i}@dest.test", "deferred" if i < deferred else "queued",
             int(i < deferred), NOW - 1000 + i)
            for i in range(queued + deferred)
        ]
        await conn.executemany(
            "INSERT INTO queue (queue_id, mail_from, rcpt_to, blob, state, attempts,"
            " next_attempt, created_at) VALUES ($1, 's@src.test', $2, $3, $4, $5, $6, $6)",
            [(q, r, BLOB, s, a, t) for q, r, s, a, t in rows],
        )
        return [int(r[0]) for r in await conn.fetch("SELECT id FROM queue ORDER BY id")]
    finally:
        await conn.close()


def _two_nodes(body: Callable[[str, PostgresStore, PostgresStore], Awaitable[None]]) -> None:
    """Runs ``body`` with two stores ("nodes") open on one fresh database."""
    dsn = shared_server().new_database()

    async def main() -> None:
        a = await PostgresStore.open(dsn, pool_size=4)
        b = await PostgresStore.open(dsn, pool_size=4)
        try:
            await body(dsn, a, b)
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def test_concurrent_claims_never_share_a_row() -> None:
    async def body(dsn: str, a: PostgresStore, b: PostgresStore) -> None:
        ids = await _fill(dsn, queued=240, deferred=60)
        taken: list[tuple[str, int]] = []

        async def worker(name: str, store: PostgresStore) -> None:
            while True:
                batch = await store.claim_due(NOW, 7, 300.0)
                if not batch:
                    return
                assert {e.state for e in batch} == {"active"}
                taken.extend((name, e.id) for e in batch)

        # Four workers per node, all claiming the same due rows at once.
        await asyncio.gather(*(worker(f"{n}{i}", s) for n, s in (("a", a), ("b", b))
                               for i in range(4)))
        claimed = [row_id for _, row_id in taken]
        assert len(claimed) == len(set(claimed))  # no row went to two claims
        assert sorted(claimed) == ids  # and none was left behind
        assert {name[0] for name, _ in taken} == {"a", "b"}  # both nodes got work
        assert {e.state for e in await b.list_queue()} == {"active"}

    _two_nodes(body)


def test_a_node_skips_rows_another_node_is_claiming() -> None:
    async def body(dsn: str, a: PostgresStore, b: PostgresStore) -> None:
        ids = await _fill(dsn, queued=6)
        # Another node is in the middle of claiming the three oldest rows (its transaction
        # holds their locks): this node takes the others at once instead of waiting.
        other = await asyncpg.connect(dsn)
        try:
            async with other.transaction():
                await other.execute(
                    "SELECT id FROM queue WHERE id = ANY($1::bigint[]) FOR UPDATE", ids[:3]
                )
                batch = await asyncio.wait_for(a.claim_due(NOW, 10, 60.0), 5)
                assert sorted(e.id for e in batch) == ids[3:]
        finally:
            await other.close()
        # Released without being claimed, those rows are due for the next claim.
        assert sorted(e.id for e in await b.claim_due(NOW, 10, 60.0)) == ids[:3]

    _two_nodes(body)


def test_recover_active_returns_expired_leases_to_any_node() -> None:
    async def body(dsn: str, a: PostgresStore, b: PostgresStore) -> None:
        ids = await _fill(dsn, queued=5)
        claimed = await a.claim_due(NOW, 3, 30.0)
        assert [e.id for e in claimed] == ids[:3]  # oldest first
        assert {e.next_attempt for e in claimed} == {NOW + 30.0}
        # Node a "dies" holding the leases: while they run, node b recovers nothing and
        # claims only the two free rows.
        assert await b.recover_active(NOW + 29.0) == 0
        assert sorted(e.id for e in await b.claim_due(NOW + 29.0, 10, 600.0)) == ids[3:]
        # Once they expire, node b hands a's rows back, due at once in their old order...
        assert await b.recover_active(NOW + 31.0) == 3
        rows = {e.id: e for e in await b.list_queue()}
        assert [rows[i].state for i in ids[:3]] == ["queued"] * 3
        assert all(rows[i].next_attempt == rows[i].created_at for i in ids[:3])
        # ...leaving its own unexpired leases alone, and claims them itself.
        assert [rows[i].state for i in ids[3:]] == ["active"] * 2
        assert [e.id for e in await b.claim_due(NOW + 31.0, 10, 60.0)] == ids[:3]
        assert await a.recover_active(NOW + 31.0) == 0

    _two_nodes(body)


def test_fairness_split_matches_the_embedded_store() -> None:
    async def body(dsn: str, a: PostgresStore, b: PostgresStore) -> None:
        await _fill(dsn, queued=2, deferred=8)
        # Limit 4: half (2) guaranteed to retries, the new mail takes the rest.
        first = await a.claim_due(NOW, 4, 60.0)
        assert sorted(e.attempts > 0 for e in first) == [False, False, True, True]
        # Only retries are left: they may use the whole batch.
        second = await b.claim_due(NOW, 4, 60.0)
        assert [e.attempts > 0 for e in second] == [True] * 4
        assert await a.claim_due(NOW, 0, 60.0) == []
        # Claimed rows come grouped by message, as the worker sends them.
        assert [(e.queue_id, e.id) for e in second] == sorted((e.queue_id, e.id) for e in second)

    _two_nodes(body)


def test_a_remote_reply_with_nul_is_recorded() -> None:
    """A hostile remote server's reply goes into last_error: PostgreSQL text cannot hold NUL
    or a lone surrogate, so they are stored as ``store migrate`` stores them."""

    async def body(dsn: str, a: PostgresStore, b: PostgresStore) -> None:
        await _fill(dsn, queued=2)
        one, two = await a.claim_due(NOW, 2, 60.0)
        await a.update_queue([
            QueueUpdate(one.id, "deferred", NOW + 60, "451 4.3.0 \x00oops"),
            QueueUpdate(two.id, "bounced", None, "550 5.1.1 \udcff bad"),
        ])
        rows = {e.id: e for e in await b.list_queue()}
        assert rows[one.id].last_error == "451 4.3.0 \ufffdoops"
        assert rows[two.id].last_error == "550 5.1.1 ? bad"
        assert rows[one.id].state == "deferred"
        assert rows[two.id].state == "bounced"
        assert await b.queue_entries("Q\x000") == []  # a key no row can have is no error
        assert await b.delete_queue("Q\x000") == 0

    _two_nodes(body)
