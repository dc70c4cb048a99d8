"""The actions a Sieve run produces (RFC 5228 section 4, RFC 5429, RFC 5230, RFC 5232)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keep:
    """Store in the default mailbox (RFC 5228 section 4.3) with these IMAP flags."""

    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FileInto:
    """Store in ``mailbox`` (RFC 5228 section 4.1); ``create`` it when missing (RFC 5490)."""

    mailbox: str
    flags: tuple[str, ...] = ()
    create: bool = False


@dataclass(frozen=True, slots=True)
class Redirect:
    """Forward to ``address`` unchanged, envelope sender kept (RFC 5228 section 4.2)."""

    address: str


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse with ``reason`` (RFC 5429 section 2.2)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Discard:
    """Throw away silently (RFC 5228 section 4.4)."""


@dataclass(frozen=True, slots=True)
class Vacation:
    """Auto-reply (RFC 5230 section 4); the delivery step decides whether it is sent."""

    reason: str
    subject: str | None
    from_: str | None
    addresses: tuple[str, ...]
    days: int
    handle: str
    mime: bool


Action = Keep | FileInto | Redirect | Reject | Discard | Vacation


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one run decided. ``actions`` already includes the implicit keep when it applies
    (RFC 5228 section 2.10.2); ``error`` names a runtime error that fell back to keep;
    ``exhausted``: that error was the run's step or CPU budget."""

    actions: tuple[Action, ...]
    error: str | None = None
    exhausted: bool = False
