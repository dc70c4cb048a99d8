"""The POP3 [IN-USE] lock across nodes (issue 10; RFC 2449 section 8.1.1): two PostgresStore
instances of one database stand for two nodes. The lease is exclusive across them, renewed
while the session lives, released at QUIT and at disconnect, and expires when its node dies.
The last test runs two POP3 servers over TLS on loopback, one per node."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from argon2 import PasswordHasher

from mailstead.accounts.service import AccountService
from mailstead.core.certs import generate_self_signed
from mailstead.core.secret import Secret
from mailstead.servers.listener import Listener, make_tls_context
from mailstead.servers.pop3 import (
    LeaseLock,
    LocalLock,
    Maildrops,
    POP3ListenerSettings,
    POP3Server,
)
from mailstead.storage.postgres.store import PostgresStore
from pgserver import shared_server

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
USER = "pop@example.test"
PASSWORD = "pop-Secret-pw-1"
HOSTNAME = "mail.example.test"


@asynccontextmanager
async def two_nodes() -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    dsn = shared_server().new_database()
    first = await PostgresStore.open(dsn, pool_size=4)
    second = await PostgresStore.open(dsn, pool_size=4)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


def test_the_lease_is_exclusive_across_nodes_and_released() -> None:
    async def body() -> None:
        async with two_nodes() as (store_a, store_b):
            a, b = LeaseLock(store_a), LeaseLock(store_b)
            assert a.node != b.node
            assert await a.acquire(7, "s1")
            assert not await b.acquire(7, "s2")  # the other node
            assert not await a.acquire(7, "s3")  # another session of the same node
            assert await b.acquire(8, "s2")  # another account
            await b.release(7, "s2")  # not the holder: nothing happens
            assert not await b.acquire(7, "s4")
            await a.release(7, "s1")
            assert await b.acquire(7, "s4")
            await b.release(7, "s4")
            await b.release(8, "s2")

    asyncio.run(body())


def test_a_live_session_renews_its_lease_and_a_dead_node_loses_it() -> None:
    async def body() -> None:
        async with two_nodes() as (store_a, store_b):
            ttl = 0.4
            a, b = LeaseLock(store_a, ttl=ttl), LeaseLock(store_b, ttl=ttl)
            assert await a.acquire(1, "s1")
            await asyncio.sleep(ttl * 3)  # well past one ttl: renewed all along
            assert not await b.acquire(1, "s2")
            # Node A dies: its database connection is gone, nobody renews or releases.
            await store_a.close()
            await asyncio.sleep(ttl * 1.5)
            assert await b.acquire(1, "s2")
            await a.release(1, "s1")  # the renewal task ends; the failed release is logged
            assert not await LeaseLock(store_b, ttl=ttl).acquire(1, "s3")  # still s2's
            await b.release(1, "s2")

    asyncio.run(body())


def test_the_local_lock_is_per_process() -> None:
    async def body() -> None:
        lock = LocalLock()
        assert await lock.acquire(1, "s1")
        assert await lock.acquire(1, "s1")  # the holder again
        assert not await lock.acquire(1, "s2")
        await lock.release(1, "s2")
        assert not await lock.acquire(1, "s2")
        await lock.release(1, "s1")
        assert await lock.acquire(1, "s2")

    asyncio.run(body())


class Client:
    """Just enough of a POP3 client over TLS: one command, one status line."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> Client:
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        client = cls(reader, writer)
        assert (await client.line()).startswith(b"+OK")
        return client

    async def line(self) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), 10)

    async def command(self, text: str) -> bytes:
        self.writer.write(text.encode() + b"\r\n")
        await self.writer.drain()
        return await self.line()

    async def login(self) -> bytes:
        assert (await self.command(f"USER {USER}")).startswith(b"+OK")
        return await self.command(f"PASS {PASSWORD}")

    async def drop(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@asynccontextmanager
async def pop3s(store: PostgresStore, tls: ssl.SSLContext) -> AsyncIterator[int]:
    """A POP3S listener of one node (a lease lock, as app.py sets it up for a networked
    store) on a loopback port."""
    stopping = asyncio.Event()
    accounts = AccountService(store, FAST)
    assert store.networked
    server = POP3Server(
        POP3ListenerSettings(name="pop3s", hostname=HOSTNAME, implicit_tls=True, max_errors=5,
                             idle_timeout=30, auth_failure_delay=0),
        Maildrops(store, LeaseLock(store)), accounts, None, stopping,
    )
    listener = Listener("pop3s", "127.0.0.1", 0, server.session, ssl_context=tls,
                        max_connections=10, max_connections_per_ip=10, refuse=server.refusal)
    await listener.start()
    assert listener.bound is not None
    try:
        yield listener.bound[1]
    finally:
        stopping.set()
        listener.stop_accepting()
        await listener.wait_sessions(5)
        await accounts.close()


async def wait_for_login(port: int) -> Client:
    """Logs in, retrying while the server has not yet noticed the last session's end."""
    for _ in range(100):
        client = await Client.connect(port)
        reply = await client.login()
        if reply.startswith(b"+OK"):
            return client
        assert reply.startswith(b"-ERR [IN-USE]"), reply
        await client.drop()
        await asyncio.sleep(0.05)
    raise AssertionError("the maildrop stayed locked")


def test_a_second_session_on_another_node_gets_in_use(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    generate_self_signed(HOSTNAME, cert, key)
    tls = make_tls_context(cert, key)

    async def body() -> None:
        async with two_nodes() as (store_a, store_b):
            setup = AccountService(store_a, FAST)
            await setup.add_domain("example.test")
            await setup.add_user(USER, Secret(PASSWORD))
            await setup.close()
            async with pop3s(store_a, tls) as port_a, pop3s(store_b, tls) as port_b:
                first = await Client.connect(port_a)
                assert (await first.login()).startswith(b"+OK")
                second = await Client.connect(port_b)
                assert (await second.login()).startswith(b"-ERR [IN-USE]")
                await second.drop()
                assert (await first.command("QUIT")).startswith(b"+OK")
                # Released before QUIT's answer: node B opens the maildrop at once (no
                # retrying), and now A is refused.
                on_b = await Client.connect(port_b)
                assert (await on_b.login()).startswith(b"+OK")
                await first.drop()
                again = await Client.connect(port_a)
                assert (await again.login()).startswith(b"-ERR [IN-USE]")
                await again.drop()
                # A dropped connection (no QUIT) releases it too, once B notices.
                await on_b.drop()
                on_a = await wait_for_login(port_a)
                assert (await on_a.command("QUIT")).startswith(b"+OK")
                await on_a.drop()

    asyncio.run(body())
