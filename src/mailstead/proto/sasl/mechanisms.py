"""Sans-I/O SASL server mechanisms PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login).

``SaslServer`` works on decoded octets. The line-protocol glue around it (base64, ``=`` for an
empty initial response, ``*`` to cancel) is ``exchange.py``, shared by SMTP, IMAP and POP3.
Checking the password is never done here: ``Done`` carries the credentials (the password as a
``Secret``) to the accounts service.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Literal

from mailstead.core.secret import Secret

# RFC 4616 section 2: authzid, authcid and passwd are each at most 255 octets. LOGIN has no
# limits of its own; the same ones apply so that both mechanisms accept the same credentials.
MAX_FIELD = 255

SUPPORTED_MECHANISMS: tuple[str, ...] = ("PLAIN", "LOGIN")

# draft-murchison-sasl-login-00 section 2: the two fixed challenges.
LOGIN_USERNAME_CHALLENGE = b"Username:"
LOGIN_PASSWORD_CHALLENGE = b"Password:"


class SaslDecodeError(ValueError):
    """A client response that is not valid base64 (RFC 4954 section 4 answers it with 501)."""


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``data`` (base64-encoded by the protocol) and wait for the next response."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Done:
    """The exchange is complete: verify these credentials."""

    mechanism: str
    authzid: str  # "" when the client named no authorisation identity
    username: str
    password: Secret

    @property
    def acts_as_self(self) -> bool:
        """True unless the client asked to act as someone else: RFC 4616 section 2 leaves that
        to policy, and ours is that a user may only be themselves."""
        return not self.authzid or self.authzid.lower() == self.username.lower()


@dataclass(frozen=True, slots=True)
class Failed:
    """The exchange ended without credentials. ``kind`` is ``"malformed"`` (the client sent
    something the mechanism forbids) or ``"unsupported"`` (unknown mechanism)."""

    reason: str
    kind: Literal["malformed", "unsupported"] = "malformed"


Step = Challenge | Done | Failed


def decode_response(data: bytes) -> bytes:
    """Strictly decode a base64 client response (RFC 4648 section 4, no whitespace, padding
    required); raises SaslDecodeError."""
    # CPython's strict mode still accepts a stray "=" after a complete quantum ("////=");
    # RFC 4648 section 4 encodings are whole 4-character quanta.
    if len(data) % 4:
        raise SaslDecodeError("invalid base64")
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        raise SaslDecodeError("invalid base64") from None


def encode_challenge(data: bytes) -> bytes:
    """Base64 of a server challenge, without a line ending."""
    return binascii.b2a_base64(data, newline=False)


def _text(raw: bytes, what: str) -> str:
    if len(raw) > MAX_FIELD:
        raise ValueError(f"{what} longer than {MAX_FIELD} octets")
    try:
        # RFC 4616 section 2: every field is UTF-8 encoded.
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not valid UTF-8") from None


def parse_plain(message: bytes) -> Done | Failed:
    """Parse ``[authzid] NUL authcid NUL passwd`` (RFC 4616 section 2)."""
    parts = message.split(b"\x00")
    if len(parts) != 3:
        # RFC 4616 section 2: exactly two NULs; NUL cannot occur inside a field.
        return Failed("PLAIN message must contain exactly two NUL separators")
    authzid, authcid, passwd = parts
    if not authcid or not passwd:
        # RFC 4616 section 2: authcid and passwd are 1*SAFE.
        return Failed("PLAIN message lacks a username or password")
    try:
        return Done(
            "PLAIN",
            _text(authzid, "authorisation identity"),
            _text(authcid, "username"),
            Secret(_text(passwd, "password")),
        )
    except ValueError as exc:
        return Failed(str(exc))


class SaslServer:
    """One SASL exchange. ``start`` then ``step`` until a ``Done`` or ``Failed``; a new
    ``start`` begins a fresh exchange. Never raises on client data."""

    def __init__(self, mechanisms: tuple[str, ...] = SUPPORTED_MECHANISMS) -> None:
        self._offered = tuple(m.upper() for m in mechanisms if m.upper() in SUPPORTED_MECHANISMS)
        self._mechanism: str | None = None
        self._username: str | None = None

    @property
    def mechanisms(self) -> tuple[str, ...]:
        """The mechanisms this server accepts, in the order offered."""
        return self._offered

    @property
    def in_progress(self) -> bool:
        return self._mechanism is not None

    def cancel(self) -> None:
        """Forget the exchange in progress (the client sent ``*``, RFC 4954 section 4)."""
        self._mechanism = None
        self._username = None

    def start(self, mechanism: str, initial_response: bytes | None) -> Step:
        """Begin an exchange; ``initial_response`` is None when the client sent none and
        ``b""`` for the empty one (``=`` in SMTP, RFC 4954 section 4)."""
        self.cancel()
        mech = mechanism.upper()
        if mech not in self._offered:
            return Failed(f"mechanism {mechanism[:20]!r} not supported", "unsupported")
        self._mechanism = mech
        if mech == "PLAIN":
            if initial_response is None:
                # RFC 4616 section 2: the server sends an empty challenge.
                return Challenge(b"")
            return self._finish(parse_plain(initial_response))
        if not initial_response:
            # LOGIN defines no initial response; an empty one is the same as none.
            return Challenge(LOGIN_USERNAME_CHALLENGE)
        return self._login_username(initial_response)

    def step(self, response: bytes) -> Step:
        """Continue the exchange with the client's decoded response."""
        if self._mechanism == "PLAIN":
            return self._finish(parse_plain(response))
        if self._mechanism == "LOGIN":
            if self._username is None:
                return self._login_username(response)
            username = self._username
            try:
                password = _text(response, "password")
            except ValueError as exc:
                return self._finish(Failed(str(exc)))
            if not password:
                return self._finish(Failed("empty password"))
            return self._finish(Done("LOGIN", "", username, Secret(password)))
        return Failed("no authentication exchange in progress")

    def _login_username(self, response: bytes) -> Step:
        try:
            username = _text(response, "username")
        except ValueError as exc:
            return self._finish(Failed(str(exc)))
        if not username:
            return self._finish(Failed("empty username"))
        self._username = username
        return Challenge(LOGIN_PASSWORD_CHALLENGE)

    def _finish(self, result: Done | Failed) -> Done | Failed:
        self.cancel()
        return result
