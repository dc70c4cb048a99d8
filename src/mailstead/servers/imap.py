"""The IMAP listeners (port 143 with STARTTLS, 993 with implicit TLS): sockets, TLS,
COMPRESS=DEFLATE, timeouts and IDLE around the framer, the parser and the session.

This module never parses (DESIGN rule 4): bytes go into ``CommandFramer``, frames into
``parse_command``, commands into ``IMAPSession``, and its bytes back to the client. The
session tells the server when to upgrade to TLS, start compressing, read a SASL line, idle,
or close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import zlib
from dataclasses import dataclass

from mailstead.core.network import IPNetwork, secure_for_auth
from mailstead.imap.base import Action, State
from mailstead.imap.context import IMAPContext, IMAPSettings
from mailstead.imap.session import IMAPSession
from mailstead.imap.spool import LiteralSpool
from mailstead.observability.log import log_event
from mailstead.proto.imap import response
from mailstead.proto.imap.ast import AppendArgs, Command, ReplaceArgs
from mailstead.proto.imap.framing import (
    NEED_DATA,
    CommandFrame,
    CommandFramer,
    Event,
    LineTooLong,
    LiteralChunk,
    LiteralTooBig,
    NeedContinuation,
    RawLine,
)
from mailstead.proto.imap.parser import ParseError, parse_command
from mailstead.servers.listener import Connection, ConnectionLost, Interrupted, Shed
from mailstead.servers.throttle import TokenBucket

log = logging.getLogger("mailstead.imap")

# RFC 9051 section 4: no line limit is set by the protocol; 64 KiB holds any real command
# (a UID set of a 50,000-message mailbox included) without letting a client exhaust memory.
MAX_LINE = 64 * 1024
# Decompress at most this much per read, so a small DEFLATE bomb cannot balloon in memory
# (the framer then applies its own line and literal limits).
INFLATE_CHUNK = 256 * 1024
# The decompression ratio is judged once this much was inflated: a session's first commands
# (short, repetitive) may compress well without meaning anything.
RATIO_AFTER = INFLATE_CHUNK
# Before authentication a literal can only be a user name or a password (LOGIN; SASL
# responses are lines): 4096 octets, the bound RFC 9051 section 4.3 sets for non-synchronising
# literals (LITERAL-, RFC 7888 section 5), is plenty, and an unauthenticated client cannot make
# the server hold a message-sized literal.
PREAUTH_MAX_LITERAL = 4096
# Literals over this size (APPEND messages) go to a temporary file while they arrive.
SPOOL_AT = 64 * 1024
# One APPEND (MULTIAPPEND, CATENATE) may send literals of this many times APPENDLIMIT in all.
APPEND_SPOOL_FACTOR = 8


@dataclass(frozen=True, slots=True)
class IMAPListenerSettings:
    """What differs between the two IMAP ports, plus the shared limits."""

    name: str  # "imap" | "imaps"
    hostname: str
    implicit_tls: bool
    max_message_size: int  # APPENDLIMIT and the largest literal
    max_bad_commands: int
    max_connections_per_account: int
    max_mailboxes_per_account: int = 10000
    # RFC 9051 section 5.4: the autologout timer is at least 30 minutes; the same bound holds
    # in IDLE, which clients renew every 29 minutes (RFC 2177 section 3).
    idle_timeout: float = 1800.0
    keepalive: float = 120.0  # "* OK Still here" while idling, for NATs and firewalls
    command_rate: float = 500.0  # commands a second per session, sustained (0: no cap)
    command_burst: int = 2000  # ... and saved up for a burst
    compress_max_ratio: float = 200.0  # inflated : compressed octets over a session
    # Networks whose clients may send a password before TLS (core.network.secure_for_auth).
    auth_networks: tuple[IPNetwork, ...] = ()
    progress_interval: float = 5.0  # seconds between INPROGRESS notices (RFC 9585)


class CompressionBomb(Exception):
    """The client's DEFLATE stream inflates beyond the allowed ratio."""


class _Stream:
    """The connection as the IMAP loop sees it: plain, or raw DEFLATE after COMPRESS."""

    def __init__(self, conn: Connection, max_ratio: float = 0.0) -> None:
        self.conn = conn
        self._inflate: zlib._Decompress | None = None
        self._deflate: zlib._Compress | None = None
        self._tail = b""
        self._max_ratio = max_ratio  # 0: no cap
        self.compressed_in = 0  # octets of DEFLATE input consumed
        self.inflated_out = 0  # octets they inflated to

    @property
    def compressed(self) -> bool:
        return self._deflate is not None

    def start_compression(self) -> None:
        # RFC 4978 section 3: raw DEFLATE (RFC 1951) without zlib headers in both directions.
        self._inflate = zlib.decompressobj(wbits=-15)
        self._deflate = zlib.compressobj(wbits=-15)

    def inflate(self, data: bytes) -> bytes:
        """Decompress input (bounded per call; the rest stays for the next ``read``).
        Raises CompressionBomb when the session's ratio goes over the cap."""
        if self._inflate is None:
            return data
        fed = self._tail + data
        out = self._inflate.decompress(fed, INFLATE_CHUNK)
        self._tail = self._inflate.unconsumed_tail
        self.compressed_in += len(fed) - len(self._tail)
        self.inflated_out += len(out)
        # DEFLATE reaches about 1032:1; real IMAP traffic (commands, mail) stays far below
        # 100:1, so a session beyond the cap is feeding the server a decompression bomb.
        if (self._max_ratio > 0 and self.inflated_out >= RATIO_AFTER
                and self.inflated_out > self._max_ratio * max(1, self.compressed_in)):
            raise CompressionBomb
        return out

    async def read(self) -> bytes:
        """Some bytes of input, b"" at end of input. Raises zlib.error on corrupt DEFLATE."""
        while True:
            if self._tail:
                out = self.inflate(b"")
                if out:
                    return out
            data = await self.conn.read()
            if not data:
                return b""
            out = self.inflate(data)
            if out or self._inflate is None:
                return out

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._deflate is not None:
            # RFC 4978 section 4: flush after each batch of responses so the client can act.
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self.conn.write(data)

    async def send(self, data: bytes) -> None:
        self.write(data)
        await self.conn.drain()


class _Closed(Exception):
    """The session is over (LOGOUT, BYE, timeout, end of input)."""


class _NotifyPusher:
    """Waits on the session's change watch and writes ``notify_wakeup`` output."""

    def __init__(self, sess: IMAPSession, stream: _Stream) -> None:
        self.sess = sess
        self.stream = stream
        self.inflight: asyncio.Future[bytes] | None = None

    async def run(self) -> None:
        watch = self.sess.watch
        if watch is None:
            return
        while True:
            if not await watch.wait(None):
                return  # closed
            self.inflight = asyncio.ensure_future(self.sess.notify_wakeup())
            data = await asyncio.shield(self.inflight)
            self.inflight = None
            self.stream.write(data)
            with contextlib.suppress(ConnectionLost):
                await self.stream.conn.drain()

    async def stop(self, task: asyncio.Task[None]) -> None:
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None and self.inflight is None:
            log.error("NOTIFY push failed: %s", task.exception())
        inflight, self.inflight = self.inflight, None
        if inflight is not None:
            try:
                data = await inflight
            except Exception as exc:  # logged; the session goes on with its next command
                log.error("NOTIFY push failed: %s", exc)
            else:
                self.stream.write(data)


class IMAPServer:
    """Runs IMAP sessions for one listener."""

    def __init__(
        self,
        settings: IMAPListenerSettings,
        ctx: IMAPContext,
        tls: ssl.SSLContext | None,
        shutting_down: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._ctx = ctx
        self._tls = tls
        self._shutting_down = shutting_down

    def refusal(self, _client_ip: str) -> bytes:
        """A connection refused by the per-IP or total limit (RFC 9051 section 7.1.5 BYE)."""
        return b"* BYE [UNAVAILABLE] Too many connections from your address, try later\r\n"

    async def session(self, conn: Connection) -> None:
        s = self._settings
        sess = IMAPSession(
            self._ctx,
            IMAPSettings(
                hostname=s.hostname,
                tls_active=conn.tls is not None,
                starttls_available=self._tls is not None and not s.implicit_tls,
                plaintext_auth=secure_for_auth(conn.peer_ip, conn.local_ip, s.auth_networks),
                max_message_size=s.max_message_size,
                max_bad_commands=s.max_bad_commands,
                max_connections_per_account=s.max_connections_per_account,
                max_mailboxes_per_account=s.max_mailboxes_per_account,
                progress_interval=s.progress_interval,
            ),
            client_ip=conn.peer_ip,
        )
        stream = _Stream(conn, s.compress_max_ratio)
        sess.writer = stream.send  # long responses stream out while they are produced
        framer = CommandFramer(
            max_line=MAX_LINE, max_literal=PREAUTH_MAX_LITERAL, spool_at=SPOOL_AT
        )
        try:
            await stream.send(sess.greeting())
            await self._loop(sess, stream, framer)
        except (_Closed, ConnectionLost, zlib.error):
            pass
        except CompressionBomb:
            log_event(log, "imap.compression_bomb", client=conn.peer_ip,
                      compressed=stream.compressed_in, inflated=stream.inflated_out)
            with contextlib.suppress(ConnectionLost):
                await stream.send(b"* BYE Compressed input inflates too much\r\n")
        finally:
            await sess.close()
            with contextlib.suppress(ConnectionLost):
                await conn.drain()

    # ------------------------------------------------------------------ input

    async def _next(self, sess: IMAPSession, stream: _Stream, framer: CommandFramer) -> Event:
        """The next framer event, reading (with the autologout timer) as needed."""
        while True:
            event = framer.next_event()
            if event is not NEED_DATA:
                assert not isinstance(event, type(NEED_DATA))
                stream.conn.command_done()  # the next line gets a fresh deadline
                return event
            await stream.conn.drain()
            if self._shutting_down.is_set() and not framer.in_command:
                await stream.send(sess.shutdown())
                raise _Closed
            conn = stream.conn
            timeout = self._settings.idle_timeout
            try:
                # A command line must be complete by one deadline (a byte every few seconds
                # does not move it); literal octets get the timeout as inactivity time.
                if framer.in_command:
                    async with asyncio.timeout(timeout):
                        data = await stream.read()
                    conn.command_done()
                    await conn.pace(len(data))
                else:
                    async with asyncio.timeout_at(conn.command_deadline(timeout)):
                        data = await stream.read()
            except TimeoutError:
                # RFC 9051 section 5.4: the autologout timer fired.
                await stream.send(sess.timeout())
                raise _Closed from None
            except Interrupted:
                continue  # shutting down: the check above says goodbye when idle
            except Shed:
                # RFC 9051 section 7.1.5: BYE before the server closes the connection.
                await stream.send(b"* BYE [UNAVAILABLE] Idle too long, server busy\r\n")
                raise _Closed from None
            if not data:
                raise _Closed
            framer.receive_data(data)

    def _literal_limit(self, sess: IMAPSession) -> int:
        """The literal limit for the next command: before authentication only small literals
        are taken (RFC 7888 section 4 and RFC 9051 section 4.3 let a server refuse them)."""
        if sess.state is State.NOT_AUTHENTICATED:
            return PREAUTH_MAX_LITERAL
        return self._settings.max_message_size

    async def _loop(self, sess: IMAPSession, stream: _Stream, framer: CommandFramer) -> None:
        s = self._settings
        loop = asyncio.get_running_loop()
        bucket = TokenBucket(s.command_rate, s.command_burst, loop.time())
        spooled: list[LiteralSpool] = []  # literals of the command being framed, on disk
        current: LiteralSpool | None = None
        try:
            while sess.state is not State.LOGOUT:
                framer.max_literal = self._literal_limit(sess)
                # RFC 3502 MULTIAPPEND / RFC 4469 CATENATE: several spooled literals in one
                # command, bounded in all (they go to disk, and are read back to commit).
                framer.max_spooled = (
                    None if sess.state is State.NOT_AUTHENTICATED
                    else APPEND_SPOOL_FACTOR * self._settings.max_message_size
                )
                if sess.notifying and not framer.in_command:
                    event = await self._next_notifying(sess, stream, framer)
                else:
                    event = await self._next(sess, stream, framer)
                if isinstance(event, LiteralChunk):
                    if current is None:
                        current = LiteralSpool(self._ctx.spool_dir)
                        spooled.append(current)
                    current.write(event.data)
                    if event.end:
                        current = None
                    continue
                if isinstance(event, NeedContinuation):
                    # RFC 9051 section 4.3: the go-ahead for a synchronising literal.
                    stream.write(response.continuation("Ready for literal data"))
                    continue
                # One token per command (or refused line): a client pipelining commands
                # faster than the cap is made to wait, never the other sessions.
                wait = bucket.take(loop.time())
                if wait > 0:
                    await stream.conn.drain()
                    await asyncio.sleep(wait)
                if isinstance(event, LineTooLong):
                    stream.write(sess.parse_error(event.tag, "Command line too long"))
                elif isinstance(event, LiteralTooBig):
                    # RFC 7889 section 4: a synchronising literal is refused before the
                    # client sends the octets; a LITERAL+ one is on its way, so the session
                    # closes.
                    stream.write(sess.literal_too_big(
                        event.tag, framer.max_literal, sync=event.sync
                    ))
                elif isinstance(event, RawLine):
                    stream.write(sess.parse_error(None, "Unexpected line"))
                elif isinstance(event, CommandFrame):
                    try:
                        cmd = parse_command(event)
                    except ParseError as exc:
                        stream.write(sess.parse_error(exc.tag, exc.text, exc.status, exc.code))
                    else:
                        stream.write(await self._execute(sess, cmd, spooled))
                        stream.conn.authenticated = sess.state is not State.NOT_AUTHENTICATED
                        await self._act(sess, stream, framer)
                    for spool in spooled:
                        spool.close()
                    spooled.clear()
                if sess.action is Action.CLOSE:
                    break
                # Yield to the other sessions after every command, even when the next one
                # is already buffered (pipelined, or inflated from a COMPRESS stream).
                await asyncio.sleep(0)
            await stream.conn.drain()
        finally:
            for spool in spooled:
                spool.close()

    async def _execute(
        self, sess: IMAPSession, cmd: Command, spooled: list[LiteralSpool]
    ) -> bytes:
        """Runs a command, handing APPEND and REPLACE their spooled literals in the order
        they arrived (the parser lets no other command have a spooled literal)."""
        if isinstance(cmd.args, AppendArgs | ReplaceArgs):
            sess.spools = list(spooled)
        try:
            return await sess.execute(cmd)
        finally:
            sess.spools = []

    # ------------------------------------------------------------------ actions

    async def _act(self, sess: IMAPSession, stream: _Stream, framer: CommandFramer) -> None:
        while sess.action is Action.SASL:
            framer.expect_line()
            event = await self._next(sess, stream, framer)
            line = event.data if isinstance(event, RawLine) else b"*"
            stream.write(await sess.sasl_continue(line))
        if sess.action is Action.STARTTLS:
            await stream.conn.drain()
            # RFC 9051 section 6.2.1 (and RFC 3207 section 5): input pipelined after
            # STARTTLS came in plaintext and is discarded; start_tls drops its own buffer.
            framer.take_buffered()
            assert self._tls is not None
            try:
                await stream.conn.start_tls(self._tls)
            except ConnectionLost:
                log_event(log, "imap.tls_failed", client=stream.conn.peer_ip)
                raise _Closed from None
            sess.tls_started()
        elif sess.action is Action.COMPRESS:
            await stream.conn.drain()
            pending = framer.take_buffered()
            stream.start_compression()
            # Bytes after the COMPRESS command were already compressed (RFC 4978 section 3).
            framer.receive_data(stream.inflate(pending))
        elif sess.action is Action.IDLE:
            await self._idle(sess, stream, framer)

    async def _idle(self, sess: IMAPSession, stream: _Stream, framer: CommandFramer) -> None:
        """Wait for DONE while pushing mailbox changes as they happen (RFC 2177)."""
        await stream.conn.drain()
        watcher = asyncio.get_running_loop().create_task(self._push(sess, stream))
        stream.conn.idling = True  # a legitimate long wait: never shed for room
        try:
            framer.expect_line()
            event = await self._next(sess, stream, framer)
        finally:
            stream.conn.idling = False
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if isinstance(event, RawLine):
            stream.write(await sess.idle_done(event.data))
        elif isinstance(event, LineTooLong):
            stream.write(sess.parse_error(sess.idle_tag or None, "Line too long in IDLE"))

    async def _next_notifying(
        self, sess: IMAPSession, stream: _Stream, framer: CommandFramer
    ) -> Event:
        """``_next`` while pushing what NOTIFY asks for as changes happen (RFC 5465 section
        3: between commands, not only in IDLE). A wake-up that has started reading the store
        when the next command arrives is finished (and its lines sent) before the command
        runs, so the session never sees a half-applied change."""
        pusher = _NotifyPusher(sess, stream)
        task = asyncio.get_running_loop().create_task(pusher.run())
        try:
            return await self._next(sess, stream, framer)
        finally:
            await pusher.stop(task)

    async def _push(self, sess: IMAPSession, stream: _Stream) -> None:
        watch = sess.watch
        if watch is None:
            return
        while True:
            changed = await watch.wait(self._settings.keepalive)
            if changed:
                stream.write(await sess.idle_wakeup())
            else:
                # RFC 9051 section 5.4: untagged responses keep the client from timing out.
                stream.write(b"* OK Still here\r\n")
            with contextlib.suppress(ConnectionLost):
                await stream.conn.drain()
