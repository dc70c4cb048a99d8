"""Drives SMTPServerCore like a server would, with a scripted decision function (cf. h11's
tests/helpers.py): feed bytes, collect events, answer decisions, return the bytes written."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field

from mailstead.core.reply import Reply
from mailstead.proto.smtp import replies
from mailstead.proto.smtp.events import (
    NEED_DATA,
    PAUSED,
    AuthCredentials,
    Event,
    MailFrom,
    MessageData,
    RcptTo,
    SessionSettings,
)
from mailstead.proto.smtp.server import SMTPServerCore

HOST = "mx.example.test"
GREETING = b"220 mx.example.test ESMTP Mailstead\r\n"
EHLO_LINES = (
    b"250-mx.example.test\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 10000\r\n"
    b"250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
)
EHLO_REPLY = EHLO_LINES + b"250-CHUNKING\r\n250 DSN\r\n"
MAIL_OK = b"250 2.1.0 Sender OK\r\n"
RCPT_OK = b"250 2.1.5 Recipient OK\r\n"
QUEUED = b"250 2.0.0 OK: queued as Q1\r\n"
START_DATA = b"354 End data with <CR><LF>.<CR><LF>\r\n"
OK = b"250 2.0.0 OK\r\n"
BYE = b"221 2.0.0 mx.example.test closing connection\r\n"


def settings(**overrides: object) -> SessionSettings:
    base: dict[str, object] = {"hostname": HOST, "max_message_size": 10000}
    base.update(overrides)
    return SessionSettings(**base)  # type: ignore[arg-type]


def default_decide(event: Event) -> Reply | bool:
    """Accept everything except recipients whose local part starts with "bad", senders
    starting with "spam", and passwords other than "secret"."""
    if isinstance(event, MailFrom):
        if event.sender is not None and event.sender.local.startswith("spam"):
            return Reply(550, "5.7.1", "Sender refused")
        return replies.MAIL_OK
    if isinstance(event, RcptTo):
        if event.recipient.local.startswith("bad"):
            return Reply(550, "5.1.1", "No such user")
        return replies.RCPT_OK
    if isinstance(event, MessageData):
        return replies.queued("Q1")
    if isinstance(event, AuthCredentials):
        return event.password.reveal() == "secret"
    raise AssertionError(f"not a decision: {event!r}")


@dataclass
class Driver:
    """A core plus the events it produced; ``send`` returns what the core wrote back."""

    core: SMTPServerCore
    decide: Callable[[Event], Reply | bool] = default_decide
    events: list[Event] = field(default_factory=list)
    greeting: bytes = b""

    @classmethod
    def start(
        cls, decide: Callable[[Event], Reply | bool] = default_decide, **overrides: object
    ) -> Driver:
        driver = cls(SMTPServerCore(settings(**overrides)), decide)
        driver.greeting = driver.core.data_to_send()
        return driver

    def pump(self) -> None:
        """Pull events until NEED_DATA, answering each decision at once."""
        for _ in range(100_000):
            event = self.core.next_event()
            if event is NEED_DATA:
                return
            assert event is not PAUSED, "a decision was left unanswered"
            self.events.append(event)  # type: ignore[arg-type]
            if isinstance(event, MailFrom | RcptTo | MessageData):
                answer = self.decide(event)
                assert isinstance(answer, Reply)
                self.core.respond(answer)
            elif isinstance(event, AuthCredentials):
                answer = self.decide(event)
                if isinstance(answer, Reply):
                    self.core.auth_result(answer.is_positive, answer)
                else:
                    self.core.auth_result(bool(answer))
        raise AssertionError("the core never asked for data")

    def send(self, data: bytes) -> bytes:
        self.core.receive_data(data)
        self.pump()
        return self.core.data_to_send()

    def send_chunks(self, chunks: list[bytes]) -> bytes:
        out = b""
        for chunk in chunks:
            if chunk:  # b"" would mean end of file
                out += self.send(chunk)
        return out

    def of_type(self, kind: type) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]


def ehlo_driver(**overrides: object) -> Driver:
    driver = Driver.start(**overrides)
    driver.send(b"EHLO client.example.test\r\n")
    driver.events.clear()
    return driver


def transaction_driver(**overrides: object) -> Driver:
    """A driver with EHLO, MAIL and one RCPT accepted."""
    driver = ehlo_driver(**overrides)
    out = driver.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<b@example.test>\r\n")
    assert out == MAIL_OK + RCPT_OK
    driver.events.clear()
    return driver


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)
