"""The Connection's whole-line deadline, progress and shedding (servers/listener.py), driven
with a fake transport on a real event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mailstead.servers.listener import Connection, Shed
from mailstead.servers.slots import Tier


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
