"""The Connection's whole-line deadline, progress and shedding (servers/listener.py), driven
with a fake transport on a real event loop."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path
from typing import Any

import pytest

from mailstead.core.certs import generate_self_signed
from mailstead.servers.listener import Connection, Listener, Shed, make_tls_context
from mailstead.servers.slots import Tier

HOSTNAME = "mail.example.test"


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("192.0.2.1", 4242) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass


async def _connection() -> Connection:
    conn = Connection(asyncio.get_running_loop())
    conn.connection_made(FakeTransport())
    return conn


def test_trickle_does_not_move_the_deadline() -> None:
    async def run() -> float:
        loop = asyncio.get_running_loop()
        conn = await _connection()

        async def trickle() -> None:
            for _ in range(20):
                await asyncio.sleep(0.02)
                conn.data_received(b"x")

        async def read_forever() -> None:
            while True:
                await conn.read_command(0.15)

        feeder = loop.create_task(trickle())
        start = loop.time()
        with pytest.raises(TimeoutError):
            await read_forever()
        feeder.cancel()
        return loop.time() - start

    assert asyncio.run(run()) < 0.3


def test_command_done_starts_a_fresh_deadline_and_counts_progress() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        conn = await _connection()
        conn.data_received(b"NOOP\r\n")
        first = conn.command_deadline(10)
        assert await conn.read_command(10) == b"NOOP\r\n"
        assert conn.command_deadline(10) == first  # no reply yet: the same line
        conn.command_done()
        assert conn.progress_bytes == 6
        assert conn.progress_at <= loop.time()
        assert conn.command_deadline(10) >= first

    asyncio.run(run())


def test_shed_wakes_the_reader_with_shed() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        conn = await _connection()
        assert conn.sheddable is None  # not waiting for input: busy
        reader = loop.create_task(conn.read_command(10))
        await asyncio.sleep(0)
        assert conn.sheddable is Tier.ANONYMOUS
        conn.authenticated = True
        assert conn.sheddable is Tier.AUTHENTICATED
        conn.idling = True
        assert conn.sheddable is None
        conn.idling = False
        conn.shed()
        with pytest.raises(Shed):
            await reader
        assert conn.sheddable is None

    asyncio.run(run())


async def _implicit_tls_round(tls: ssl.SSLContext, client: ssl.SSLContext) -> None:
    async def session(conn: Connection) -> None:
        assert conn.tls is not None
        conn.write(b"hello\r\n")
        await conn.drain()
        assert await conn.read_command(5) == b"ping\r\n"
        conn.write(b"pong\r\n")
        await conn.drain()

    listener = Listener("t", "127.0.0.1", 0, session, ssl_context=tls, max_connections=10,
                        max_connections_per_ip=1, refuse=lambda _ip: b"no\r\n")
    await listener.start()
    assert listener.bound is not None
    try:
        # The ClientHello goes out at once, before the server's session task has run.
        reader, writer = await asyncio.open_connection(*listener.bound, ssl=client,
                                                       server_hostname=HOSTNAME)
        try:
            assert await reader.readline() == b"hello\r\n"
            # Over the per-address limit: closed at accept, no plaintext reply before TLS.
            extra_r, extra_w = await asyncio.open_connection(*listener.bound)
            assert await asyncio.wait_for(extra_r.read(), 5) == b""
            extra_w.close()
            writer.write(b"ping\r\n")
            assert await reader.readline() == b"pong\r\n"
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
    finally:
        listener.stop_accepting()
        await listener.wait_sessions(5)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_implicit_tls_handshake_in_the_session_task(tmp_path: Path, loop: str) -> None:
    """The listener shakes hands itself (so the connection counted from accept); the bytes
    uvloop reads before start_tls must reach the TLS layer."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    generate_self_signed(HOSTNAME, cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    coro = _implicit_tls_round(make_tls_context(cert, key), client)
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(coro)
    else:
        asyncio.run(coro)


def test_concurrent_drains_all_return_and_one_may_be_cancelled() -> None:
    async def run() -> None:
        conn = await _connection()
        conn.pause_writing()
        first = asyncio.ensure_future(conn.drain())
        second = asyncio.ensure_future(conn.drain())
        third = asyncio.ensure_future(conn.drain())
        await asyncio.sleep(0)
        third.cancel()  # e.g. a push task stopped while the command's output waits
        with contextlib.suppress(asyncio.CancelledError):
            await third
        conn.resume_writing()
        await asyncio.wait_for(asyncio.gather(first, second), 5)

    asyncio.run(run())
