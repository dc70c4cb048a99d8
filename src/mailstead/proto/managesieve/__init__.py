"""Sans-I/O ManageSieve (RFC 5804): framing, events and the server core."""

from mailstead.proto.managesieve.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Credentials,
    Event,
    ManageSieveSettings,
    ScriptRequest,
    StartTLS,
)
from mailstead.proto.managesieve.server import ManageSieveCore, State

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "ConnectionClosed",
    "Credentials",
    "Event",
    "ManageSieveCore",
    "ManageSieveSettings",
    "ScriptRequest",
    "StartTLS",
    "State",
]
