"""The one store interface every service uses; SQLite and (later) PostgreSQL implement it.

All methods are coroutines so a networked backend fits behind the same names. Addresses passed
in are already normalised by the caller (local part as given, domain lower-case A-label-free
Unicode lower-case); the store compares them exactly (local parts case-insensitively, see
``address_key``). Nothing outside ``storage/`` touches SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

# The folders every account gets at creation, with their RFC 6154 special-use attribute.
DEFAULT_MAILBOXES: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Drafts", "\\Drafts"),
    ("Sent", "\\Sent"),
    ("Junk", "\\Junk"),
    ("Trash", "\\Trash"),
    ("Archive", "\\Archive"),
)


def address_key(address: str) -> str:
    """The comparison key of an address: local part and domain lower-cased.

    RFC 5321 section 2.4 lets a server treat local parts case-sensitively, but every real
    provider (and every user) expects ``Alice@`` and ``alice@`` to be the same mailbox.
    """
    return address.lower()


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    address: str  # "local@domain", as created
    password_hash: str
    created_at: float  # Unix time


@dataclass(frozen=True, slots=True)
class Alias:
    source: str  # "local@domain", or "@domain" for a catch-all
    targets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    id: int
    account_id: int
    name: str
    special_use: str | None
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: int


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """One message in one mailbox: the IMAP view, computed once at delivery."""

    id: int
    mailbox_id: int
    uid: int
    modseq: int
    flags: tuple[str, ...]
    internal_date: float  # Unix time
    size: int
    blob: str  # SHA-256 hex of the stored bytes
    envelope: str  # JSON, see core/message.py
    bodystructure: str  # JSON, see core/message.py


@dataclass(frozen=True, slots=True)
class LocalDelivery:
    """Put the message into ``mailbox`` of ``account_id``."""

    account_id: int
    mailbox: str = "INBOX"
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """Everything to make durable for one accepted SMTP transaction (or one IMAP APPEND).

    ``data`` is the complete message as it will be stored (our Received: header already
    prepended). Local copies and outbound queue rows are written in one atomic step: either
    all of them are durable when ``accept_message`` returns, or none is.
    """

    data: bytes
    queue_id: str
    mail_from: str  # "" for the null reverse-path
    local: Sequence[LocalDelivery]
    remote: Sequence[str]  # recipients for the outbound queue
    internal_date: float
    envelope: str  # JSON summary for IMAP
    bodystructure: str  # JSON summary for IMAP
    auth_account_id: int | None = None


@dataclass(frozen=True, slots=True)
class AcceptResult:
    blob: str
    delivered: tuple[tuple[int, int, int], ...] = field(default=())  # (account, mailbox, uid)
    queued: int = 0


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One outbound recipient of one message (DESIGN rule 7)."""

    id: int
    queue_id: str
    mail_from: str
    rcpt_to: str
    blob: str
    state: str  # "queued" | "active" | "deferred" | "delivered" | "bounced"
    attempts: int
    next_attempt: float
    created_at: float
    last_error: str | None


class Store(Protocol):
    """The whole persistent state of a Mailstead installation."""

    async def close(self) -> None: ...

    # Domains
    async def add_domain(self, name: str) -> None:
        """Raises AlreadyExists."""

    async def remove_domain(self, name: str) -> None:
        """Raises NotFound, or InUse while accounts or aliases of the domain exist."""

    async def list_domains(self) -> list[str]: ...

    async def is_local_domain(self, name: str) -> bool: ...

    # Accounts
    async def add_account(self, address: str, password_hash: str) -> Account:
        """Creates the account and its DEFAULT_MAILBOXES. Raises AlreadyExists, or NotFound
        when the domain is not local."""

    async def get_account(self, address: str) -> Account | None: ...

    async def get_account_by_id(self, account_id: int) -> Account | None: ...

    async def list_accounts(self, domain: str | None = None) -> list[Account]: ...

    async def set_password(self, address: str, password_hash: str) -> None:
        """Raises NotFound."""

    async def remove_account(self, address: str) -> None:
        """Removes the account, its mailboxes and messages. Raises NotFound."""

    # Aliases
    async def add_alias(self, source: str, targets: Sequence[str]) -> None:
        """Adds targets to ``source`` (creating it). Raises NotFound for a non-local domain."""

    async def get_alias(self, source: str) -> tuple[str, ...] | None: ...

    async def list_aliases(self) -> list[Alias]: ...

    async def remove_alias(self, source: str, targets: Sequence[str] = ()) -> None:
        """Removes the given targets, or the whole alias when none are given. Raises NotFound."""

    # Messages
    async def accept_message(self, message: IncomingMessage) -> AcceptResult:
        """Makes the message durable (blob fsync'd, rows committed) before returning.

        Concurrent calls share fsyncs and one transaction (group commit). Raises StoreError
        when nothing was written; the caller then answers with a temporary failure.
        """

    async def list_mailboxes(self, account_id: int) -> list[MailboxInfo]: ...

    async def list_messages(self, account_id: int, mailbox: str) -> list[MessageInfo]: ...

    async def read_blob(self, blob: str) -> bytes:
        """Raises NotFound."""

    # Outbound queue
    async def list_queue(self) -> list[QueueEntry]: ...
