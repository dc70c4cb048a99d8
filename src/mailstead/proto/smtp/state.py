"""The SMTP session's state table (DESIGN rule 2): input phases, their legal transitions, and
for every command the sequence rules it must pass before its handler runs.

``SMTPServerCore`` consults these tables and nothing else to decide whether a command may run
now, so the sequencing of RFC 5321 section 4.1.4, RFC 3207, RFC 4954 and RFC 3030 can be read
in one place. Guards are checked in the order listed; the first one that fails gives the reply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from mailstead.core.reply import Reply
from mailstead.proto.smtp import replies
from mailstead.proto.smtp.events import MailFrom, SessionSettings


class Phase(Enum):
    """What the next input bytes are."""

    COMMAND = "command"  # command lines
    AUTH = "auth"  # SASL responses after a 334 challenge (RFC 4954 section 4)
    DATA = "data"  # DATA content up to CRLF "." CRLF (RFC 5321 section 4.1.1.4)
    BDAT = "bdat"  # the octets of one BDAT chunk (RFC 3030 section 2)
    TLS_WAIT = "tls wait"  # StartTLS emitted; every byte is dropped until tls_started()
    CLOSED = "closed"


# Every legal phase change; anything else is a bug in the core, not in the client's input.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.COMMAND: frozenset(
        {Phase.COMMAND, Phase.AUTH, Phase.DATA, Phase.BDAT, Phase.TLS_WAIT, Phase.CLOSED}
    ),
    Phase.AUTH: frozenset({Phase.AUTH, Phase.COMMAND, Phase.CLOSED}),
    Phase.DATA: frozenset({Phase.COMMAND, Phase.CLOSED}),
    Phase.BDAT: frozenset({Phase.COMMAND, Phase.CLOSED}),
    # RFC 3207 section 4.2: after the handshake the session starts afresh with commands.
    Phase.TLS_WAIT: frozenset({Phase.COMMAND, Phase.CLOSED}),
    Phase.CLOSED: frozenset({Phase.CLOSED}),
}


class SessionState(Protocol):
    """The read-only view of a session the guards need (``SMTPServerCore`` provides it)."""

    @property
    def settings(self) -> SessionSettings: ...
    @property
    def helo_name(self) -> str | None: ...
    @property
    def authenticated_as(self) -> str | None: ...
    @property
    def tls_active(self) -> bool: ...
    @property
    def auth_offered(self) -> bool: ...
    @property
    def mail(self) -> MailFrom | None: ...
    @property
    def recipient_count(self) -> int: ...
    @property
    def rcpt_attempts(self) -> int: ...
    @property
    def bdat_used(self) -> bool: ...


Guard = Callable[[SessionState], Reply | None]


def need_helo(s: SessionState) -> Reply | None:
    # RFC 5321 section 4.1.4: a session starts with EHLO or HELO.
    return replies.NEED_HELO if s.helo_name is None else None


def need_auth_on_submission(s: SessionState) -> Reply | None:
    # RFC 4954 section 6 / RFC 6409 section 4.3: submission requires authentication.
    if s.settings.submission and s.authenticated_as is None:
        return replies.AUTH_REQUIRED
    return None


def no_nested_mail(s: SessionState) -> Reply | None:
    # RFC 5321 section 4.1.4: MAIL may not be sent while a transaction is open.
    return replies.NESTED_MAIL if s.mail is not None else None


def need_mail(s: SessionState) -> Reply | None:
    # RFC 5321 section 4.1.4: RCPT and DATA need a transaction started by MAIL.
    return replies.NEED_MAIL if s.mail is None else None


def need_rcpt(s: SessionState) -> Reply | None:
    if s.recipient_count:
        return None
    # RFC 2920 section 3.1: 554 when every (pipelined) RCPT was refused, else 503.
    return replies.NO_VALID_RECIPIENTS if s.rcpt_attempts else replies.NEED_RCPT


def no_bdat_before_data(s: SessionState) -> Reply | None:
    # RFC 3030 section 2: DATA and BDAT may not be mixed in one transaction.
    return replies.DATA_AFTER_BDAT if s.bdat_used else None


def not_binarymime(s: SessionState) -> Reply | None:
    # RFC 3030 section 3: a BINARYMIME body can only be sent with BDAT.
    if s.mail is not None and s.mail.body == "BINARYMIME":
        return replies.BINARYMIME_NEEDS_BDAT
    return None


def tls_not_active(s: SessionState) -> Reply | None:
    # RFC 3207 section 4.2: no second negotiation; a sequence error (RFC 5321 section 4.2.4).
    return replies.TLS_ALREADY_ACTIVE if s.tls_active else None


def tls_available(s: SessionState) -> Reply | None:
    return None if s.settings.starttls_available else replies.TLS_UNAVAILABLE


def auth_available(s: SessionState) -> Reply | None:
    # RFC 5321 section 4.2.4: 502, the command is recognised but not offered here.
    return None if s.settings.submission and s.settings.auth_mechanisms else (
        replies.AUTH_UNAVAILABLE)


def not_authenticated(s: SessionState) -> Reply | None:
    # RFC 4954 section 4: after a successful AUTH, further AUTH commands get 503.
    return replies.ALREADY_AUTHENTICATED if s.authenticated_as is not None else None


def no_transaction_for_auth(s: SessionState) -> Reply | None:
    # RFC 4954 section 4: AUTH is not permitted during a mail transaction.
    return replies.AUTH_IN_TRANSACTION if s.mail is not None else None


def tls_for_auth(s: SessionState) -> Reply | None:
    # RFC 4954 section 4 and 6: 538 when the mechanism needs an encrypted channel.
    if not s.tls_active and s.settings.auth_requires_tls:
        return replies.ENCRYPTION_REQUIRED
    return None


@dataclass(frozen=True, slots=True)
class CommandRule:
    """When a command may run. ``no_argument``: the reply to an argument where none is allowed
    (checked first, as a syntax error outranks a sequence error); ``guards``: the sequence
    rules, in order; ``junk``: the command makes no progress towards delivering mail and is
    counted against ``SessionSettings.max_junk_commands``."""

    guards: tuple[Guard, ...] = ()
    no_argument: Reply | None = None
    junk: bool = False


# BDAT's readiness is TRANSACTION_READY, but it is checked after the chunk size is parsed:
# a refused chunk must still be read and discarded (RFC 3030 section 2).
TRANSACTION_READY: tuple[Guard, ...] = (need_mail, need_rcpt)

COMMANDS: dict[str, CommandRule] = {
    "EHLO": CommandRule(junk=True),
    "HELO": CommandRule(junk=True),
    "MAIL": CommandRule((need_helo, need_auth_on_submission, no_nested_mail)),
    "RCPT": CommandRule((need_mail,)),
    "DATA": CommandRule(
        (*TRANSACTION_READY, no_bdat_before_data, not_binarymime),
        no_argument=replies.syntax("DATA (no parameters allowed)"),
    ),
    "BDAT": CommandRule(),
    # RFC 5321 section 4.1.1.5: the server MUST NOT close the connection because of RSET, so
    # RSET is not junk.
    "RSET": CommandRule(no_argument=replies.syntax("RSET (no parameters allowed)")),
    "NOOP": CommandRule(junk=True),
    "QUIT": CommandRule(no_argument=replies.syntax("QUIT (no parameters allowed)")),
    "VRFY": CommandRule(junk=True),
    "EXPN": CommandRule(),  # always refused, so already counted as an error
    "HELP": CommandRule(junk=True),
    "STARTTLS": CommandRule(
        (tls_not_active, tls_available), no_argument=replies.STARTTLS_SYNTAX  # RFC 3207 s. 4
    ),
    "AUTH": CommandRule(
        (auth_available, need_helo, not_authenticated, no_transaction_for_auth, tls_for_auth)
    ),
}


def refusal(guards: tuple[Guard, ...], state: SessionState) -> Reply | None:
    """The reply of the first guard that fails, or None when the command may run."""
    for guard in guards:
        reply = guard(state)
        if reply is not None:
            return reply
    return None
