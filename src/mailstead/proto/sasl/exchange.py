"""One SASL exchange as SMTP, POP3 and IMAP carry it: ``AUTH mech [initial-response]``, ``=`` for
an empty initial response, ``*`` to cancel, strict base64 both ways.

The three line protocols frame SASL the same way (RFC 4954 section 4, RFC 5034 section 4,
RFC 9051 section 6.2.2 with RFC 4959), so that glue lives here once; each protocol keeps only
the mapping of an ``Outcome`` to its own reply bytes (SMTP and POP3 through ``LineSasl``). Like
``SaslServer`` underneath, it never raises on client data and never checks a password.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from mailstead.proto.sasl.mechanisms import (
    SUPPORTED_MECHANISMS,
    Challenge,
    Done,
    SaslDecodeError,
    SaslServer,
    Step,
    decode_response,
    encode_challenge,
)

# RFC 4422 section 3.1: a mechanism name is at most 20 characters; longer is never ours.
MAX_MECHANISM_NAME = 20

# RFC 4954 section 4, RFC 5034 section 4, RFC 4959 section 3: "=" is the empty initial response.
EMPTY_INITIAL_RESPONSE = b"="
# RFC 4954 section 4, RFC 5034 section 4, RFC 9051 section 6.2.2: "*" cancels the exchange.
CANCEL = b"*"


@dataclass(frozen=True, slots=True)
class Continue:
    """Send ``challenge`` (already base64, no line ending) and wait for the client's line."""

    challenge: bytes


# The exchange produced credentials (mechanism, authzid, username, password as a Secret) for
# the accounts service: the mechanism's own result, one type at both layers.
Authenticated = Done


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The client sent ``*``; the exchange is over and nothing was authenticated."""


@dataclass(frozen=True, slots=True)
class Malformed:
    """The client's data is not strict base64 (or not ASCII); the exchange is over. Each
    protocol answers with its own syntax error (501, -ERR, BAD)."""

    text: str


@dataclass(frozen=True, slots=True)
class Unsupported:
    """The mechanism is not offered here. ``mechanism`` is the client's name cut to 20
    characters, for logs only: never echo it to the client."""

    mechanism: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """The decoded message breaks the mechanism's grammar (``reason`` says how, in words that
    leak nothing); the exchange is over. Distinct from a wrong password, which the accounts
    service decides later."""

    reason: str


Outcome = Continue | Authenticated | Cancelled | Malformed | Unsupported | Rejected


class AuthArgument(NamedTuple):
    """The argument of ``AUTH mechanism [SP initial-response]``, split but not yet decoded."""

    mechanism: str
    initial: str | None


def split_auth_argument(arg: str) -> AuthArgument | None:
    """Split what follows ``AUTH `` into mechanism and initial response; None when it does not
    match the grammar, which each protocol answers with its own syntax error."""
    parts = arg.split(" ")
    # RFC 4954 section 4 (and RFC 5034 section 4): auth-command = "AUTH" SP sasl-mech
    # [SP initial-response]; one space each, and an initial response is base64 or "=", never
    # empty ("AUTH LOGIN " is malformed).
    if not parts[0] or len(parts) > 2 or (len(parts) == 2 and not parts[1]):
        return None
    return AuthArgument(parts[0], parts[1] if len(parts) == 2 else None)


class SaslExchange:
    """One connection's SASL exchanges: ``start`` then ``respond`` to each client line until
    an outcome other than ``Continue``. State lives in the wrapped ``SaslServer``."""

    def __init__(self, mechanisms: tuple[str, ...] = SUPPORTED_MECHANISMS) -> None:
        self._server = SaslServer(mechanisms)

    @classmethod
    def wrap(cls, server: SaslServer) -> SaslExchange:
        """An exchange over an existing ``SaslServer`` (whose state it shares), for callers
        that already own one."""
        exchange = cls(server.mechanisms)
        exchange._server = server
        return exchange

    @property
    def mechanisms(self) -> tuple[str, ...]:
        """The mechanisms offered, upper-case, in the configured order."""
        return self._server.mechanisms

    @property
    def in_progress(self) -> bool:
        """True between a ``Continue`` and the client's answer to it."""
        return self._server.in_progress

    def cancel(self) -> None:
        """Forget any exchange in progress (connection reset, STARTTLS, an over-long line)."""
        self._server.cancel()

    def start(self, mechanism: str, initial: str | bytes | None) -> Outcome:
        """Begin an exchange. ``initial`` is the initial response as sent (base64 or ``=``),
        None when the client sent none; a fresh start abandons any exchange in progress."""
        self._server.cancel()
        if not mechanism.isascii() or mechanism.upper() not in self._server.mechanisms:
            # RFC 4422 section 3.1: names are ASCII; without this check str.upper() would map
            # "pla\u0131n" (dotless i) to "PLAIN".
            return Unsupported(mechanism[:MAX_MECHANISM_NAME])
        decoded: bytes | None = None
        if initial is not None:
            raw = initial.encode("ascii", "replace") if isinstance(initial, str) else initial
            if raw == EMPTY_INITIAL_RESPONSE:
                decoded = b""
            else:
                try:
                    decoded = decode_response(raw)
                except SaslDecodeError:
                    return Malformed("invalid base64 in the initial response")
        return self._outcome(self._server.start(mechanism.upper(), decoded))

    def respond(self, line: bytes) -> Outcome:
        """The client's line (without CRLF) in answer to a ``Continue``."""
        if line == CANCEL:
            self._server.cancel()
            return Cancelled()
        try:
            response = decode_response(line)
        except SaslDecodeError:
            self._server.cancel()
            return Malformed("invalid base64 in the response")
        return self._outcome(self._server.step(response))

    def _outcome(self, step: Step) -> Outcome:
        if isinstance(step, Challenge):
            return Continue(encode_challenge(step.data))
        if isinstance(step, Done):
            return step
        # A Failed of kind "unsupported" cannot come here: start() checked the name first.
        return Rejected(step.reason)


ReplyT = TypeVar("ReplyT")


class LineSasl(ABC, Generic[ReplyT]):
    """A line protocol's AUTH command and continuation lines over one ``SaslExchange``; a
    subclass says only how each ``Outcome`` is answered and what a malformed argument gets."""

    def __init__(self, mechanisms: tuple[str, ...]) -> None:
        self._exchange = SaslExchange(mechanisms)

    @property
    def mechanisms(self) -> tuple[str, ...]:
        """The mechanisms offered, upper-case, for the capability list."""
        return self._exchange.mechanisms

    def cancel(self) -> None:
        """Forget any exchange in progress."""
        self._exchange.cancel()

    def start(self, arg: str) -> ReplyT:
        """Handle the argument of ``AUTH mechanism [initial-response]``."""
        parsed = split_auth_argument(arg)
        if parsed is None:
            return self.syntax_error()
        return self.reply(self._exchange.start(parsed.mechanism, parsed.initial))

    def respond(self, line: bytes) -> ReplyT:
        """Handle one client line (without CRLF) sent in answer to a challenge."""
        return self.reply(self._exchange.respond(line))

    @abstractmethod
    def reply(self, outcome: Outcome) -> ReplyT:
        """The protocol's answer to one outcome."""

    @abstractmethod
    def syntax_error(self) -> ReplyT:
        """The protocol's answer to an AUTH argument that does not match the grammar."""
