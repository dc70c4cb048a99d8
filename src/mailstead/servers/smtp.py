"""The SMTP listeners (port 25, 587 and 465): sockets and TLS around the sans-I/O core.

This module never parses: bytes go into ``SMTPServerCore``, its events go to the accounts
and delivery services, and their replies go back into the core (DESIGN rule 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass

from mailstead.accounts.login import LoginFailure
from mailstead.accounts.service import AccountService
from mailstead.core.network import IPNetwork, secure_for_auth
from mailstead.core.reply import Reply
from mailstead.delivery.service import DeliveryService, SessionInfo, Transaction
from mailstead.observability.log import log_event
from mailstead.proto.smtp.events import (
    NEED_DATA,
    PAUSED,
    AuthCredentials,
    ConnectionClosed,
    Helo,
    MailFrom,
    MessageData,
    RcptTo,
    SessionSettings,
    StartTLS,
    TransactionReset,
)
from mailstead.proto.smtp.server import SMTPServerCore
from mailstead.servers.listener import Connection, ConnectionLost, Interrupted, Shed
from mailstead.servers.spool import R_NO_ROOM, Spool, SpoolLimits

log = logging.getLogger("mailstead.smtp")

R_AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
R_AUTHZ_FAILED = Reply(535, "5.7.8", "Authorization identity must match the user name")
R_APP_PASSWORD = Reply(
    535, "5.7.8", "Two-factor authentication is on for this account: use an app-specific "
    "password, not the account password"
)
# RFC 4954 section 6: 454 4.7.0 "Temporary authentication failure".
R_AUTH_TEMPORARY = Reply(454, "4.7.0", "Temporary authentication failure: too many failed "
                         "logins from your address, try again later")


@dataclass(frozen=True, slots=True)
class SMTPListenerSettings:
    """What differs between the three SMTP ports, plus the shared limits."""

    name: str  # "smtp" | "submission" | "submissions"
    hostname: str
    submission: bool
    implicit_tls: bool
    max_message_size: int
    max_recipients: int
    max_errors: int
    idle_timeout: float
    # Networks whose clients may send a password before TLS (core.network.secure_for_auth).
    auth_networks: tuple[IPNetwork, ...] = ()


class SMTPServer:
    """Runs SMTP sessions for one listener."""

    def __init__(
        self,
        settings: SMTPListenerSettings,
        delivery: DeliveryService,
        accounts: AccountService,
        tls: ssl.SSLContext | None,
        shutting_down: asyncio.Event,
        spool: SpoolLimits | None = None,
    ) -> None:
        """``spool``: where message content waits for the end of data, shared by every
        listener; None keeps each message in memory (tests of this module only)."""
        self._spool = spool
        self._settings = settings
        self._delivery = delivery
        self._accounts = accounts
        self._tls = tls
        self._shutting_down = shutting_down

    def shed_reply(self) -> bytes:
        """The goodbye of a slow session closed to make room (RFC 5321 section 3.8: 421)."""
        return Reply(421, "4.4.2", f"{self._settings.hostname} Idle too long, server busy, "
                     "closing connection").render()

    def refusal(self, _client_ip: str) -> bytes:
        """The reply to a connection refused by a limit (RFC 5321 section 3.1: 421 greeting)."""
        return Reply(421, "4.7.0", f"{self._settings.hostname} Too many connections "
                     "from your address, try again later").render()

    async def session(self, conn: Connection) -> None:
        spool = Spool(self._spool) if self._spool is not None else None
        try:
            await self._session(conn, spool)
        finally:
            # Whatever ended the session (QUIT, timeout, a lost connection, a crash), its
            # unfinished message is forgotten and its temp file removed.
            if spool is not None:
                spool.close()

    async def _session(self, conn: Connection, spool: Spool | None) -> None:
        s = self._settings
        core = SMTPServerCore(SessionSettings(
            hostname=s.hostname,
            submission=s.submission,
            tls_active=conn.tls is not None,
            starttls_available=self._tls is not None,
            auth_requires_tls=not secure_for_auth(conn.peer_ip, conn.local_ip, s.auth_networks),
            max_message_size=s.max_message_size,
            max_recipients=s.max_recipients,
            max_errors=s.max_errors,
        ), spool)
        info = SessionInfo(client_ip=conn.peer_ip, submission=s.submission,
                           tls=conn.tls.describe() if conn.tls else None)
        txn: Transaction | None = None
        conn.write(core.data_to_send())
        while True:
            event = core.next_event()
            if event is NEED_DATA:
                out = core.data_to_send()
                if out:
                    conn.command_done()  # a reply went out: the next command line starts
                    conn.write(out)
                    await conn.drain()
                if self._shutting_down.is_set() and txn is None:
                    core.shutdown()
                    continue
                try:
                    # RFC 5321 section 4.5.3.2.7: the server waits at least 5 minutes for the
                    # next command, a deadline for the whole line (a byte every few seconds
                    # does not move it); message content gets the same as inactivity time.
                    if core.in_content:
                        data = await conn.read_content(s.idle_timeout)
                    else:
                        data = await conn.read_command(s.idle_timeout)
                except TimeoutError:
                    # RFC 5321 section 4.5.3.2: the server times out an idle client.
                    core.timeout()
                    continue
                except Interrupted:
                    continue  # shutting down: the check above says goodbye when idle
                except Shed:
                    conn.write(self.shed_reply())
                    with contextlib.suppress(ConnectionLost):
                        await conn.drain()
                    return
                core.receive_data(data)
            elif event is PAUSED:
                raise RuntimeError("SMTP core paused without an outstanding decision")
            elif isinstance(event, Helo):
                info.helo, info.esmtp = event.name, event.esmtp
            elif isinstance(event, MailFrom):
                reply = await self._delivery.check_sender(info, event.sender)
                if (reply.is_positive and event.size is not None and self._spool is not None
                        and not self._spool.room_for(event.size)):
                    # RFC 1870 section 6.2: 452 when the declared size does not fit now.
                    reply = R_NO_ROOM
                if reply.is_positive:
                    txn = Transaction(sender=event.sender, smtputf8=event.smtputf8,
                                      size=event.size, dsn=event.dsn,
                                      requiretls=event.requiretls)
                core.respond(reply)
            elif isinstance(event, RcptTo):
                if txn is None:  # the core guarantees MAIL came first; stay safe anyway
                    core.respond(Reply(503, "5.5.1", "Need MAIL command first"))
                    continue
                core.respond(await self._delivery.check_recipient(info, txn, event.recipient,
                                                                  event.dsn))
            elif isinstance(event, MessageData):
                await self._message(core, info, txn, event, spool)
                txn = None
            elif isinstance(event, TransactionReset):
                if txn is not None and isinstance(event.reply, Reply):
                    self._log(info, txn, None, event.reply, 0)
                txn = None
            elif isinstance(event, AuthCredentials):
                await self._auth(core, info, event)
                conn.authenticated = info.account is not None
            elif isinstance(event, StartTLS):
                if self._tls is None:  # the core only offers it with a context; belt and braces
                    return
                conn.write(core.data_to_send())
                await conn.drain()
                try:
                    await conn.start_tls(self._tls)
                except ConnectionLost:
                    log_event(log, "smtp.tls_failed", client=conn.peer_ip, listener=s.name)
                    return
                core.tls_started()
                txn = None
                info = SessionInfo(client_ip=conn.peer_ip, submission=s.submission,
                                   tls=conn.tls.describe() if conn.tls else None)
            elif isinstance(event, ConnectionClosed):
                conn.write(core.data_to_send())
                with contextlib.suppress(ConnectionLost):
                    await conn.drain()
                return

    async def _message(
        self, core: SMTPServerCore, info: SessionInfo, txn: Transaction | None,
        event: MessageData, spool: Spool | None,
    ) -> None:
        if txn is None:
            core.respond(Reply(503, "5.5.1", "No transaction in progress"))
            return
        if spool is None or self._spool is None:
            outcome = await asyncio.shield(self._delivery.deliver(info, txn, event.data))
        else:
            # The delivery takes the message as bytes: a spooled one is read back into
            # memory, so how many bytes are read back at once is bounded by the budget.
            async with self._spool.commits.hold(spool.size if spool.on_disk else 0):
                data = await spool.read()
                # Shielded: a shutdown must not cut a commit in half; the client gets
                # its answer.
                outcome = await asyncio.shield(self._delivery.deliver(info, txn, data))
                del data
        core.respond(outcome.reply)
        self._log(info, txn, outcome.queue_id, outcome.reply, outcome.size)

    async def _auth(self, core: SMTPServerCore, info: SessionInfo, event: AuthCredentials) -> None:
        if event.authzid and event.authzid.lower() != event.username.lower():
            core.auth_result(False, R_AUTHZ_FAILED)
            return
        result = await self._accounts.login(
            event.username, event.password, protocol="smtp", client_ip=info.client_ip,
            mechanism=event.mechanism,
        )
        if not result.ok or result.account is None:
            log_event(log, "smtp.auth_failed", client=info.client_ip, user=event.username,
                      mechanism=event.mechanism, reason=result.reason)
            # RFC 4954 section 6: 535 5.7.8 for every refused credential, with our words.
            detail = Reply(535, "5.7.8", result.detail) if result.detail else None
            core.auth_result(False, R_AUTH_TEMPORARY if result.temporary else
                             R_APP_PASSWORD if result.reason is LoginFailure.APP_PASSWORD_REQUIRED
                             else detail or R_AUTH_FAILED)
            return
        info.account = result.account
        core.auth_result(True)

    def _log(
        self, info: SessionInfo, txn: Transaction, queue_id: str | None, reply: Reply, size: int
    ) -> None:
        """One structured line per transaction (the issue's log requirement)."""
        log_event(
            log,
            "smtp.transaction",
            queue_id=queue_id or "-",
            listener=self._settings.name,
            client=info.client_ip,
            helo=info.helo or "-",
            tls=info.tls or "no",
            auth=info.account.address if info.account else "-",
            sender=str(txn.sender) if txn.sender else "<>",
            rcpts=",".join(txn.rcpts),
            size=size,
            result=str(reply),
        )
