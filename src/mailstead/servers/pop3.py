"""The POP3 listeners (port 110 with STLS, port 995 with implicit TLS) around the sans-I/O core.

This module never parses: bytes go into ``POP3ServerCore``, its events go to the accounts
service and the mail store, and their answers go back into the core (DESIGN rule 4). What
both listeners share (the per-account lock behind ``[IN-USE]``) lives in one ``Maildrops``
object. Message sizes come from the store, measured once at delivery: a login reads no body.

The lock is ``LocalLock`` (in memory) for a store of one node, and ``LeaseLock`` (a lease in
the store, renewed while the session lives) when several nodes share the store, so a second
session on any node gets ``[IN-USE]`` and the lock of a node that died expires by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mailstead.accounts.login import LoginFailure
from mailstead.accounts.service import AccountService
from mailstead.core.errors import CorruptData, StoreError
from mailstead.core.network import IPNetwork, secure_for_auth
from mailstead.observability.log import log_event, log_event_at
from mailstead.proto.pop3 import replies
from mailstead.proto.pop3.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Credentials,
    MaildropEntry,
    Pop3Settings,
    Retrieve,
    StartTLS,
    Update,
)
from mailstead.proto.pop3.framing import wire_size
from mailstead.proto.pop3.server import POP3ServerCore
from mailstead.servers.listener import Connection, ConnectionLost, Interrupted, Shed
from mailstead.storage.interfaces import MailboxInfo, MessageInfo, SharedStateStore

log = logging.getLogger("mailstead.pop3")

R_READ_FAILED = replies.err("Cannot read this message now, try again later", "SYS/TEMP")
# RFC 3206 section 4: SYS/PERM, a system error a retry will not cure (a damaged body, or a
# damaged database the administrator must repair: `mailstead verify`).
R_STORE_DAMAGED = replies.err("The mail store is damaged; the administrator has been told",
                              "SYS/PERM")
R_DAMAGED = replies.err("This message is damaged on the server; the administrator has been told",
                        "SYS/PERM")
R_APP_PASSWORD = replies.err(
    "Two-factor authentication is on for this account: use an app-specific password", "AUTH"
)
R_AUTH_TEMPORARY = replies.err(
    "Too many failed logins from your address, try again later", "SYS/TEMP"
)
# A lease outlives a node that died by at most this long; sessions renew theirs every third
# of it, so a renewal can fail twice (a database hiccup) before the lock is at risk.
LEASE_TTL = 60.0


class Pop3Store(Protocol):
    """The part of ``Store`` + ``MailStore`` (storage/interfaces.py) that POP3 uses."""

    async def get_mailbox(self, account_id: int, name: str) -> MailboxInfo | None: ...

    async def list_messages_in(self, mailbox_id: int) -> list[MessageInfo]: ...

    async def delete_messages(self, mailbox_id: int, uids: Sequence[int]) -> list[int]: ...

    async def read_blob(self, blob: str) -> bytes: ...


def unique_id(mailbox: MailboxInfo, message: MessageInfo) -> str:
    """The UIDL of a message: its IMAP identity, so a client switching between IMAP and POP3
    does not download everything again. At most 21 characters of digits and "." (RFC 1939
    section 7: 1 to 70 characters in 0x21..0x7E)."""
    return f"{mailbox.uidvalidity}.{message.uid}"


def retr_size(message: MessageInfo) -> int:
    """The octets RETR sends for ``message`` before byte-stuffing, which LIST and STAT report
    (RFC 1939 sections 5 and 11): its CRLF form, plus the CRLF that completes a last line
    lacking one (RFC 1939 section 3). Equal to ``framing.wire_size`` of the stored bytes."""
    return message.wire_size + 2 if message.unterminated else message.wire_size


@dataclass(frozen=True, slots=True)
class OpenMaildrop:
    mailbox: MailboxInfo
    messages: tuple[MessageInfo, ...]
    entries: tuple[MaildropEntry, ...]


class MaildropLock(Protocol):
    """The exclusive-access lock of each account's maildrop (RFC 1939 section 8), held by
    one session (``holder``, unique per session) at a time."""

    async def acquire(self, account_id: int, holder: str) -> bool:
        """True when ``holder`` now holds the lock, False when another session does.
        Raises StoreError when that cannot be known."""

    async def release(self, account_id: int, holder: str) -> None:
        """Gives the lock up if ``holder`` holds it; never raises."""


class LocalLock:
    """The lock in this process's memory: enough when no other node serves the store."""

    def __init__(self) -> None:
        self._holders: dict[int, str] = {}

    async def acquire(self, account_id: int, holder: str) -> bool:
        return self._holders.setdefault(account_id, holder) == holder

    async def release(self, account_id: int, holder: str) -> None:
        if self._holders.get(account_id) == holder:
            del self._holders[account_id]


class LeaseLock:
    """The lock as a store lease ``pop3:<account id>`` shared by every node (issue 10).

    The owner is this process's ``node`` id plus the session's holder. A held lease is
    renewed every ``ttl / 3`` seconds until released, so a node that dies (or loses the
    database) holds it at most ``ttl`` seconds more.
    """

    def __init__(
        self,
        store: SharedStateStore,
        *,
        ttl: float = LEASE_TTL,
        node: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._clock = clock
        # Host and pid for the operator reading the leases table; the random part keeps two
        # processes apart even when containers give them the same host name and pid.
        self.node = node or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._renewers: dict[tuple[int, str], asyncio.Task[None]] = {}

    def _lease(self, account_id: int, holder: str) -> tuple[str, str]:
        return f"pop3:{account_id}", f"{self.node}/{holder}"

    async def acquire(self, account_id: int, holder: str) -> bool:
        name, owner = self._lease(account_id, holder)
        if not await self._store.acquire_lease(name, owner, self._clock(), self._ttl):
            return False
        key = (account_id, holder)
        if key not in self._renewers:
            self._renewers[key] = asyncio.get_running_loop().create_task(
                self._renew(name, owner), name=f"lease {name}")
        return True

    async def _renew(self, name: str, owner: str) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            try:
                held = await self._store.acquire_lease(name, owner, self._clock(), self._ttl)
            except StoreError as exc:
                log_event_at(log, logging.WARNING, "pop3.lock_renew_failed", lease=name,
                             error=str(exc))
                continue
            if not held:  # expired while the store was away, and another session took it
                log_event_at(log, logging.WARNING, "pop3.lock_lost", lease=name)
                return

    async def release(self, account_id: int, holder: str) -> None:
        task = self._renewers.pop((account_id, holder), None)
        if task is not None:
            task.cancel()
            # Wait for it to end: a renewal still in flight must not re-create the lease
            # after the delete below.
            await asyncio.wait([task])
        name, owner = self._lease(account_id, holder)
        try:
            await self._store.release_lease(name, owner)
        except StoreError as exc:  # it expires by itself
            log_event_at(log, logging.WARNING, "pop3.lock_release_failed", lease=name,
                         error=str(exc))


class Maildrops:
    """What the POP3 listeners share: the per-account session lock (RFC 1939 section 8 asks
    for an exclusive-access lock; a second session gets ``[IN-USE]``, RFC 2449 section 8.1.1).
    IMAP sessions never take the lock. ``lock`` defaults to ``LocalLock``; a store shared by
    several nodes needs ``LeaseLock``."""

    def __init__(self, store: Pop3Store, lock: MaildropLock | None = None) -> None:
        self.store = store
        self.lock: MaildropLock = lock if lock is not None else LocalLock()

    async def try_lock(self, account_id: int, holder: str) -> bool:
        """Raises StoreError."""
        return await self.lock.acquire(account_id, holder)

    async def unlock(self, account_id: int, holder: str) -> None:
        await self.lock.release(account_id, holder)

    async def open(self, account_id: int) -> OpenMaildrop:
        """The INBOX snapshot with the sizes RETR will send (RFC 1939 section 11), from the
        message rows alone. Raises StoreError."""
        mailbox = await self.store.get_mailbox(account_id, "INBOX")
        if mailbox is None:
            raise StoreError(f"account {account_id} has no INBOX")
        messages = tuple(await self.store.list_messages_in(mailbox.id))
        entries = tuple(MaildropEntry(unique_id(mailbox, m), retr_size(m)) for m in messages)
        return OpenMaildrop(mailbox, messages, entries)


@dataclass(frozen=True, slots=True)
class POP3ListenerSettings:
    """What differs between the two POP3 ports, plus the shared limits."""

    name: str  # "pop3" | "pop3s"
    hostname: str
    implicit_tls: bool
    max_errors: int
    idle_timeout: float  # RFC 1939 section 3: at least 10 minutes
    auth_failure_delay: float  # seconds before a failed login is answered
    # Networks whose clients may send a password before TLS (core.network.secure_for_auth).
    auth_networks: tuple[IPNetwork, ...] = ()


@dataclass
class _Session:
    """One connection's state as the server sees it (the core owns the protocol state)."""

    client: str
    # Identifies the session as the holder of the maildrop lock.
    holder: str = field(default_factory=lambda: secrets.token_hex(8))
    account_id: int | None = None
    user: str = "-"
    drop: OpenMaildrop | None = None
    retrieved: int = 0
    deleted: int = 0


class POP3Server:
    """Runs POP3 sessions for one listener."""

    def __init__(
        self,
        settings: POP3ListenerSettings,
        maildrops: Maildrops,
        accounts: AccountService,
        tls: ssl.SSLContext | None,
        shutting_down: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._maildrops = maildrops
        self._store = maildrops.store
        self._accounts = accounts
        self._tls = tls
        self._shutting_down = shutting_down

    def refusal(self, _client_ip: str) -> bytes:
        """The greeting of a connection refused by a limit (RFC 2449 section 8.1.2)."""
        return replies.err("Too many connections from your address, try again later",
                           "SYS/TEMP").render()

    async def session(self, conn: Connection) -> None:
        s = self._settings
        core = POP3ServerCore(Pop3Settings(
            hostname=s.hostname,
            tls_active=conn.tls is not None,
            stls_available=self._tls is not None,
            auth_requires_tls=not secure_for_auth(conn.peer_ip, conn.local_ip, s.auth_networks),
            max_errors=s.max_errors,
        ))
        state = _Session(client=conn.peer_ip)
        try:
            await self._run(conn, core, state)
        finally:
            await self._unlock(state)
            if state.drop is not None:
                log_event(log, "pop3.session", listener=s.name, client=state.client,
                          user=state.user, retrieved=state.retrieved, deleted=state.deleted)

    async def _unlock(self, state: _Session) -> None:
        """Releases the session's maildrop lock, if it holds it (once)."""
        account_id, state.account_id = state.account_id, None
        if account_id is not None:
            await self._maildrops.unlock(account_id, state.holder)

    async def _run(self, conn: Connection, core: POP3ServerCore, state: _Session) -> None:
        s = self._settings
        conn.write(core.data_to_send())
        while True:
            event = core.next_event()
            if event is NEED_DATA:
                out = core.data_to_send()
                if out:
                    conn.command_done()  # answered: the next command line starts
                    conn.write(out)
                    await conn.drain()
                if self._shutting_down.is_set():
                    core.shutdown()
                    continue
                try:
                    # A deadline for the whole command line, not moved by each byte.
                    data = await conn.read_command(s.idle_timeout)
                except TimeoutError:
                    core.timeout()  # RFC 1939 section 3: the autologout timer
                    continue
                except Interrupted:
                    continue  # shutting down: the check above closes the session
                except Shed:
                    # RFC 2449 section 8.1.2: SYS/TEMP, a transient condition.
                    conn.write(replies.err("Idle too long, server busy", "SYS/TEMP").render())
                    with contextlib.suppress(ConnectionLost):
                        await conn.drain()
                    return
                core.receive_data(data)
            elif event is PAUSED:
                raise RuntimeError("POP3 core paused without an outstanding decision")
            elif isinstance(event, Credentials):
                await self._login(core, state, event)
                conn.authenticated = state.account_id is not None
            elif isinstance(event, Retrieve):
                await self._retrieve(conn, core, state, event)
            elif isinstance(event, Update):
                # Shielded: a shutdown must not cut the removal in half.
                await asyncio.shield(self._update(core, state, event))
            elif isinstance(event, StartTLS):
                if self._tls is None:  # the core only offers STLS with a context
                    return
                conn.write(core.data_to_send())
                await conn.drain()
                try:
                    await conn.start_tls(self._tls)
                except ConnectionLost:
                    log_event(log, "pop3.tls_failed", client=state.client, listener=s.name)
                    return
                core.tls_started()
            elif isinstance(event, ConnectionClosed):
                # The lock goes before the last reply (QUIT's +OK, after any UPDATE, RFC 1939
                # section 6) does, so a client that reconnects at once is never told
                # [IN-USE]: with a lease, releasing takes a database round trip.
                await self._unlock(state)
                conn.write(core.data_to_send())
                with contextlib.suppress(ConnectionLost):
                    await conn.drain()
                return

    async def _login(self, core: POP3ServerCore, state: _Session, event: Credentials) -> None:
        if event.authzid and event.authzid.lower() != event.username.lower():
            core.login_failed(replies.AUTHZ_FAILED)
            return
        result = await self._accounts.login(
            event.username, event.password, protocol="pop3", client_ip=state.client,
            mechanism=event.mechanism,
        )
        account = result.account
        if not result.ok or account is None:
            log_event(log, "pop3.auth_failed", client=state.client, user=event.username,
                      mechanism=event.mechanism, listener=self._settings.name,
                      reason=result.reason)
            if result.temporary:  # RFC 3206 section 4: SYS/TEMP
                core.login_failed(R_AUTH_TEMPORARY)
                return
            # A pause before the answer slows password guessing; only this session waits.
            await asyncio.sleep(self._settings.auth_failure_delay)
            if result.detail is not None:  # RFC 3206 section 4: still [AUTH]
                core.login_failed(replies.err(result.detail, "AUTH"))
                return
            core.login_failed(R_APP_PASSWORD if result.reason is
                              LoginFailure.APP_PASSWORD_REQUIRED else replies.AUTH_FAILED)
            return
        try:
            locked = await self._maildrops.try_lock(account.id, state.holder)
        except StoreError as exc:
            log_event(log, "pop3.lock_failed", client=state.client, user=account.address,
                      error=str(exc))
            core.login_failed(replies.SYS_TEMP)
            return
        if not locked:
            log_event(log, "pop3.in_use", client=state.client, user=account.address)
            core.login_failed(replies.IN_USE)
            return
        state.account_id = account.id
        try:
            drop = await self._maildrops.open(account.id)
        except StoreError as exc:
            log_event(log, "pop3.open_failed", client=state.client, user=account.address,
                      error=str(exc))
            await self._maildrops.unlock(account.id, state.holder)
            state.account_id = None
            core.login_failed(R_STORE_DAMAGED if isinstance(exc, CorruptData)
                              else replies.SYS_TEMP)
            return
        state.user = account.address
        state.drop = drop
        log_event(log, "pop3.login", client=state.client, user=account.address,
                  mechanism=event.mechanism, listener=self._settings.name,
                  messages=len(drop.messages))
        core.login_ok(drop.entries)

    async def _retrieve(
        self, conn: Connection, core: POP3ServerCore, state: _Session, event: Retrieve
    ) -> None:
        assert state.drop is not None
        info = state.drop.messages[event.number - 1]
        try:
            data = await self._store.read_blob(info.blob)
        except CorruptData as exc:  # counted and logged by the store; the session goes on
            log_event(log, "pop3.message_damaged", client=state.client, user=state.user,
                      uid=info.uid, error=str(exc))
            core.message_unavailable(R_DAMAGED)
            return
        except (StoreError, OSError) as exc:
            log_event(log, "pop3.read_failed", client=state.client, user=state.user,
                      uid=info.uid, error=str(exc))
            core.message_unavailable(R_READ_FAILED)
            return
        listed = state.drop.entries[event.number - 1].size
        if event.top_lines is None and (sent := wire_size(data)) != listed:
            # The stored figure disagrees with the body (a damaged row or blob): the RETR
            # reply still counts what is sent; the log says which message to look at.
            log_event(log, "pop3.size_mismatch", client=state.client, user=state.user,
                      uid=info.uid, listed=listed, sent=sent)
        core.message_content(data)
        if event.top_lines is None:
            state.retrieved += 1
        # Large messages go out before the next command is read (backpressure).
        conn.write(core.data_to_send())
        await conn.drain()

    async def _update(self, core: POP3ServerCore, state: _Session, event: Update) -> None:
        assert state.drop is not None
        uids = [state.drop.messages[n - 1].uid for n in event.numbers]
        try:
            removed = await self._store.delete_messages(state.drop.mailbox.id, uids)
        except StoreError as exc:
            log_event(log, "pop3.update_failed", client=state.client, user=state.user,
                      error=str(exc))
            core.update_done(False)
            return
        state.deleted = len(removed)
        # UIDs another session expunged meanwhile are gone as asked: still a success.
        core.update_done(True)
