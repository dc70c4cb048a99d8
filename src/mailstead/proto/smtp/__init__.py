"""Sans-I/O SMTP: the server core, its events, framing and replies."""

from mailstead.proto.smtp.events import (
    NEED_DATA,
    PAUSED,
    AuthCredentials,
    ConnectionClosed,
    Event,
    Helo,
    MailFrom,
    MessageData,
    RcptTo,
    Sentinel,
    SessionSettings,
    StartTLS,
    TransactionReset,
)
from mailstead.proto.smtp.server import SMTPServerCore

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "AuthCredentials",
    "ConnectionClosed",
    "Event",
    "Helo",
    "MailFrom",
    "MessageData",
    "RcptTo",
    "SMTPServerCore",
    "Sentinel",
    "SessionSettings",
    "StartTLS",
    "TransactionReset",
]
