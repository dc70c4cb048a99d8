"""The session states, the actions a command asks of the server, and the refusal exception:
shared by the session and every command module."""

from __future__ import annotations

from enum import Enum


class State(Enum):
    """RFC 9051 section 3."""

    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


class Action(Enum):
    """What the server must do after writing the output of a command."""

    NONE = "none"
    STARTTLS = "starttls"  # upgrade now, discarding pipelined input, then tls_started()
    COMPRESS = "compress"  # wrap the stream in DEFLATE now (RFC 4978 section 3)
    IDLE = "idle"  # wait for DONE and for mailbox changes (RFC 2177)
    SASL = "sasl"  # read one line for the SASL exchange, then sasl_continue()
    CLOSE = "close"  # close the connection


class CommandFailed(Exception):
    """A handler refuses the command: ``status`` is NO or BAD, ``code`` the response code
    (RFC 5530) without brackets."""

    def __init__(self, status: str, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.code = code
