"""Outbound connection reuse: an idle session carries the next message to the same target
after an RSET, is ended (QUIT) after its idle time or at close, is never reused after a
broken transaction, and a session the server dropped while idle costs a new connection,
never a lost or failed message."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from mailstead.queue.client import OutboundClient
from mailstead.queue.routing import Route, Target
from mailstead.queue.sessions import Connection, SessionCache


@dataclass
class Sink:
    """A scripted SMTP server in the test's loop: one list of command verbs per connection.
    ``drop_idle`` closes a connection that is quiet for that long (as servers do);
    ``data_reply`` answers the end of data."""

    drop_idle: float | None = None
    data_reply: bytes = b"250 2.0.0 ok\r\n"
    sessions: list[list[str]] = field(default_factory=list)
    open_now: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        verbs: list[str] = []
        self.sessions.append(verbs)
        self.open_now += 1
        try:
            writer.write(b"220 sink.test ESMTP\r\n")
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), self.drop_idle)
                except TimeoutError:
                    writer.write(b"421 4.4.2 idle too long\r\n")
                    return
                if not line:
                    return
                verb = line.split(b" ", 1)[0].strip().upper().decode()
                verbs.append(verb)
                if verb == "EHLO":
                    writer.write(b"250-sink.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == "DATA":
                    writer.write(b"354 go\r\n")
                    await reader.readuntil(b"\r\n.\r\n")
                    writer.write(self.data_reply)
                    if self.data_reply.startswith(b"421"):
                        return
                elif verb == "QUIT":
                    writer.write(b"221 bye\r\n")
                    return
                else:
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.open_now -= 1
            writer.close()


def _run(sink: Sink, body: Callable[[OutboundClient, Route], Awaitable[None]],
         reuse_time: float) -> None:
    async def main() -> None:
        port = await sink.start()
        client = OutboundClient("mail.a.test", connect_timeout=2, command_timeout=2,
                                reuse_time=reuse_time)
        route = Route("mx", [Target("mx.b.test", "127.0.0.1", port)])
        try:
            await body(client, route)
        finally:
            await client.close()
            await asyncio.sleep(0.05)
            await sink.stop()

    asyncio.run(main())


async def _send(client: OutboundClient, route: Route, n: int = 1) -> Any:
    result = await client.deliver(route, "alice@a.test", [f"bob{n}@b.test"],
                                  b"Subject: t\r\n\r\nbody\r\n")
    [r] = result.results
    return r.reply


def test_the_next_message_reuses_the_session_after_rset_and_close_quits() -> None:
    sink = Sink()

    async def body(client: OutboundClient, route: Route) -> None:
        for n in range(3):
            assert (await _send(client, route, n)).code == 250
        assert sink.open_now == 1
        await client.close()
        await asyncio.sleep(0.05)
        assert sink.open_now == 0

    _run(sink, body, reuse_time=5)
    assert sink.sessions == [["EHLO", "MAIL", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "DATA",
                              "RSET", "MAIL", "RCPT", "DATA", "QUIT"]]


def test_without_reuse_every_message_has_its_own_connection() -> None:
    sink = Sink()

    async def body(client: OutboundClient, route: Route) -> None:
        for n in range(2):
            assert (await _send(client, route, n)).code == 250
        assert sink.open_now == 0

    _run(sink, body, reuse_time=0)
    assert sink.sessions == [["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]] * 2


def test_an_idle_session_is_ended_after_its_idle_time() -> None:
    sink = Sink()

    async def body(client: OutboundClient, route: Route) -> None:
        assert (await _send(client, route)).code == 250
        assert sink.open_now == 1
        await asyncio.sleep(0.6)
        assert sink.open_now == 0  # QUIT sent by the cache's sweep
        assert (await _send(client, route)).code == 250

    _run(sink, body, reuse_time=0.2)
    assert sink.sessions[0] == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    assert sink.sessions[1][:4] == ["EHLO", "MAIL", "RCPT", "DATA"]


def test_a_session_the_server_dropped_costs_a_new_connection_not_the_message() -> None:
    sink = Sink(drop_idle=0.2)

    async def body(client: OutboundClient, route: Route) -> None:
        assert (await _send(client, route)).code == 250
        await asyncio.sleep(0.5)  # the server says 421 and closes; the client still holds it
        assert (await _send(client, route)).code == 250

    _run(sink, body, reuse_time=5)
    assert len(sink.sessions) == 2
    assert sink.sessions[1][:4] == ["EHLO", "MAIL", "RCPT", "DATA"]


def test_a_session_whose_transaction_broke_is_not_reused() -> None:
    sink = Sink(data_reply=b"421 4.3.2 shutting down\r\n")

    async def body(client: OutboundClient, route: Route) -> None:
        assert (await _send(client, route)).code == 421
        sink.data_reply = b"250 2.0.0 ok\r\n"
        assert (await _send(client, route)).code == 250

    _run(sink, body, reuse_time=5)
    assert len(sink.sessions) == 2
    assert "RSET" not in sink.sessions[1]


def test_sessions_are_not_shared_between_routes_with_different_tls_demands() -> None:
    sink = Sink()

    async def body(client: OutboundClient, route: Route) -> None:
        assert (await _send(client, route)).code == 250
        # The same host where MTA-STS demands verified TLS (the sink has none): the idle
        # plaintext session must not carry it.
        strict = Route("mx", route.targets, tls_required=True)
        reply = await _send(client, strict)
        assert reply.code == 451
        assert reply.enhanced == "4.7.10"

    _run(sink, body, reuse_time=5)
    assert sink.sessions[0] == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    assert "MAIL" not in sink.sessions[1]


@pytest.mark.parametrize(("uses", "age", "expected"),
                         [(0, 0.0, True), (100, 0.0, False), (0, 400.0, False)])
def test_worn_out_sessions_are_not_kept(uses: int, age: float, expected: bool) -> None:
    async def main() -> bool:
        sink = Sink()
        port = await sink.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        from mailstead.proto.smtp.client import SMTPClientCore

        conn = Connection(reader, writer, SMTPClientCore("mail.a.test"), 2)
        await conn.event()  # greeting + EHLO: ready
        conn.uses = uses
        conn.opened -= age
        cache = SessionCache(5.0)
        kept = cache.put("k", conn)
        assert len(cache) == (1 if kept else 0)
        if kept:
            assert cache.take("k") is conn
            assert cache.take("k") is None
        await conn.shutdown()
        await sink.stop()
        return kept

    assert asyncio.run(main()) is expected
