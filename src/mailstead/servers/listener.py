"""What every protocol server shares: TLS contexts, connections with backpressure, limits.

A protocol server gives a ``Listener`` a session coroutine; the listener accepts connections,
enforces the connection limits, and runs one session per connection over a ``Connection``,
which owns the buffers so that STARTTLS can discard plaintext pipelined before the handshake
(RFC 3207 section 5; the same rule holds for IMAP and POP3 STLS).

Every connection counts against the limits from the moment it is accepted, implicit-TLS ones
included: the listener does their handshake itself, under its own short timeout. A command line
must be complete by one deadline set when the server starts waiting for it, so a client sending
a byte every few seconds cannot hold a slot forever; and under slot pressure a newcomer sheds
the slowest waiting session (``slots.pick_victim``) instead of being refused.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from mailstead.observability.log import log_event
from mailstead.servers.slots import SlotPolicy, Tier, address_key, pick_victim

log = logging.getLogger("mailstead.listener")

# RFC 7525 / BCP 195 section 4.2: TLS 1.2+ with AEAD ciphers and forward secrecy only.
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"
_READ_LIMIT = 256 * 1024  # pause the socket when this much unread input is buffered


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


# Message content (SMTP DATA/BDAT, IMAP literals) all sessions of a listener may process in one
# turn of the event loop. Twenty clients streaming content as fast as loopback allows took
# 50-100 ms of every turn (5 MB), so each command of every other session waited that long and
# a small delivery's commit, which takes several turns, up to a second; with this share a
# turn's content costs about a millisecond and bulk throughput stays near what it was.
BULK_PER_TURN = 64 * 1024
# A read this small (the end of a message, a short one whole) skips the queue: it costs
# little, and each session has at most one read per turn, so even many such reads add up to
# little; bulk streams come in bigger reads, since their buffers fill while they wait.
SMALL_READ = 16 * 1024


class BulkPacer:
    """Bounds the content bytes one listener's sessions process per event-loop turn. Past the
    share, a session reading content queues; each turn then admits the queue in order (first
    come, first served, so a newcomer waits behind the streams already queued, never for
    ever), while the commands of every session and small reads (``SMALL_READ``) run at
    once."""

    __slots__ = ("_per_turn", "_queue", "_reset_pending", "_used")

    def __init__(self, per_turn: int = BULK_PER_TURN) -> None:
        self._per_turn = per_turn
        self._used = 0
        self._queue: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._reset_pending = False

    async def admit(self, size: int) -> None:
        """Take ``size`` from this turn's share, waiting (whole turns, in order) for room."""
        if size <= SMALL_READ or (not self._queue and self._used < self._per_turn):
            self._used += size
            self._schedule()
            return
        waiter = asyncio.get_running_loop().create_future()
        entry = (size, waiter)
        self._queue.append(entry)
        self._schedule()
        try:
            await waiter
        except asyncio.CancelledError:
            if not waiter.done() or waiter.cancelled():
                with contextlib.suppress(ValueError):
                    self._queue.remove(entry)
            raise

    def _schedule(self) -> None:
        if not self._reset_pending:
            self._reset_pending = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._reset_pending = False
        self._used = 0
        while self._queue and self._used < self._per_turn:
            size, waiter = self._queue.popleft()
            if not waiter.done():
                self._used += size
                waiter.set_result(None)
        if self._queue or self._used:
            self._schedule()


class Shed(ConnectionLost):
    """The listener closes this waiting session to give its slot to a newcomer; the session
    may still write its protocol's goodbye (SMTP 421 4.4.2, IMAP BYE) before it ends."""


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
        self.local_ip = ""  # the address the client connected to
        self.address = ""  # what the per-address limit counts (slots.address_key)
        self.tls: TLSInfo | None = None
        self.connected: asyncio.Future[None] = loop.create_future()
        self.handshake_timeout = SlotPolicy().tls_handshake_timeout
        self.pacer: BulkPacer | None = None  # the listener's, shared by its sessions
        # What slot shedding weighs (slots.Occupant); the session sets the two flags.
        self.accepted_at = loop.time()
        self.progress_at = self.accepted_at
        self.progress_bytes = 0
        self.authenticated = False
        self.idling = False  # IMAP IDLE: a legitimate long wait, never shed
        self._bytes_in = 0
        self._deadline: float | None = None
        self._handshaking = False
        self._shed = False

    # asyncio.Protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only duck-typed ones.
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer_ip, self.peer_port = str(peer[0]), int(peer[1])
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple) and len(local) >= 2:
            self.local_ip = str(local[0])
        self._update_tls(transport)
        if not self.connected.done():
            self.connected.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._bytes_in += len(data)
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
        """Everything buffered, waiting for at least one byte; b"" at end of input. Raises
        ``Shed`` once the listener has chosen this session to make room."""
        while not self._buffer or self._shed:
            if self._shed:
                raise Shed
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

    def command_deadline(self, timeout: float) -> float:
        """The loop time by which the command now being read must be complete: set by the
        first read after ``command_done``, and not moved by the bytes that trickle in."""
        if self._deadline is None:
            self._deadline = self._loop.time() + timeout
        return self._deadline

    async def read_command(self, timeout: float) -> bytes:
        """``read`` within the command deadline; TimeoutError once it has passed."""
        async with asyncio.timeout_at(self.command_deadline(timeout)):
            return await self.read()

    async def read_content(self, timeout: float) -> bytes:
        """``read`` of message content (SMTP DATA, an IMAP literal), where a large message
        on a slow link may take long: an inactivity timeout, each chunk counts as progress."""
        async with asyncio.timeout(timeout):
            data = await self.read()
        self.command_done()
        await self.pace(len(data))
        return data

    async def pace(self, size: int) -> None:
        """Take ``size`` content bytes from the listener's per-turn share (``BulkPacer``)."""
        if self.pacer is not None and size:
            await self.pacer.admit(size)

    def command_done(self) -> None:
        """A command was complete (or answered): the next one gets a fresh deadline, and
        the bytes so far count as progress."""
        self.progress_bytes = self._bytes_in - len(self._buffer)
        self.progress_at = self._loop.time()
        self._deadline = None

    @property
    def sheddable(self) -> Tier | None:
        """The slot tier when this session may be closed for room now (slots.Occupant)."""
        if self._shed or self._lost or self.idling:
            return None
        if self._handshaking:
            return Tier.ANONYMOUS
        if self._waiter is None:  # carrying out a command: closing it could lose work
            return None
        return Tier.AUTHENTICATED if self.authenticated else Tier.ANONYMOUS

    def shed(self) -> None:
        """Close this session to make room: one still shaking hands at once (no reply is
        possible before TLS), one waiting for input through ``Shed`` from its ``read``."""
        self._shed = True
        if self._handshaking:
            self.abort()
        else:
            self._wake()

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
            # Several tasks may wait at once (a command's output and the IMAP INPROGRESS or
            # NOTIFY pushes beside it): they share one future, so none is forgotten, and each
            # waits through a shield, so one being cancelled does not cancel the others.
            if self._drain_waiter is None or self._drain_waiter.done():
                self._drain_waiter = self._loop.create_future()
            await asyncio.shield(self._drain_waiter)
            if self._lost:
                raise ConnectionLost

    async def start_tls(self, ctx: ssl.SSLContext, *, implicit: bool = False) -> None:
        """Upgrade to TLS, discarding any plaintext that arrived after the STARTTLS command.

        ``loop.start_tls`` swaps the transport's protocol before its first await, so every byte
        buffered up to here is pre-handshake plaintext (RFC 3207 section 5: discard it), and every
        byte after it is decrypted application data.
        """
        assert self._transport is not None
        if implicit and self._buffer:
            # On an implicit-TLS port the bytes so far are the ClientHello (uvloop starts
            # reading after connection_made whatever it asked): hand them to the TLS layer.
            # start_tls installs it before its first await; this runs just after that, before
            # it is told of the connection and before reading resumes.
            self._loop.call_soon(_feed_tls, self._transport, self, bytes(self._buffer))
        self._buffer.clear()
        if self._read_paused:
            self._read_paused = False
            self._transport.resume_reading()
        self._handshaking = True
        try:
            new = await self._loop.start_tls(
                self._transport, self, ctx, server_side=True,
                ssl_handshake_timeout=self.handshake_timeout,
            )
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            self._lost = True
            raise ConnectionLost from exc
        finally:
            self._handshaking = False
        if new is None:
            raise ConnectionLost
        self._transport = new
        if self._shed:
            raise ConnectionLost
        self._update_tls(new)
        self.command_done()

    def close(self) -> None:
        if self._transport and not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        if self._transport:
            self._transport.abort()


def _feed_tls(transport: asyncio.Transport, plain: Connection, data: bytes) -> None:
    """Give ``data`` to the (buffered) TLS protocol that start_tls put on ``transport``."""
    # uvloop's SSLProtocol is buffered without subclassing asyncio.BufferedProtocol.
    current = transport.get_protocol()
    if current is plain or not hasattr(current, "buffer_updated"):
        return
    proto = cast(asyncio.BufferedProtocol, current)
    view = memoryview(data)
    while view:
        buf = memoryview(proto.get_buffer(len(view)))
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        proto.buffer_updated(n)
        view = view[n:]


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
        policy: SlotPolicy | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self._session = session
        self._ssl = ssl_context
        self._max = max_connections
        self._max_per_ip = max_connections_per_ip
        self._refuse = refuse  # bytes to send when a limit refuses a connection
        self._policy = policy or SlotPolicy()
        self._shed_at = self._policy.shed_threshold(max_connections)
        self._server: asyncio.base_events.Server | None = None
        self._per_ip: dict[str, int] = {}  # connections by address_key
        self._tasks: set[asyncio.Task[None]] = set()
        self._conns: set[Connection] = set()
        self._shedding: set[Connection] = set()  # closing for room, not yet gone
        self._pacer = BulkPacer()
        self.bound: tuple[str, int] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # No ssl= here even on an implicit-TLS port: asyncio would only hand over the
        # connection once its handshake is done, so a client that never finishes one would
        # hold a socket outside every limit. The session task shakes hands itself instead.
        self._server = await loop.create_server(
            lambda: _AcceptedConnection(loop, self),
            host=self.host,
            port=self.port,
            reuse_address=True,
            backlog=512,
        )
        sock = self._server.sockets[0].getsockname()
        self.bound = (str(sock[0]), int(sock[1]))

    @property
    def implicit_tls(self) -> bool:
        return self._ssl is not None

    def _accept(self, conn: Connection) -> None:
        p = self._policy
        conn.address = address_key(conn.peer_ip, p.ipv4_prefix, p.ipv6_prefix)
        conn.handshake_timeout = p.tls_handshake_timeout
        conn.pacer = self._pacer
        if self._per_ip.get(conn.address, 0) >= self._max_per_ip:
            self._refuse_now(conn, "too many connections from the address")
            return
        live = len(self._conns) - len(self._shedding)
        if live >= self._shed_at:
            victim = pick_victim(
                (c for c in self._conns if c not in self._shedding), conn.accepted_at
            )
            if victim is not None:
                self._shed(victim, conn.accepted_at)
            elif live >= self._max:
                self._refuse_now(conn, "too many connections")
                return
        self._per_ip[conn.address] = self._per_ip.get(conn.address, 0) + 1
        self._conns.add(conn)
        task = asyncio.get_running_loop().create_task(self._run(conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refuse_now(self, conn: Connection, reason: str) -> None:
        log_event(log, "connection.refused", listener=self.name, client=conn.peer_ip,
                  reason=reason)
        if self.implicit_tls:
            # RFC 8314 section 3: on an implicit-TLS port nothing may be said before the
            # handshake, and shaking hands just to say no would spend the very CPU and time
            # the limit protects; closing at accept is what the client can retry on.
            conn.abort()
            return
        conn.write(self._refuse(conn.peer_ip))
        conn.close()

    def _shed(self, victim: Connection, now: float) -> None:
        log_event(log, "connection.shed", listener=self.name, client=victim.peer_ip,
                  idle=f"{now - victim.progress_at:.1f}", progress=victim.progress_bytes,
                  reason="server busy")
        self._shedding.add(victim)
        victim.shed()

    async def _run(self, conn: Connection) -> None:
        try:
            if self._ssl is not None:
                await conn.start_tls(self._ssl, implicit=True)
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
            self._shedding.discard(conn)
            left = self._per_ip.get(conn.address, 1) - 1
            if left <= 0:
                self._per_ip.pop(conn.address, None)
            else:
                self._per_ip[conn.address] = left

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
        if self._listener.implicit_tls:
            # The ClientHello must reach the TLS layer that start_tls puts in, not this
            # plaintext buffer (which start_tls discards): read nothing until then.
            cast(asyncio.Transport, transport).pause_reading()
        self._listener._accept(self)
