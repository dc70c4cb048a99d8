"""Sans-I/O POP3 (RFC 1939, RFC 2449, RFC 2595, RFC 5034): the server core, its events,
framing and replies."""

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
from mailstead.proto.pop3.framing import wire_form, wire_size
from mailstead.proto.pop3.replies import Pop3Reply
from mailstead.proto.pop3.server import POP3ServerCore, State

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "ConnectionClosed",
    "Credentials",
    "Event",
    "MaildropEntry",
    "POP3ServerCore",
    "Pop3Reply",
    "Pop3Settings",
    "Retrieve",
    "Sentinel",
    "StartTLS",
    "State",
    "Update",
    "wire_form",
    "wire_size",
]
