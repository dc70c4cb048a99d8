"""Drive a real IMAPSession (framer -> parser -> session) against a real SQLite store.

``run_world(tmp_path, body)`` runs ``async body(world)`` with a fresh store and one account.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from mailstead.accounts.service import AccountService
from mailstead.core.message import summarize
from mailstead.core.secret import Secret
from mailstead.imap.base import Action
from mailstead.imap.context import IMAPContext, IMAPSettings
from mailstead.imap.session import IMAPSession
from mailstead.proto.imap.framing import (
    NEED_DATA,
    CommandFrame,
    CommandFramer,
    LineTooLong,
    LiteralTooBig,
    NeedContinuation,
    RawLine,
)
from mailstead.proto.imap.parser import ParseError, parse_command
from mailstead.storage.interfaces import IncomingMessage, LocalDelivery, Store
from storebackends import open_backend

PASSWORD = "correct horse battery"
USER = "alice@example.test"
FAST = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


class Client:
    """One connection: bytes in, the session's bytes out, as servers/imap.py does it."""

    def __init__(self, ctx: IMAPContext, **settings: Any) -> None:
        opts = {"hostname": "mail.example.test", "tls_active": True, **settings}
        self.session = IMAPSession(ctx, IMAPSettings(**opts), client_ip="192.0.2.1")
        self.framer = CommandFramer(max_literal=self.session.settings.max_message_size)
        self.greeting = self.session.greeting()

    async def send(self, data: bytes) -> bytes:
        self.framer.receive_data(data)
        out: list[bytes] = []
        s = self.session
        while True:
            event = self.framer.next_event()
            if event is NEED_DATA:
                return b"".join(out)
            if isinstance(event, NeedContinuation):
                out.append(b"+ Ready for literal data\r\n")
            elif isinstance(event, LineTooLong):
                out.append(s.parse_error(event.tag, "Command line too long"))
            elif isinstance(event, LiteralTooBig):
                out.append(s.literal_too_big(event.tag, s.settings.max_message_size,
                                             sync=event.sync))
            elif isinstance(event, RawLine):
                if s.action is Action.SASL:
                    out.append(await s.sasl_continue(event.data))
                elif s.action is Action.IDLE:
                    out.append(await s.idle_done(event.data))
            elif isinstance(event, CommandFrame):
                try:
                    cmd = parse_command(event)
                except ParseError as exc:
                    out.append(s.parse_error(exc.tag, exc.text, exc.status, exc.code))
                    continue
                out.append(await s.execute(cmd))
            if s.action in (Action.SASL, Action.IDLE):
                self.framer.expect_line()

    async def cmd(self, line: str | bytes) -> str:
        data = line.encode() if isinstance(line, str) else line
        return (await self.send(data + b"\r\n")).decode("utf-8", "replace")

    async def login(self) -> str:
        return await self.cmd(f'L1 LOGIN {USER} "{PASSWORD}"')


class World:
    def __init__(self, store: Store, accounts: AccountService, account_id: int) -> None:
        self.store = store
        self.accounts = accounts
        self.account_id = account_id
        self.ctx = IMAPContext(store, accounts)

    def client(self, **settings: Any) -> Client:
        return Client(self.ctx, **settings)

    async def deliver(self, subject: str = "Hello", body: str = "Body text\r\n",
                      mailbox: str = "INBOX", account: int | None = None) -> int:
        data = (
            f"From: Bob <bob@example.test>\r\nTo: {USER}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@example.test>\r\n\r\n{body}"
        ).encode()
        summary = summarize(data)
        result = await self.store.accept_message(IncomingMessage(
            data, "Q", "bob@example.test",
            [LocalDelivery(account or self.account_id, mailbox)], [], 1_700_000_000.0,
            summary.envelope, summary.bodystructure,
        ))
        return result.delivered[0][2]


Body = Callable[[World], Awaitable[None]]


def run_world(tmp_path: Path, body: Body, backend: str = "sqlite") -> None:
    """Runs ``body`` with a fresh store of ``backend`` holding the test user."""
    async def main() -> None:
        store = await open_backend(backend, tmp_path)
        try:
            accounts = AccountService(store, FAST)
            await accounts.add_domain("example.test")
            account = await accounts.add_user(USER, Secret(PASSWORD))
            await body(World(store, accounts, account.id))
        finally:
            await store.close()

    asyncio.run(main())
