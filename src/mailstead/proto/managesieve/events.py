"""Events the sans-I/O ManageSieve core hands to its server, and the settings it takes.

The contract (see ``server.py``): feed bytes with ``receive_data``, pull events with
``next_event`` until ``NEED_DATA``, answer each decision event with the matching method
(``login_ok``/``login_failed`` for Credentials, ``ok``/``no``/``script_list``/``script``
for ScriptRequest, ``tls_started`` after StartTLS), and write ``data_to_send()`` out.
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
    "ManageSieveSettings",
    "ScriptRequest",
    "Sentinel",
    "StartTLS",
]


@dataclass(frozen=True, slots=True)
class ManageSieveSettings:
    hostname: str
    extensions: tuple[str, ...]  # the SIEVE capability (RFC 5804 section 1.7)
    tls_active: bool = False
    starttls_available: bool = False
    auth_requires_tls: bool = True  # RFC 5804 section 2.1: PLAIN only over TLS by default
    sasl_mechanisms: tuple[str, ...] = ("PLAIN",)
    max_script_size: int = 64 * 1024  # MAXSCRIPTSIZE: larger PUTSCRIPT/HAVESPACE get QUOTA
    max_redirects: int = 4  # the MAXREDIRECTS capability
    max_errors: int = 10  # syntax errors and failed logins, then BYE


@dataclass(frozen=True, slots=True)
class Credentials:
    """AUTHENTICATE finished a SASL exchange: check the password, then call ``login_ok`` or
    ``login_failed``."""

    mechanism: str
    authzid: str
    username: str
    password: Secret


@dataclass(frozen=True, slots=True)
class StartTLS:
    """``OK`` is queued and pipelined input dropped (RFC 5804 section 2.2): flush, start TLS,
    call ``tls_started`` (which sends the capabilities again)."""


@dataclass(frozen=True, slots=True)
class ScriptRequest:
    """A script command that needs the store; arguments are already checked (names valid,
    PUTSCRIPT and CHECKSCRIPT content compiled; the server checks what needs the store,
    such as vacation addresses). ``command`` is one of PUTSCRIPT (name, content), CHECKSCRIPT
    (content),
    LISTSCRIPTS, SETACTIVE (name or ""), GETSCRIPT (name), DELETESCRIPT (name),
    RENAMESCRIPT (old, new), HAVESPACE (name, size as text)."""

    command: str
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """LOGOUT, too many errors, a fatal framing error or end of input: flush and close."""

    reason: str


Event = Credentials | StartTLS | ScriptRequest | ConnectionClosed
