"""The POP3 replies of a SASL exchange (RFC 5034): "+ " continuations and the -ERR answers.
The exchange itself (``=``, ``*``, base64, mechanisms) is proto/sasl/exchange.py, shared with
SMTP and IMAP."""

from __future__ import annotations

from typing import assert_never

from mailstead.proto.pop3 import replies
from mailstead.proto.pop3.events import Credentials
from mailstead.proto.pop3.replies import Pop3Reply
from mailstead.proto.sasl import exchange as sasl

# What one AUTH command or response line leads to: a continuation to send, the credentials
# to check, or the -ERR that ends the exchange.
SaslOutcome = bytes | Credentials | Pop3Reply


class Pop3Sasl(sasl.LineSasl[SaslOutcome]):
    """One connection's AUTH exchanges; the core has already checked state and TLS."""

    def start(self, arg: str) -> SaslOutcome:
        """As for every POP3 command here, trailing spaces after the arguments are forgiven."""
        return super().start(arg.rstrip(" "))

    def response(self, line: bytes) -> SaslOutcome:
        """Handle one client line sent in answer to a "+ " continuation."""
        return self.respond(line)

    def syntax_error(self) -> SaslOutcome:
        return replies.syntax("AUTH mechanism [initial-response]")

    def reply(self, outcome: sasl.Outcome) -> SaslOutcome:
        """RFC 5034 section 4: the answer for each way an exchange step can end."""
        match outcome:
            case sasl.Continue(challenge):
                return b"+ " + challenge + b"\r\n"  # "+" SP base64 CRLF; empty is "+ "
            case sasl.Authenticated(mechanism, authzid, username, password):
                return Credentials(mechanism, authzid, username, password)
            case sasl.Cancelled():
                return replies.AUTH_CANCELLED  # "*" cancels; the server answers -ERR
            case sasl.Malformed():
                return replies.BAD_BASE64
            case sasl.Unsupported():
                return replies.UNKNOWN_MECHANISM
            case sasl.Rejected(reason):
                return replies.err(f"Malformed authentication data: {reason}")
            case _:
                assert_never(outcome)
