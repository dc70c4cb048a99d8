"""Outbound SMTP connections: one socket driven through the client core, and the cache of idle
sessions kept for the next message to the same destination (connection reuse).

Reuse follows Postfix's connection cache (``smtp_connection_cache_on_demand``): a session
whose transaction ended cleanly waits a few seconds for the next message to the same target;
before it carries another one, RSET (RFC 5321 section 4.1.1.5) checks it is still alive, so a
server that dropped it while idle costs a new connection, never a failed delivery. A session
is retired after a number of uses or an age, so one connection never carries a destination's
mail for ever (Postfix ``smtp_connection_reuse_count_limit`` / ``_time_limit``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from mailstead.proto.smtp.client import NEED_DATA, ClientEvent, Closed, Extensions, SMTPClientCore

READ_SIZE = 65536
# Postfix smtp_rset_timeout: a reused session answers RSET within 20 s or is dropped.
RSET_TIMEOUT = 20.0
# A session is closed after this many transactions or seconds since it was opened
# (Postfix smtp_connection_reuse_time_limit = 300 s).
MAX_USES = 100
MAX_AGE = 300.0


class Connection:
    """A connected socket driven through the client core, with a timeout on every wait.
    ``extensions`` and ``tls`` describe the session once it is ready (EHLO, STARTTLS done);
    ``uses`` counts its transactions and ``opened`` is when it was made (monotonic)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 core: SMTPClientCore, timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.core = core
        self.timeout = timeout
        self.extensions = Extensions()
        self.tls: str | None = None
        self.uses = 0
        self.opened = time.monotonic()

    async def flush(self, timeout: float | None = None) -> None:
        data = self.core.data_to_send()
        if data:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), timeout or self.timeout)

    async def event(self, timeout: float | None = None) -> ClientEvent:
        """The next event, reading as needed; connection trouble becomes ``Closed``."""
        try:
            await self.flush(timeout)
            while True:
                event = self.core.next_event()
                if event is not NEED_DATA:
                    return event
                chunk = await asyncio.wait_for(self.reader.read(READ_SIZE),
                                               timeout or self.timeout)
                self.core.receive_data(chunk)
                await self.flush(timeout)
        except TimeoutError:
            return Closed("timed out waiting for the server")
        except (OSError, ssl.SSLError) as exc:
            return Closed(f"connection error: {exc}")

    async def reset(self, timeout: float = RSET_TIMEOUT) -> bool:
        """RSET and wait for its 250; False when the session is gone (closed, refused,
        silent, or it sent something unexpected while idle)."""
        if not self.core.idle or self.core.next_event() is not NEED_DATA:
            return False
        self.core.reset()
        try:
            await self.flush(timeout)
            while not self.core.idle:
                if self.core.closed:
                    return False
                chunk = await asyncio.wait_for(self.reader.read(READ_SIZE), timeout)
                self.core.receive_data(chunk)
        except (TimeoutError, OSError, ssl.SSLError):
            return False
        return self.core.next_event() is NEED_DATA

    def close(self) -> None:
        self.writer.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)

    async def shutdown(self, timeout: float = 5.0) -> None:
        """QUIT politely (RFC 5321 section 4.1.1.10), then close whatever the answer."""
        if not self.core.closed:
            self.core.quit()
            await self.event(timeout)
        self.close()
        await self.wait_closed()


@dataclass(slots=True)
class _Idle:
    conn: Connection
    since: float


@dataclass(slots=True)
class SessionCache:
    """Idle sessions by destination key (see the module docstring). ``idle_time`` is how long
    a session waits for another message; ``max_idle`` bounds the idle sessions in total."""

    idle_time: float
    max_idle: int = 100
    max_uses: int = MAX_USES
    max_age: float = MAX_AGE
    clock: Callable[[], float] = time.monotonic
    _idle: dict[Hashable, list[_Idle]] = field(default_factory=dict)
    _count: int = 0
    _sweeper: asyncio.TimerHandle | None = None
    _closing: set[asyncio.Task[None]] = field(default_factory=set)

    def __len__(self) -> int:
        return self._count

    def take(self, key: Hashable) -> Connection | None:
        """The most recently used idle session for ``key`` still within its idle time."""
        entries = self._idle.get(key)
        now = self.clock()
        while entries:
            entry = entries.pop()
            self._count -= 1
            if now - entry.since < self.idle_time:
                if not entries:
                    del self._idle[key]
                return entry.conn
            self._retire(entry.conn)
        self._idle.pop(key, None)
        return None

    def put(self, key: Hashable, conn: Connection) -> bool:
        """Keeps ``conn`` for the next message to ``key``; False (the caller ends it) when
        it is worn out, not idle, or the cache is full."""
        now = self.clock()
        if (self.idle_time <= 0 or self._count >= self.max_idle or not conn.core.idle
                or conn.uses >= self.max_uses or now - conn.opened >= self.max_age):
            return False
        self._idle.setdefault(key, []).append(_Idle(conn, now))
        self._count += 1
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.idle_time, self._sweep)
        return True

    def _sweep(self) -> None:
        """Ends the sessions idle for ``idle_time``; runs while any session is idle."""
        self._sweeper = None
        now = self.clock()
        for key in list(self._idle):
            keep = [e for e in self._idle[key] if now - e.since < self.idle_time]
            for entry in self._idle[key]:
                if now - entry.since >= self.idle_time:
                    self._retire(entry.conn)
                    self._count -= 1
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._count:
            oldest = min(e.since for entries in self._idle.values() for e in entries)
            delay = max(0.05, oldest + self.idle_time - now)
            self._sweeper = asyncio.get_running_loop().call_later(delay, self._sweep)

    def _retire(self, conn: Connection) -> None:
        task = asyncio.get_running_loop().create_task(conn.shutdown())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Ends every idle session (QUIT) and waits for them; the cache stays usable."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for entries in self._idle.values():
            for entry in entries:
                self._retire(entry.conn)
        self._idle.clear()
        self._count = 0
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
