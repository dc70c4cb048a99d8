"""What every protocol server shares: TLS contexts, connections with backpressure, limits.

A protocol server gives a ``Listener`` a session coroutine; the listener accepts connections,
enforces the connection limits, and runs one session per connection over a ``Connection``,
which owns the buffers so that STARTTLS can discard plaintext pipelined before the handshake
(RFC 3207 section 5; the same rule holds for IMAP and POP3 STLS).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from mailstead.observability.log import log_event

log = logging.getLogger("mailstead.listener")

# RFC 7525 / BCP 195 section 4.2: TLS 1.2+ with AEAD ciphers and forward secrecy only.
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"
_READ_LIMIT = 256 * 1024  # pause the socket when this much unread input is buffered
_HANDSHAKE_TIMEOUT = 30.0


def make_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for TLS 1.2 and 1.3 with modern ciphers; raises OSError/SSLError."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """What a Received: header and the logs say about a connection's encryption."""

    version: str
    cipher: str
    bits: int

    def describe(self) -> str:
        return f"{self.version} with cipher {self.cipher} ({self.bits}/{self.bits} bits)"


class ConnectionLost(Exception):
    """The peer went away (or the connection was closed) while we were reading or writing."""


class Interrupted(Exception):
    """``Connection.interrupt()`` was called while the session waited for input (shutdown)."""


class Connection(asyncio.Protocol):
    """One accepted connection: a byte buffer fed by the event loop, read by the session."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._eof = False
        self._lost = False
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self._interrupted = False
        self.peer_ip = ""
        self.peer_port = 0
        self.tls: TLSInfo | None = None
        self.connected: asyncio.Future[None] = loop.create_future()

    # asyncio.Protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only duck-typed ones.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer_ip, self.peer_port = str(peer[0]), int(peer[1])
        self._update_tls(transport)
        if not self.connected.done():
            self.connected.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > _READ_LIMIT and self._transport and not self._read_paused:
            self._read_paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._eof = True
        self._wake()
        if self._drain_waiter and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def _wake(self) -> None:
        if self._waiter and not self._waiter.done():
            self._waiter.set_result(None)

    def _update_tls(self, transport: asyncio.BaseTransport) -> None:
        obj = transport.get_extra_info("ssl_object")
        if isinstance(obj, ssl.SSLObject | ssl.SSLSocket):
            cipher = obj.cipher()
            self.tls = TLSInfo(
                version=obj.version() or "TLS",
                cipher=cipher[0] if cipher else "unknown",
                bits=int(cipher[2]) if cipher and cipher[2] else 0,
            )

    # The session's side
    async def read(self) -> bytes:
        """Everything buffered, waiting for at least one byte; b"" at end of input."""
        while not self._buffer:
            if self._eof:
                return b""
            if self._interrupted:
                self._interrupted = False
                raise Interrupted
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._read_paused and self._transport and not self._lost:
            self._read_paused = False
            self._transport.resume_reading()
        return data

    def interrupt(self) -> None:
        """Makes a pending (or the next waiting) ``read`` raise ``Interrupted``."""
        self._interrupted = True
        self._wake()

    def write(self, data: bytes) -> None:
        if data and self._transport and not self._lost and not self._transport.is_closing():
            self._transport.write(data)

    async def drain(self) -> None:
        if self._lost:
            raise ConnectionLost
        if self._write_paused:
            self._drain_waiter = self._loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None
            if self._lost:
                raise ConnectionLost

    async def start_tls(self, ctx: ssl.SSLContext) -> None:
        """Upgrade to TLS, discarding any plaintext that arrived after the STARTTLS command.

        ``loop.start_tls`` swaps the transport's protocol before its first await, so every byte
        buffered up to here is pre-handshake plaintext (RFC 3207 section 5: discard it), and every
        byte after it is decrypted application data.
        """
        assert self._transport is not None
        self._buffer.clear()
        if self._read_paused:
            self._read_paused = False
            self._transport.resume_reading()
        try:
            new = await self._loop.start_tls(
                self._transport, self, ctx, server_side=True,
                ssl_handshake_timeout=_HANDSHAKE_TIMEOUT,
            )
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            self._lost = True
            raise ConnectionLost from exc
        if new is None:
            raise ConnectionLost
        self._transport = new
        self._update_tls(new)

    def close(self) -> None:
        if self._transport and not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        if self._transport:
            self._transport.abort()


SessionFactory = Callable[[Connection], Awaitable[None]]


class Listener:
    """Accepts connections on one address and runs a session for each, within the limits."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        session: SessionFactory,
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        max_connections_per_ip: int,
        refuse: Callable[[str], bytes],
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self._session = session
        self._ssl = ssl_context
        self._max = max_connections
        self._max_per_ip = max_connections_per_ip
        self._refuse = refuse  # bytes to send when a limit refuses a connection
        self._server: asyncio.base_events.Server | None = None
        self._per_ip: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._conns: set[Connection] = set()
        self.bound: tuple[str, int] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _AcceptedConnection(loop, self),
            host=self.host,
            port=self.port,
            ssl=self._ssl,
            ssl_handshake_timeout=_HANDSHAKE_TIMEOUT if self._ssl else None,
            reuse_address=True,
            backlog=512,
        )
        sock = self._server.sockets[0].getsockname()
        self.bound = (str(sock[0]), int(sock[1]))

    def _accept(self, conn: Connection) -> None:
        ip = conn.peer_ip
        total = sum(self._per_ip.values())
        if total >= self._max or self._per_ip.get(ip, 0) >= self._max_per_ip:
            log_event(log, "connection.refused", listener=self.name, client=ip,
                      reason="too many connections")
            conn.write(self._refuse(ip))
            conn.close()
            return
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        self._conns.add(conn)
        task = asyncio.get_running_loop().create_task(self._run(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, conn: Connection) -> None:
        try:
            await self._session(conn)
        except (ConnectionLost, ConnectionError):
            pass
        except asyncio.CancelledError:
            conn.abort()
            raise
        except Exception:
            log.exception("session crashed (listener=%s client=%s)", self.name, conn.peer_ip)
        finally:
            conn.close()
            self._conns.discard(conn)
            left = self._per_ip.get(conn.peer_ip, 1) - 1
            if left <= 0:
                self._per_ip.pop(conn.peer_ip, None)
            else:
                self._per_ip[conn.peer_ip] = left

    def stop_accepting(self) -> None:
        """Closes the listening socket and interrupts every session waiting for input, so
        idle clients get a proper goodbye (421) while busy ones finish their transaction."""
        if self._server is not None:
            self._server.close()
        for conn in self._conns:
            conn.interrupt()

    async def wait_sessions(self, timeout: float) -> None:
        """Waits for running sessions to end by themselves, then cancels the rest."""
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)


class _AcceptedConnection(Connection):
    def __init__(self, loop: asyncio.AbstractEventLoop, listener: Listener) -> None:
        super().__init__(loop)
        self._listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._listener._accept(self)
