from __future__ import annotations

import asyncio

from mailstead.web.security import Receive, Scope, Send, WebGuard
from mailstead.web.server import WebServer


async def _hello(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _scenario() -> None:
    server = WebServer("http", "127.0.0.1", 0, WebGuard(_hello, listener="http", https=False),
                       ssl_context=None, header_timeout=0.3, grace=1)
    await server.start()
    assert server.bound is not None
    port = server.bound[1]
    try:
        # A complete request is answered, with the security headers.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"x-content-type-options: nosniff" in head.lower()
        writer.close()
        # A request head that never ends is cut off after the deadline, not held forever.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        server.stop_accepting()
        await server.wait_stopped(5)
    # Stopped: the port no longer accepts.
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    writer.close()
    raise AssertionError("the stopped server still accepts connections")


def test_request_head_deadline_and_stop() -> None:
    asyncio.run(_scenario())
