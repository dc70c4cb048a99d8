"""Drives POP3ServerCore like a server would, with scripted answers (cf. h11's
tests/helpers.py): feed bytes, collect events, answer decisions, return the bytes written."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TypeVar

from mailstead.proto.pop3 import replies
from mailstead.proto.pop3.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Credentials,
    Event,
    MaildropEntry,
    Pop3Settings,
    Retrieve,
    Sentinel,
    StartTLS,
    Update,
)
from mailstead.proto.pop3.framing import wire_size
from mailstead.proto.pop3.server import POP3ServerCore

E = TypeVar("E")

HOST = "mail.example.test"
GREETING = b"+OK mail.example.test Mailstead POP3 server ready\r\n"
USER = "alice@example.test"
PASSWORD = "right password"

MESSAGES: tuple[bytes, ...] = (
    b"Subject: one\r\n\r\nhello\r\n",
    b"Subject: two\r\nX: y\r\n\r\n.dot line\r\nline 2\r\n..two\r\n.\r\nlast\r\n",
    b"Subject: three\n\nbare LF body\nno final newline",
)


def entries(messages: tuple[bytes, ...] = MESSAGES) -> list[MaildropEntry]:
    return [MaildropEntry(f"7.{n}", wire_size(m)) for n, m in enumerate(messages, start=1)]


def settings(**overrides: object) -> Pop3Settings:
    base: dict[str, object] = {"hostname": HOST, "tls_active": True, "stls_available": True}
    base.update(overrides)
    return Pop3Settings(**base)  # type: ignore[arg-type]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class Driver:
    """A core plus a fake maildrop; ``run`` answers decisions the way the server does."""

    core: POP3ServerCore
    messages: tuple[bytes, ...] = MESSAGES
    events: list[Event] = field(default_factory=list)
    tls_upgrade: bool = True  # answer StartTLS with tls_started()
    in_use: bool = False  # answer good credentials with [IN-USE]
    update_ok: bool = True

    @classmethod
    def new(cls, **overrides: object) -> Driver:
        driver = cls(POP3ServerCore(settings(**overrides)))
        greeting = driver.core.data_to_send()
        assert greeting == GREETING, greeting
        return driver

    def run(self, data: bytes) -> bytes:
        """Feed ``data`` (b"" for end of input), answer every decision, return the output."""
        self.core.receive_data(data)
        out = bytearray()
        for _ in range(10_000):
            event = self.core.next_event()
            if event is NEED_DATA:
                break
            assert event is not PAUSED, "the driver answers every decision"
            assert not isinstance(event, Sentinel)
            self.events.append(event)
            if isinstance(event, Credentials):
                if event.username == USER and event.password.reveal() == PASSWORD:
                    if self.in_use:
                        self.core.login_failed(replies.IN_USE)
                    else:
                        self.core.login_ok(entries(self.messages))
                else:
                    self.core.login_failed()
            elif isinstance(event, Retrieve):
                self.core.message_content(self.messages[event.number - 1])
            elif isinstance(event, Update):
                self.core.update_done(self.update_ok)
            elif isinstance(event, StartTLS):
                out += self.core.data_to_send()
                if self.tls_upgrade:
                    self.core.tls_started()
            elif isinstance(event, ConnectionClosed):
                pass
            out += self.core.data_to_send()
        else:
            raise AssertionError("the core kept producing events")
        out += self.core.data_to_send()
        return bytes(out)

    def login(self) -> bytes:
        return self.run(f"USER {USER}\r\nPASS {PASSWORD}\r\n".encode())

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]
