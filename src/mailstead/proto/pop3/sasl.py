"""The POP3 side of a SASL exchange (RFC 5034): ``AUTH mechanism [initial-response]``, "="
for an empty initial response, "+ " continuations, "*" to cancel. The mechanisms live in
proto/sasl and are shared with SMTP and IMAP."""

from __future__ import annotations

from mailstead.proto.pop3 import replies
from mailstead.proto.pop3.events import Credentials
from mailstead.proto.pop3.replies import Pop3Reply
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

# What one AUTH command or response line leads to: a continuation to send, the credentials
# to check, or the -ERR that ends the exchange.
SaslOutcome = bytes | Credentials | Pop3Reply


class Pop3Sasl:
    """One connection's AUTH exchanges; the core has already checked state and TLS."""

    def __init__(self, mechanisms: tuple[str, ...]) -> None:
        self._sasl = SaslServer(mechanisms)

    @property
    def mechanisms(self) -> tuple[str, ...]:
        return self._sasl.mechanisms

    def cancel(self) -> None:
        self._sasl.cancel()

    def start(self, arg: str) -> SaslOutcome:
        """Handle the argument of ``AUTH mechanism [initial-response]``."""
        parts = arg.rstrip(" ").split(" ")
        if not parts[0] or len(parts) > 2:
            return replies.syntax("AUTH mechanism [initial-response]")
        mechanism = parts[0].upper()
        if mechanism not in self._sasl.mechanisms:
            return replies.UNKNOWN_MECHANISM
        initial: bytes | None = None
        if len(parts) == 2:
            if parts[1] == "=":
                initial = b""  # RFC 5034 section 4: "=" is an empty initial response
            else:
                try:
                    initial = decode_response(parts[1].encode("ascii", "replace"))
                except SaslDecodeError:
                    return replies.BAD_BASE64
        return self._outcome(self._sasl.start(mechanism, initial))

    def response(self, line: bytes) -> SaslOutcome:
        """Handle one client line sent in answer to a "+ " continuation."""
        if line == b"*":
            # RFC 5034 section 4: "*" cancels; the server answers -ERR.
            self._sasl.cancel()
            return replies.AUTH_CANCELLED
        try:
            response = decode_response(line)
        except SaslDecodeError:
            self._sasl.cancel()
            return replies.BAD_BASE64
        return self._outcome(self._sasl.step(response))

    def _outcome(self, step: Step) -> SaslOutcome:
        if isinstance(step, Challenge):
            # RFC 5034 section 4: "+" SP base64 CRLF (an empty challenge is "+ ").
            return b"+ " + encode_challenge(step.data) + b"\r\n"
        if isinstance(step, Done):
            return Credentials(step.mechanism, step.authzid, step.username, step.password)
        assert isinstance(step, Failed)
        return replies.err(f"Malformed authentication data: {step.reason}")
