"""POP3 status lines: ``+OK`` / ``-ERR`` with the RFC 2449 section 8 response codes.

Texts are what mail clients show to people, so each one says what to do; none echoes client
input (RFC 1939 section 3: a response is at most 512 octets including CRLF).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Pop3Reply:
    """One status line; ``code`` is a RFC 2449 response code such as ``"AUTH"`` or ``"IN-USE"``."""

    ok: bool
    text: str
    code: str | None = None

    def render(self) -> bytes:
        status = "+OK" if self.ok else "-ERR"
        code = f"[{self.code}] " if self.code else ""
        # RFC 1939 section 3: a status line is one line; never let text break it.
        text = self.text.replace("\r", " ").replace("\n", " ")
        return f"{status} {code}{text}".rstrip(" ").encode("utf-8", "replace")[:510] + b"\r\n"


def ok(text: str) -> Pop3Reply:
    return Pop3Reply(True, text)


def err(text: str, code: str | None = None) -> Pop3Reply:
    return Pop3Reply(False, text, code)


def greeting(hostname: str) -> Pop3Reply:
    # RFC 1939 section 4: the greeting; no APOP timestamp because APOP is not offered.
    return ok(f"{hostname} Mailstead POP3 server ready")


UNKNOWN_COMMAND = err("Unknown command")
APOP_UNSUPPORTED = err("APOP is not supported: use USER/PASS or AUTH PLAIN over TLS")
BAD_CHARACTER = err("Command contains control characters")
BAD_UTF8 = err("Command is not valid UTF-8")
BARE_EOL = err("Command lines must end with CRLF; bare CR or LF is not allowed")
# RFC 2449 section 4: a command line is at most 255 octets including the CRLF.
LINE_TOO_LONG = err("Command line too long: at most 255 octets (RFC 2449)")
TOO_MANY_ERRORS = err("Too many invalid commands, closing connection")
NOT_AUTHENTICATED = err("Not logged in: send USER and PASS, or AUTH, first")
ALREADY_AUTHENTICATED = err("Already logged in")
WRONG_STATE = err("Command not valid in this state")
# RFC 2595 section 2.1 / RFC 8314: passwords only over TLS. Mail clients show this text.
PLAINTEXT_REFUSED = err(
    "Plaintext authentication is disallowed on non-secure connections: turn on SSL/TLS in "
    "your mail client (STLS on port 110, or port 995)",
    "AUTH",
)
USER_OK = ok("Send PASS")
PASS_WITHOUT_USER = err("Send USER first")
AUTH_FAILED = err("Authentication failed", "AUTH")
AUTHZ_FAILED = err("Authorization identity must match the user name", "AUTH")
IN_USE = err("Mailbox is locked by another POP3 session, try again later", "IN-USE")
SYS_TEMP = err("Temporary server failure, try again later", "SYS/TEMP")
AUTH_CANCELLED = err("Authentication cancelled")
BAD_BASE64 = err("Invalid base64 in authentication data")
UNKNOWN_MECHANISM = err("Unsupported authentication mechanism")
TLS_READY = ok("Begin TLS negotiation")  # RFC 2595 section 4
TLS_ACTIVE = err("TLS is already active")
TLS_UNAVAILABLE = err("TLS is not available")
NO_SUCH_MESSAGE = err("No such message")
MESSAGE_DELETED = err("Message is deleted")
NOOP = ok("")
CAPA = ok("Capability list follows")
LOGGED_IN = ok("Logged in")
BYE = ok("Bye")


def syntax(usage: str) -> Pop3Reply:
    return err(f"Syntax: {usage}")
