"""What all IMAP sessions of one server process share: the store, the accounts service and
the per-account connection counts (\\Recent is kept in the store: imap/recent.py).

One ``IMAPContext`` is made in ``app.py`` and handed to every session (DESIGN rule 9: no
module-level state).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mailstead.accounts.quotawarn import QuotaWarner
from mailstead.accounts.service import AccountService
from mailstead.core.budget import ByteBudget
from mailstead.storage.interfaces import Store


@dataclass(frozen=True, slots=True)
class IMAPSettings:
    """Per-listener settings of a session."""

    hostname: str
    tls_active: bool = False  # implicit TLS (993), or after STARTTLS
    starttls_available: bool = False  # port 143 with a certificate loaded
    plaintext_auth: bool = False  # a password may come before TLS (core.network)
    max_message_size: int = 50 * 1024 * 1024  # APPENDLIMIT (RFC 7889) and literal limit
    max_bad_commands: int = 10  # then "* BYE" and close
    max_connections_per_account: int = 50
    max_mailboxes_per_account: int = 10000  # then CREATE gets NO [LIMIT]
    compress_available: bool = True  # COMPRESS=DEFLATE (RFC 4978)
    progress_interval: float = 5.0  # INPROGRESS notices of long commands (RFC 9585); 0: none


@dataclass(slots=True)
class IMAPContext:
    """Shared by every IMAP session of the process."""

    store: Store
    accounts: AccountService
    connections: dict[int, int] = field(default_factory=dict)  # account id -> sessions
    # Called after COPY/MOVE with (account id, source mailbox id, destination mailbox id,
    # destination UIDs): spam filters learn from moves into and out of Junk (issue 9).
    copy_hook: Callable[[int, int, int, Sequence[int]], Awaitable[None]] | None = None
    # Where large APPEND messages are spooled while they arrive (None: the system's tmp),
    # and the octets that APPEND commits of every session may hold in memory at once.
    spool_dir: Path | None = None
    append_budget: ByteBudget = field(default_factory=lambda: ByteBudget(128 * 1024 * 1024))
    # Tells users whose mailbox an APPEND takes past 80% or 95% of its quota.
    quota_warner: QuotaWarner | None = None

    def acquire(self, account_id: int, limit: int) -> bool:
        """Count one more session of the account, unless it has ``limit`` already."""
        n = self.connections.get(account_id, 0)
        if n >= limit:
            return False
        self.connections[account_id] = n + 1
        return True

    def release(self, account_id: int) -> None:
        n = self.connections.get(account_id, 1) - 1
        if n <= 0:
            self.connections.pop(account_id, None)
        else:
            self.connections[account_id] = n
