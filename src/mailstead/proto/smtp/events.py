"""Events the sans-I/O SMTP server core hands to its server, and the session settings it takes.

The contract (see ``server.py``): the server feeds bytes with ``receive_data``, pulls events
with ``next_event`` until it returns ``NEED_DATA`` (or ``PAUSED`` while a decision is pending),
answers decision events with ``respond``/``auth_result``, and writes ``data_to_send()`` out.
The core answers everything it can decide alone (syntax, sequence, limits, EHLO, NOOP, RSET,
HELP, VRFY, QUIT) without an event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from mailstead.core.address import Address
from mailstead.core.dsn import MessageDsn, RecipientDsn
from mailstead.core.secret import Secret


class Sentinel(Enum):
    NEED_DATA = "NEED_DATA"  # feed more bytes (and flush data_to_send first)
    PAUSED = "PAUSED"  # a decision event is outstanding: call respond()/auth_result()


NEED_DATA = Sentinel.NEED_DATA
PAUSED = Sentinel.PAUSED


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What the core needs to know about this listener and connection."""

    hostname: str
    submission: bool = False  # True: AUTH offered, MAIL requires AUTH (RFC 6409 section 4.3)
    tls_active: bool = False  # the connection is already encrypted (port 465, or after STARTTLS)
    starttls_available: bool = False  # a certificate is loaded; offer STARTTLS while not active
    auth_requires_tls: bool = True  # AUTH before TLS gets 538 5.7.11 (RFC 4954 section 4)
    max_message_size: int = 50 * 1024 * 1024  # SIZE (RFC 1870)
    max_recipients: int = 100  # RFC 5321 section 4.5.3.1.8: at least 100 must be accepted
    max_command_line: int = 4096  # 512 by RFC 5321 4.5.3.1.4, plus room for ESMTP parameters
    max_data_line: int = 998  # RFC 5322 section 2.1.1, excluding CRLF
    max_errors: int = 10  # then 421 and close
    auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    # NOOP, VRFY, HELP, EHLO/HELO that deliver nothing; past this many in a session each also
    # counts as an error, so a client cannot hold a connection open forever (cf. Postfix's
    # smtpd_junk_command_limit). Accepting a message starts the count afresh.
    max_junk_commands: int = 100


@dataclass(frozen=True, slots=True)
class Helo:
    """EHLO/HELO was answered with 250 by the core; informational (logs, Received: header)."""

    name: str
    esmtp: bool


@dataclass(frozen=True, slots=True)
class StartTLS:
    """The core has queued ``220 2.0.0 Ready to start TLS`` and discarded any input pipelined
    after the STARTTLS line (RFC 3207 section 5, the injection defence). The server must flush
    data_to_send(), wrap the socket in TLS, then call ``tls_started()``; the session is back
    to its initial state and the client must EHLO again (RFC 3207 section 4.2)."""


@dataclass(frozen=True, slots=True)
class AuthCredentials:
    """A SASL exchange finished: check the password and call ``auth_result``."""

    mechanism: str
    authzid: str  # "" when none was given
    username: str
    password: Secret


@dataclass(frozen=True, slots=True)
class MailFrom:
    """MAIL FROM passed syntax and sequence checks; call ``respond`` (2xx starts the
    transaction). ``sender`` is None for the null reverse-path ``<>``."""

    sender: Address | None
    params: dict[str, str | None] = field(default_factory=dict)  # upper-cased keys
    size: int | None = None  # SIZE= (RFC 1870)
    body: str | None = None  # "7BIT" | "8BITMIME" | "BINARYMIME"
    smtputf8: bool = False
    dsn: MessageDsn | None = None  # RET= and ENVID= (RFC 3461 sections 4.3, 4.4)
    requiretls: bool = False  # MAIL FROM ... REQUIRETLS (RFC 8689 section 4)


@dataclass(frozen=True, slots=True)
class RcptTo:
    """RCPT TO passed syntax, sequence and count checks; call ``respond`` (2xx adds it)."""

    recipient: Address
    params: dict[str, str | None] = field(default_factory=dict)
    dsn: RecipientDsn | None = None  # NOTIFY= and ORCPT= (RFC 3461 sections 4.1, 4.2)


@dataclass(frozen=True, slots=True)
class MessageData:
    """The whole message content arrived (after DATA, dot-unstuffed; or the last BDAT chunk).

    Call ``respond`` with 250 only after it is durable. The core resets the transaction after
    the reply, whatever it is (RFC 5321 section 4.1.1.4), which closes the sink. ``data`` is
    the content when the core kept it itself; empty when the server gave the core its own
    ``ContentSink``, which then holds it until the reply."""

    data: bytes
    sender: Address | None
    recipients: tuple[Address, ...]
    via_bdat: bool


@dataclass(frozen=True, slots=True)
class TransactionReset:
    """The transaction was abandoned (RSET, a new EHLO, or the core refused the message data,
    e.g. too large or bare CR/LF). Informational, for logs; ``reply`` is what the client got."""

    reply: object  # mailstead.core.reply.Reply, or None for RSET/EHLO


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The session is over (QUIT answered with 221, too many errors answered with 421, or the
    peer closed). Flush data_to_send() and close the connection."""

    reason: str


Event = (
    Helo | StartTLS | AuthCredentials | MailFrom | RcptTo | MessageData | TransactionReset
    | ConnectionClosed
)
