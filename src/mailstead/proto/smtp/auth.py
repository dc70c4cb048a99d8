"""The SMTP side of a SASL exchange (RFC 4954): base64 on the wire, ``=`` for an empty initial
response, ``*`` to cancel, 334 challenges. The mechanisms themselves live in proto/sasl."""

from __future__ import annotations

from mailstead.core.reply import Reply
from mailstead.proto.sasl.mechanisms import (
    Challenge,
    Done,
    Failed,
    SaslDecodeError,
    SaslServer,
    Step,
    decode_response,
    encode_challenge,
)
from mailstead.proto.smtp import replies
from mailstead.proto.smtp.events import AuthCredentials

# What one AUTH command or response line leads to: bytes to send while the exchange goes on
# (a 334 challenge), the credentials to check, or an error reply that ends the exchange.
AuthOutcome = bytes | AuthCredentials | Reply


class SmtpAuth:
    """One connection's AUTH exchanges; the caller has already checked the sequence rules."""

    def __init__(self, mechanisms: tuple[str, ...]) -> None:
        self._sasl = SaslServer(mechanisms)

    @property
    def mechanisms(self) -> tuple[str, ...]:
        return self._sasl.mechanisms

    def cancel(self) -> None:
        self._sasl.cancel()

    def start(self, arg: str) -> AuthOutcome:
        """Handle the argument of ``AUTH mechanism [initial-response]``."""
        parts = arg.split(" ")
        # RFC 4954 section 4: auth-command = "AUTH" SP sasl-mech [SP initial-response], and an
        # initial response is base64 or "=", never empty ("AUTH LOGIN " is malformed).
        if not parts[0] or len(parts) > 2 or (len(parts) == 2 and not parts[1]):
            return replies.AUTH_SYNTAX
        if not parts[0].isascii():
            # RFC 4422 section 3.1: mechanism names are ASCII; str.upper() would map "pla\u0131n"
            # (with a dotless i) to "PLAIN".
            return replies.UNKNOWN_MECHANISM
        mechanism = parts[0].upper()
        if mechanism not in self._sasl.mechanisms:
            return replies.UNKNOWN_MECHANISM  # RFC 4954 section 4: 504
        initial: bytes | None = None
        if len(parts) == 2:
            if parts[1] == "=":
                initial = b""  # RFC 4954 section 4: "=" is an empty initial response
            else:
                try:
                    initial = decode_response(parts[1].encode("ascii", "replace"))
                except SaslDecodeError:
                    return replies.BAD_BASE64  # RFC 4954 section 4: 501
        return self._outcome(self._sasl.start(mechanism, initial))

    def line(self, line: bytes) -> AuthOutcome:
        """Handle one client line sent in answer to a 334 challenge."""
        if line == b"*":
            # RFC 4954 section 4: "*" cancels the exchange; the server answers 501.
            self._sasl.cancel()
            return replies.AUTH_CANCELLED
        try:
            response = decode_response(line)
        except SaslDecodeError:
            self._sasl.cancel()
            return replies.BAD_BASE64
        return self._outcome(self._sasl.step(response))

    def _outcome(self, step: Step) -> AuthOutcome:
        if isinstance(step, Challenge):
            return replies.auth_challenge(encode_challenge(step.data))
        if isinstance(step, Done):
            return AuthCredentials(step.mechanism, step.authzid, step.username, step.password)
        assert isinstance(step, Failed)
        # RFC 4954 section 4: a response the mechanism cannot parse is a 501 syntax error.
        return Reply(501, "5.5.2", f"Malformed authentication data: {step.reason}")
