"""Events the sans-I/O POP3 core hands to its server, and the settings it takes.

The contract (see ``server.py``): the server feeds bytes with ``receive_data``, pulls events
with ``next_event`` until it returns ``NEED_DATA`` (or ``PAUSED`` while a decision is pending),
answers each decision event with the matching method, and writes ``data_to_send()`` out. The
core answers alone everything that needs neither the accounts service nor the store (syntax,
state, limits, CAPA, STAT, LIST, UIDL, DELE, RSET, NOOP).
"""

from __future__ import annotations

from dataclasses import dataclass

from mailstead.core.secret import Secret
from mailstead.proto.smtp.events import NEED_DATA, PAUSED, Sentinel

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "ConnectionClosed",
    "Credentials",
    "Event",
    "MaildropEntry",
    "Pop3Settings",
    "Retrieve",
    "Sentinel",
    "StartTLS",
    "Update",
]


@dataclass(frozen=True, slots=True)
class Pop3Settings:
    """What the core needs to know about this listener and connection."""

    hostname: str
    tls_active: bool = False  # already encrypted (port 995, or after STLS)
    stls_available: bool = False  # a certificate is loaded: offer STLS while not active
    # USER/PASS and AUTH only under TLS (RFC 2595 section 2.1 recommends it; RFC 8314).
    auth_requires_tls: bool = True
    max_errors: int = 10  # bad commands and failed logins in one session, then close
    sasl_mechanisms: tuple[str, ...] = ("PLAIN",)  # RFC 5034; APOP is never offered


@dataclass(frozen=True, slots=True)
class MaildropEntry:
    """One message of the maildrop as the session sees it.

    ``unique_id`` is the UIDL value: 1 to 70 characters in 0x21..0x7E (RFC 1939 section 7),
    stable across sessions. ``size`` is the octet count RETR sends before byte-stuffing (RFC
    1939 section 11), i.e. ``framing.wire_size`` of the stored bytes.
    """

    unique_id: str
    size: int


@dataclass(frozen=True, slots=True)
class StartTLS:
    """``+OK Begin TLS negotiation`` is queued and input pipelined after STLS was discarded
    (RFC 2595 section 4). Flush data_to_send(), start TLS, then call ``tls_started()``."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """USER/PASS or an AUTH exchange finished: check the password, lock and open the
    maildrop, then call ``login_ok`` or ``login_failed``. ``mechanism`` is "USER" for
    USER/PASS, otherwise the SASL mechanism."""

    mechanism: str
    authzid: str  # "" when none was given
    username: str
    password: Secret


@dataclass(frozen=True, slots=True)
class Retrieve:
    """RETR (``top_lines`` None) or TOP (``top_lines`` body lines) of message ``number``
    (1-based, not deleted): read it and call ``message_content`` or ``message_unavailable``."""

    number: int
    entry: MaildropEntry
    top_lines: int | None


@dataclass(frozen=True, slots=True)
class Update:
    """QUIT in the TRANSACTION state with messages marked deleted: remove them (RFC 1939
    section 6, the UPDATE state) and call ``update_done``. Never emitted for a dropped
    connection, so a lost session deletes nothing."""

    numbers: tuple[int, ...]  # 1-based, ascending


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The session is over (QUIT, too many errors, idle timeout, shutdown or the peer closed):
    flush data_to_send() and close the connection."""

    reason: str


Event = StartTLS | Credentials | Retrieve | Update | ConnectionClosed
