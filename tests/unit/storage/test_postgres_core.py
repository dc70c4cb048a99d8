"""The PostgreSQL store's delivery and administration shared by several nodes on one database
(issue 10), beyond the contract suites: UIDs and MODSEQs stay unique and consecutive under
concurrent deliveries from two nodes, a delivery on one node wakes a watch on another, bodies
are stored once, and garbage collection never takes a body a delivery is using."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from mailstead.core.errors import NotFound, StoreError
from mailstead.storage.interfaces import IncomingMessage, LocalDelivery
from mailstead.storage.postgres.store import PostgresStore
from mailstead.storage.sqlite.writer import MAX_UID
from pgserver import shared_server

Body = Callable[[asyncpg.Connection, PostgresStore, PostgresStore], Awaitable[None]]


def message(
    data: bytes, local: list[LocalDelivery], remote: tuple[str, ...] = ()
) -> IncomingMessage:
    return IncomingMessage(
        data=data,
        queue_id="Q" + hashlib.sha256(data).hexdigest()[:8],
        mail_from="sender@remote.test",
        local=local,
        remote=list(remote),
        internal_date=1_700_000_000.0,
        envelope="{}",
        bodystructure="{}",
    )


def two_nodes(body: Body, pool_size: int = 4, settings: tuple[str, ...] = ()) -> None:
    """Runs ``body`` with a direct connection and two stores ("nodes") on one fresh database
    (with the planner ``settings``, e.g. "enable_seqscan = off")."""
    server = shared_server()
    dsn = server.new_database()
    for setting in settings:
        server.psql(f'ALTER DATABASE "{dsn.rsplit("/", 1)[1]}" SET {setting}')

    async def main() -> None:
        a = await PostgresStore.open(dsn, pool_size=pool_size)
        b = await PostgresStore.open(dsn, pool_size=pool_size)
        conn = await asyncpg.connect(dsn)
        try:
            await body(conn, a, b)
        finally:
            await conn.close()
            await a.close()
            await b.close()

    asyncio.run(main())


async def alice(store: PostgresStore) -> int:
    await store.add_domain("example.test")
    return (await store.add_account("alice@example.test", "hash")).id


def test_concurrent_deliveries_from_two_nodes_get_consecutive_uids() -> None:
    async def body(conn: asyncpg.Connection, a: PostgresStore, b: PostgresStore) -> None:
        account = await alice(a)
        payloads = [f"Subject: {i}\r\n\r\nmessage {i}\r\n".encode() for i in range(400)]
        results = await asyncio.gather(*(
            (a if i % 2 else b).accept_message(message(p, [LocalDelivery(account)]))
            for i, p in enumerate(payloads)
        ))
        uids = sorted(r.delivered[0][2] for r in results)
        assert uids == list(range(1, 401))
        listed = await b.list_messages(account, "INBOX")
        assert [m.uid for m in listed] == list(range(1, 401))
        # Every delivery got a MODSEQ of its own, above the initial HIGHESTMODSEQ of 1, and
        # a higher UID never has a lower MODSEQ (both are taken under the mailbox's lock).
        assert [m.modseq for m in listed] == list(range(2, 402))
        inbox = next(m for m in await a.list_mailboxes(account) if m.name == "INBOX")
        assert (inbox.uidnext, inbox.highestmodseq, inbox.messages) == (401, 401, 400)
        by_uid = {r.delivered[0][2]: r.blob for r in results}
        assert all(m.blob == by_uid[m.uid] for m in listed)
        assert await conn.fetchval("SELECT used_messages FROM accounts WHERE id = $1",
                                   account) == 400

    two_nodes(body, pool_size=10)


def test_crossed_deliveries_into_several_mailboxes_do_not_deadlock() -> None:
    """Copies listed in opposite orders: the mailboxes must still be locked in one order.
    The planner is made to look mailboxes up by index in the order of the request, as it
    does on a large table (a sequential scan of a small one would hide the problem)."""

    async def body(conn: asyncpg.Connection, a: PostgresStore, b: PostgresStore) -> None:
        first = await alice(a)
        second = (await a.add_account("bob@example.test", "h")).id
        order = [LocalDelivery(first), LocalDelivery(second, "Archive"), LocalDelivery(first,
                                                                                     "Junk")]
        results = await asyncio.gather(*(
            (a if i % 2 else b).accept_message(
                message(f"m{i}\r\n".encode(), order if i % 2 else order[::-1])
            )
            for i in range(100)
        ))
        assert len(results) == 100
        for account, box in ((first, "INBOX"), (second, "Archive"), (first, "Junk")):
            assert [m.uid for m in await a.list_messages(account, box)] == list(range(1, 101))

    two_nodes(body, settings=("enable_seqscan = off", "enable_hashjoin = off",
                              "enable_mergejoin = off"))


def test_copies_into_one_mailbox_take_uids_in_order() -> None:
    async def body(conn: asyncpg.Connection, a: PostgresStore, b: PostgresStore) -> None:
        account = await alice(a)
        await a.accept_message(message(b"first\r\n", [LocalDelivery(account)]))
        result = await b.accept_message(message(b"twice\r\n", [
            LocalDelivery(account, "inbox", ("\\Seen",)),
            LocalDelivery(account, "Junk"),
            LocalDelivery(account, "INBOX", ("\\Flagged",)),
        ]))
        inbox_id = result.delivered[0][1]
        assert [(d[1] == inbox_id, d[2]) for d in result.delivered] == [
            (True, 2), (False, 1), (True, 3)]
        listed = await a.list_messages(account, "INBOX")
        assert [(m.uid, m.modseq, m.flags) for m in listed] == [
            (1, 2, ()), (2, 3, ("\\Seen",)), (3, 4, ("\\Flagged",))]

    two_nodes(body)


def test_delivery_on_one_node_wakes_a_watch_on_another() -> None:
    async def body(conn: asyncpg.Connection, a: PostgresStore, b: PostgresStore) -> None:
        account = await alice(a)
        other = (await a.add_account("bob@example.test", "h")).id
        watch = b.watch(account)
        bystander = b.watch(other)
        try:
            started = time.monotonic()
            await a.accept_message(message(b"wake up\r\n", [LocalDelivery(account)]))
            assert await watch.wait(timeout=1.0)
            assert time.monotonic() - started < 1.0
            assert not await bystander.wait(timeout=0.2)  # only the account delivered to
            # A delivery that fails notifies nobody.
            with pytest.raises(NotFound):
                await a.accept_message(message(b"x\r\n", [LocalDelivery(account, "Nope")]))
            assert not await watch.wait(timeout=0.3)
        finally:
            watch.close()
            bystander.close()

    two_nodes(body)


def test_identical_bodies_are_stored_once() -> None:
    async def body(conn: asyncpg.Connection, a: PostgresStore, b: PostgresStore) -> None:
        account = await alice(a)
        data = b"Subject: same\r\n\r\nbody\r\n"
        results = await asyncio.gather(*(
            (a if i % 2 else b).accept_message(
                message(data, [LocalDelivery(account)], ("r@remote.test",))
            )
            for i in range(20)
        ))
        assert {r.blob for r in results} == {hashlib.sha256(data).hexdigest()}
        rows = await conn.fetch("SELECT hash, size, data FROM blobs")
        assert [(r[0], r[1], bytes(r[2])) for r in rows] == [(results[0].blob, len(data), data)]
        assert len(await a.list_messages(account, "INBOX")) == 20
        assert len(await b.list_queue()) == 20

    two_nodes(body)


def test_failed_delivery_writes_nothing() -> None:
    async def body(conn: asyncpg.Connection, a: PostgresStore, b: PostgresStore) -> None:
        account = await alice(a)
        with pytest.raises(NotFound, match="'Missing' for account"):
            await a.accept_message(message(
                b"x\r\n", [LocalDelivery(account), LocalDelivery(account, "Missing")],
                ("r@remote.test",)))
        with pytest.raises(NotFound):  # an unknown account has no mailboxes
            await a.accept_message(message(b"y\r\n", [LocalDelivery(account + 100)]))
        # RFC 3501 section 2.3.1.1: UIDs are 32-bit; a full mailbox refuses, whole.
        await conn.execute("UPDATE mailboxes SET uidnext = $1 WHERE account_id = $2"
                           " AND name = 'Junk'", MAX_UID, account)
        with pytest.raises(StoreError, match="run out of UIDs"):
            await a.accept_message(message(
                b"z\r\n", [LocalDelivery(account), LocalDelivery(account, "Junk"),
                           LocalDelivery(account, "Junk")]))
        for table in ("blobs", "messages", "queue", "fts_pending"):
            assert await conn.fetchval(f"SELECT COUNT(*) FROM {table}") == 0, table
        boxes = await conn.fetch("SELECT name, uidnext, highestmodseq FROM mailboxes"
                                 " WHERE name IN ('INBOX', 'Junk') ORDER BY name")
        assert [tuple(r) for r in boxes] == [("INBOX", 1, 1), ("Junk", MAX_UID, 1)]
        # The last UID there is still usable.
        result = await a.accept_message(message(b"z\r\n", [LocalDelivery(account, "Junk")]))
        assert result.delivered[0][2] == MAX_UID

    two_nodes(body)


def test_garbage_collection() -> None:
    async def body(conn: asyncpg.Connection, a: PostgresStore, b: PostgresStore) -> None:
        account = await alice(a)
        kept = await a.accept_message(message(b"kept\r\n", [LocalDelivery(account)]))
        queued = await a.accept_message(message(b"queued\r\n", [], ("r@remote.test",)))
        gone = await a.accept_message(message(b"gone\r\n", [LocalDelivery(account)]))
        await a.search_text(kept.delivered[0][1], "kept", part="text")  # fills fts_docs
        await a.delete_messages(gone.delivered[0][1], [gone.delivered[0][2]])
        assert await b.collect_garbage(grace=3600) == 0  # too recent
        assert await b.collect_garbage(grace=-10) == 1
        hashes = {r[0] for r in await conn.fetch("SELECT hash FROM blobs")}
        assert hashes == {kept.blob, queued.blob}
        with pytest.raises(NotFound):
            await a.read_blob(gone.blob)
        # Removing the account frees its bodies (and their index rows) too.
        await a.remove_account("alice@example.test")
        assert await b.collect_garbage(grace=-10) == 1
        assert {r[0] for r in await conn.fetch("SELECT hash FROM blobs")} == {queued.blob}
        for table in ("fts_docs", "fts_pending"):
            assert await conn.fetchval(
                f"SELECT COUNT(*) FROM {table} WHERE blob <> $1", queued.blob) == 0, table

    two_nodes(body)


def test_garbage_collection_racing_deliveries_of_the_same_body() -> None:
    async def body(conn: asyncpg.Connection, a: PostgresStore, b: PostgresStore) -> None:
        account = await alice(a)
        for i in range(30):
            data = f"body {i}\r\n".encode()
            name = hashlib.sha256(data).hexdigest()
            # An old, unreferenced copy of the very body about to be delivered.
            await conn.execute("INSERT INTO blobs (hash, size, created_at, data)"
                               " VALUES ($1, $2, 0, $3)", name, len(data), data)
            results = await asyncio.gather(
                b.collect_garbage(grace=0),
                a.accept_message(message(data, [LocalDelivery(account)])),
                b.collect_garbage(grace=0),
            )
            assert results[1].blob == name
            assert await a.read_blob(name) == data
        assert len(await b.list_messages(account, "INBOX")) == 30

    two_nodes(body)


def test_recipient_lookup_and_accounts_across_nodes() -> None:
    async def body(conn: asyncpg.Connection, a: PostgresStore, b: PostgresStore) -> None:
        account = await alice(a)
        await a.set_quota(account, 10)
        assert await b.lookup_recipient("EXAMPLE.test", "Alice@example.test") == (
            True, await b.get_account_by_id(account), 10, None)
        await a.accept_message(message(b"0123456789\r\n", [LocalDelivery(account)]))
        local, found, room, sieve = await b.lookup_recipient("example.test", "alice@example.test")
        assert (local, found is not None, room, sieve) == (True, True, -2, None)
        await a.put_sieve_script(account, "main", "keep;")
        await a.set_active_sieve_script(account, "main")
        assert (await b.lookup_recipient("example.test", "alice@example.test"))[3] == "keep;"
        assert await b.lookup_recipient("other.test", "x@other.test") == (
            False, None, None, None)
        # Removing an account with messages (cascades and quota triggers) on the other node.
        await b.remove_account("ALICE@example.test")
        assert await a.get_account("alice@example.test") is None
        assert await conn.fetchval("SELECT COUNT(*) FROM messages") == 0
        # UIDVALIDITY stays fresh across nodes (RFC 3501 section 2.3.1.1).
        seen = {r[0] for r in await conn.fetch("SELECT uidvalidity FROM mailboxes")}
        again = await b.add_account("alice@example.test", "h")
        fresh = [m.uidvalidity for m in await a.list_mailboxes(again.id)]
        assert len(set(fresh)) == len(fresh)
        assert not set(fresh) & seen
        assert min(fresh) >= int(time.time()) - 5

    two_nodes(body)


def test_old_rows_without_wire_size_are_measured_once() -> None:
    async def body(conn: asyncpg.Connection, a: PostgresStore, b: PostgresStore) -> None:
        account = await alice(a)
        data = b"Subject: old\n\nbare lines\nno end"
        await a.accept_message(message(data, [LocalDelivery(account), LocalDelivery(account)]))
        # As `store migrate` copies a row written before migration 0004.
        await conn.execute("UPDATE messages SET wire_size = NULL, unterminated = NULL")
        listed = await b.list_messages(account, "INBOX")
        assert [(m.size, m.wire_size, m.unterminated) for m in listed] == [
            (len(data), len(data) + 3, True)] * 2
        rows = await conn.fetch("SELECT wire_size, unterminated FROM messages")
        assert [tuple(r) for r in rows] == [(len(data) + 3, 1)] * 2

    two_nodes(body)
