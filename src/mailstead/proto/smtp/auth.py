"""The SMTP replies of a SASL exchange (RFC 4954): 334 challenges, 501 for syntax, base64 and
cancellation, 504 for an unknown mechanism. The exchange itself is proto/sasl/exchange.py."""

from __future__ import annotations

from typing import assert_never

from mailstead.core.reply import Reply
from mailstead.proto.sasl import exchange as sasl
from mailstead.proto.smtp import replies
from mailstead.proto.smtp.events import AuthCredentials

# What one AUTH command or response line leads to: bytes to send while the exchange goes on
# (a 334 challenge), the credentials to check, or an error reply that ends the exchange.
AuthOutcome = bytes | AuthCredentials | Reply


class SmtpAuth(sasl.LineSasl[AuthOutcome]):
    """One connection's AUTH exchanges; the caller has already checked the sequence rules."""

    def line(self, line: bytes) -> AuthOutcome:
        """Handle one client line sent in answer to a 334 challenge."""
        return self.respond(line)

    def syntax_error(self) -> AuthOutcome:
        return replies.AUTH_SYNTAX  # RFC 4954 section 4: 501

    def reply(self, outcome: sasl.Outcome) -> AuthOutcome:
        """RFC 4954 section 4: the reply for each way an exchange step can end."""
        match outcome:
            case sasl.Continue(challenge):
                return replies.auth_challenge(challenge)
            case sasl.Authenticated(mechanism, authzid, username, password):
                return AuthCredentials(mechanism, authzid, username, password)
            case sasl.Cancelled():
                return replies.AUTH_CANCELLED  # "*" cancels; the server answers 501
            case sasl.Malformed():
                return replies.BAD_BASE64  # 501: the data cannot be base64-decoded
            case sasl.Unsupported():
                return replies.UNKNOWN_MECHANISM  # 504
            case sasl.Rejected(reason):
                # A response the mechanism cannot parse is a 501 syntax error.
                return Reply(501, "5.5.2", f"Malformed authentication data: {reason}")
            case _:
                assert_never(outcome)
