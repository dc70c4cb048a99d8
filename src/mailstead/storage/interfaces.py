"""The one store interface every service uses; SQLite and (later) PostgreSQL implement it.

All methods are coroutines so a networked backend fits behind the same names. Addresses passed
in are already normalised by the caller (local part as given, domain lower-case A-label-free
Unicode lower-case); the store compares them exactly (local parts case-insensitively, see
``address_key``). Nothing outside ``storage/`` touches SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from mailstead.core.dsn import MessageDsn, RecipientDsn
from mailstead.storage.integrity import Integrity
from mailstead.storage.threads import own_thread

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
class MailboxCounts:
    """What STATUS needs beyond ``MailboxInfo`` (RFC 9051 section 6.3.11, RFC 8438 SIZE):
    messages without \\Seen, with \\Deleted, and their stored size in octets."""

    unseen: int
    deleted: int
    size: int


@dataclass(frozen=True, slots=True)
class RecentInfo:
    """\\Recent of a mailbox (RFC 3501 section 2.3.2, migration 0013): messages with a UID
    from ``first_uid`` on are recent, not yet taken by a session; ``messages`` of them exist."""

    first_uid: int
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
    # Octets of the message with every line break as CRLF (RFC 5322 section 2.1): ``size``
    # plus one CR per bare LF. IMAP RFC822.SIZE (RFC 9051 section 7.5.2) and what IMAP
    # BODY[] sends. A negative value (the default, for callers that predate it) means ``size``.
    wire_size: int = -1
    # The last line lacks a line break (possible after IMAP APPEND); POP3 completes it with
    # CRLF before the terminator (RFC 1939 section 3), so RETR sends 2 octets more.
    unterminated: bool = False
    # When the message was saved into this mailbox (RFC 8514 section 3: delivery, APPEND,
    # COPY, MOVE); negative (the default, and rows older than migration 0014) means
    # ``internal_date``.
    saved_at: float = -1.0
    # The RFC 8474 section 5.2 THREADID (storage/threads.py); empty means "its own thread".
    thread_id: str = ""

    def __post_init__(self) -> None:
        if self.wire_size < 0:
            object.__setattr__(self, "wire_size", self.size)
        if self.saved_at < 0:
            object.__setattr__(self, "saved_at", self.internal_date)
        if not self.thread_id:
            object.__setattr__(self, "thread_id", own_thread(self.blob))


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
    # The Message-IDs that place it in a thread (core/msgids.py, MessageSummary.thread_keys);
    # without them the store takes the ids the envelope names (storage/threads.py).
    thread_keys: tuple[str, ...] = ()
    # RFC 3461: what each remote recipient (a ``remote`` entry, as written there) asked of
    # delivery status notifications; absent ones asked nothing (section 4.1 defaults).
    dsn: Mapping[str, RecipientDsn] = field(default_factory=dict)
    envelope_dsn: MessageDsn | None = None  # RET= and ENVID= of the message
    requiretls: bool = False  # RFC 8689 section 4: relay only over verified TLS


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
    warned: bool = False  # a delay warning DSN was sent for this recipient (issue 5)
    last_attempt: float | None = None  # when the last attempt ended (issue 5)
    dsn: RecipientDsn | None = None  # NOTIFY= / ORCPT= of this recipient (RFC 3461)
    envelope_dsn: MessageDsn | None = None  # RET= / ENVID= of its message
    requiretls: bool = False  # RFC 8689: relay only over verified TLS

    @property
    def waiting(self) -> bool:
        """Still to be delivered (queued, being tried, or deferred): what "the queue" means
        to the CLI and the web page alike; delivered and bounced rows are history."""
        return self.state in ("queued", "active", "deferred")


# ---------------------------------------------------------------------------------------------
# Mailbox access for IMAP and POP3 (issues 3 and 4). Sequence numbers are a session's view and
# never reach the store: everything here speaks UIDs.


class FlagOp(Enum):
    ADD = "+"
    REMOVE = "-"
    REPLACE = ""


@dataclass(frozen=True, slots=True)
class FlagChange:
    uid: int
    modseq: int
    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StoreFlagsResult:
    changed: tuple[FlagChange, ...]  # messages whose flags (and modseq) changed
    # RFC 7162 section 3.1.3: UNCHANGEDSINCE failed for these (their modseq is newer)
    modified: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class MailboxChanges:
    """What happened in a mailbox after ``since`` (a MODSEQ): for IDLE/NOOP updates and QRESYNC."""

    uidvalidity: int
    uidnext: int
    highestmodseq: int
    changed: tuple[MessageInfo, ...]  # new messages and messages with changed flags, by UID
    vanished: tuple[int, ...]  # UIDs expunged after ``since`` (RFC 7162 section 3.2.10)


@dataclass(frozen=True, slots=True)
class Quota:
    used: int  # octets of all messages of the account (RFC 9208 STORAGE, in octets here)
    limit: int | None  # None: unlimited
    messages: int
    warned: int = 0  # the warning level (percent) last sent, 0 for none (migration 0015)


class MailboxWatch(Protocol):
    """A subscription to changes of one account's mailboxes (IDLE, POP3/IMAP consistency).

    ``wait`` returns when anything changed in any mailbox of the account since the last call
    (or the previous ``wait`` returned), or after ``timeout`` seconds; ``close`` unsubscribes.
    """

    async def wait(self, timeout: float | None = None) -> bool: ...

    def close(self) -> None: ...


class MailStore(Protocol):
    """Mailbox operations beyond delivery. All raise NotFound for unknown mailboxes/accounts."""

    async def get_mailbox(self, account_id: int, name: str) -> MailboxInfo | None:
        """``INBOX`` matches case-insensitively (RFC 3501 section 5.1)."""

    async def create_mailbox(
        self, account_id: int, name: str, special_use: str | None = None,
        *, limit: int | None = None,
    ) -> MailboxInfo:
        """Raises AlreadyExists. A fresh UIDVALIDITY, never reused for this name. Raises
        LimitExceeded when ``limit`` is given and the account has that many mailboxes
        already (checked in the same transaction, so concurrent creates cannot pass it)."""

    async def delete_mailbox(self, account_id: int, name: str) -> None:
        """Deletes the mailbox and its messages (not its children)."""

    async def rename_mailbox(
        self, account_id: int, old: str, new: str, *, limit: int | None = None
    ) -> None:
        """Renames the mailbox and every ``old/...`` child. Renaming INBOX moves its messages
        into a new mailbox ``new`` and leaves INBOX empty (RFC 3501 section 6.3.5).
        Raises AlreadyExists when ``new`` exists, LimitExceeded when renaming INBOX (the
        one rename that adds a mailbox) would take the account past ``limit``."""

    async def set_subscribed(
        self, account_id: int, name: str, subscribed: bool, *, limit: int | None = None
    ) -> None:
        """Subscriptions may name mailboxes that don't exist (RFC 3501 section 6.3.6), so
        they are bounded on their own: LimitExceeded when a new subscription would make
        more than ``limit``."""

    async def list_subscriptions(self, account_id: int) -> list[str]: ...

    async def mailbox_counts(
        self, account_id: int, mailbox_id: int | None = None
    ) -> dict[int, MailboxCounts]:
        """``MailboxCounts`` by mailbox id for every mailbox of the account that holds
        messages (an empty one is absent), or only for ``mailbox_id``, in one read: LIST
        RETURN (STATUS ...) over thousands of mailboxes must not read each one's messages
        (RFC 5819), and STATUS needs no message list."""

    async def list_messages_in(self, mailbox_id: int) -> list[MessageInfo]:
        """Every message of the mailbox in ascending UID order (a consistent snapshot)."""

    async def get_messages(
        self,
        mailbox_id: int,
        uids: Sequence[int] | None,
        *,
        envelope: bool = True,
        bodystructure: bool = True,
    ) -> list[MessageInfo]:
        """The messages of ``uids`` that exist (every message when None), ascending by UID,
        reading only those rows, so one IMAP FETCH of a message costs one message, not the
        mailbox. ``envelope``/``bodystructure`` False leave those JSON fields empty (``""``)
        for callers that need only flags, dates and sizes. Raises NotFound for an unknown
        mailbox."""

    async def mailbox_by_id(self, mailbox_id: int) -> MailboxInfo | None: ...

    async def recent_info(self, mailbox_id: int) -> RecentInfo:
        """The mailbox's \\Recent state, read without taking anything (EXAMINE, STATUS
        RECENT: RFC 3501 sections 6.3.2 and 6.3.10). Raises NotFound."""

    async def claim_recent(self, mailbox_id: int, upto: int) -> int:
        """Takes \\Recent (RFC 3501 section 2.3.2: recent to one session only): returns the
        first recent UID as it was, and raises it to ``upto`` (never lowers it) in the same
        transaction, so of concurrent callers on any node each recent UID goes to one. The
        caller gets the messages from the returned UID up to ``upto`` - 1. Raises NotFound."""

    async def store_flags(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        op: FlagOp,
        flags: Sequence[str],
        unchanged_since: int | None = None,
    ) -> StoreFlagsResult:
        """Changes flags of the given UIDs (missing UIDs are ignored), each changed message
        gets a new MODSEQ (RFC 7162 section 3.1)."""

    async def expunge(self, mailbox_id: int, uids: Sequence[int] | None = None) -> list[int]:
        """Removes the messages flagged ``\\Deleted`` (only those among ``uids`` when given);
        returns their UIDs ascending and records them as vanished at a new MODSEQ."""

    async def delete_messages(self, mailbox_id: int, uids: Sequence[int]) -> list[int]:
        """Removes the given messages whatever their flags (POP3 DELE at QUIT)."""

    async def copy_messages(
        self, src_mailbox_id: int, uids: Sequence[int], dst_mailbox_id: int, *, move: bool = False
    ) -> list[tuple[int, int]]:
        """Copies (or moves: copy + expunge at the source, atomically) the messages; returns
        ``(source uid, new uid)`` pairs ascending by source UID (RFC 4315 COPYUID). Bodies are
        shared, not rewritten."""

    async def changes_since(self, mailbox_id: int, modseq: int) -> MailboxChanges: ...

    async def search_text(self, mailbox_id: int, text: str, *, part: str) -> set[int]:
        """UIDs whose ``part`` ("text": header and body, "body": body only, or "header:NAME")
        contains ``text`` case-insensitively (RFC 9051 section 6.4.4), via the full-text
        index built at delivery."""

    async def get_quota(self, account_id: int) -> Quota: ...

    async def set_quota(self, account_id: int, limit: int | None) -> None: ...

    async def swap_quota_warning(self, account_id: int, level: int) -> int:
        """Sets the account's warned level to ``level`` and returns the one it replaced,
        atomically (of two nodes racing, only one sees the old level). Raises NotFound."""

    def watch(self, account_id: int) -> MailboxWatch:
        """Subscribe to changes of the account's mailboxes made by this process (and, for
        networked backends, by other nodes)."""


# ---------------------------------------------------------------------------------------------
# Outbound delivery (issue 5): queue state transitions and DKIM keys.


@dataclass(frozen=True, slots=True)
class QueueUpdate:
    """The outcome of one attempt for one queue row (``QueueEntry.id``)."""

    id: int
    state: str  # "delivered" | "deferred" | "bounced"
    next_attempt: float | None = None  # for "deferred"
    last_error: str | None = None  # the remote reply or the local reason, one line
    warned: bool = False  # True: a delay warning DSN went out (recorded once, never unset)


@dataclass(frozen=True, slots=True)
class DkimKey:
    domain: str
    selector: str  # e.g. "ms202611r" (dated, algorithm-tagged)
    algorithm: str  # "rsa-sha256" | "ed25519-sha256"
    private_key: str  # PEM (PKCS#8); never logged
    public_key: str  # the p= value of the DNS record (base64)
    created_at: float
    active: bool


class OutboundStore(Protocol):
    """The queue as the outbound workers and the queue CLI see it (DESIGN rule 7)."""

    async def claim_due(
        self, now: float, limit: int, lease: float, owner: str = ""
    ) -> list[QueueEntry]:
        """Atomically moves up to ``limit`` rows in state queued/deferred with
        ``next_attempt <= now`` to "active" (``next_attempt = now + lease``), oldest first,
        new mail before long-deferred mail so a backlog of retries cannot starve it; the rows
        record ``owner`` (the claiming node's name) for ``recover_active``. With several
        nodes, no row is claimed by two of them."""

    async def update_queue(self, updates: Sequence[QueueUpdate]) -> None:
        """Records attempt outcomes in one transaction; ``attempts`` grows by one each.
        Rows already delivered or bounced (or deleted) are left as they are: a final state
        is never undone."""

    async def recover_active(self, now: float, owner: str | None = None) -> int:
        """Rows left "active" by a process that died (lease expired) go back to "queued",
        and with ``owner`` also every active row that node claimed whatever its lease (the
        node is starting again: its attempts died with it); returns how many. Called at
        start-up and periodically."""

    async def queue_entries(self, queue_id: str) -> list[QueueEntry]:
        """All rows of one message (any state); [] when unknown."""

    async def retry_queue(self, queue_id: str | None, now: float) -> int:
        """Makes deferred rows (of one message, or all) due now; returns how many."""

    async def delete_queue(self, queue_id: str) -> int:
        """Removes every row of the message whatever its state; returns how many."""

    async def count_sent_since(self, account_id: int, since: float) -> int:
        """Outbound recipients queued by ``account_id`` (``auth_account_id``) since ``since``:
        the per-sender hourly limit."""

    async def add_dkim_key(self, key: DkimKey) -> None:
        """Raises AlreadyExists for the same (domain, selector)."""

    async def dkim_keys(self, domain: str) -> list[DkimKey]:
        """Every key of the domain, newest first."""

    async def set_dkim_active(self, domain: str, selectors: Sequence[str]) -> None:
        """Exactly these selectors sign from now on (rotation keeps the old ones published
        but inactive until the admin removes them)."""

    async def remove_dkim_key(self, domain: str, selector: str) -> None:
        """Deletes one key that does not sign; raises NotFound when there is no such key and
        InUse when it is active. (``remove_domain`` deletes all the domain's keys.)"""

    async def purge_finished(self, before: float) -> int:
        """Deletes delivered and bounced rows whose last attempt ended before ``before`` (so
        their bodies can be garbage-collected); returns how many."""


# ---------------------------------------------------------------------------------------------
# Account security (issue 6): two-factor secrets, recovery codes, app passwords, login audit
# and IP blocks. Secrets arrive here already encrypted or hashed (accounts/keys.py).


@dataclass(frozen=True, slots=True)
class SecondFactor:
    """An account's TOTP enrolment (RFC 6238)."""

    account_id: int
    secret: str  # encrypted by accounts/keys.py; never logged
    last_counter: int  # the last time step accepted, -1 before the first (RFC 6238 section 5.2)
    created_at: float
    recovery_codes_left: int


@dataclass(frozen=True, slots=True)
class AppPassword:
    """An app-specific password; ``digest`` is its keyed hash, the password itself is gone."""

    id: int
    account_id: int
    name: str
    digest: str
    protocols: tuple[str, ...]  # () means every protocol
    created_at: float
    last_used: float | None
    last_ip: str | None


@dataclass(frozen=True, slots=True)
class LoginRecord:
    """One login attempt for the audit log."""

    at: float
    account_id: int | None  # None when the user name matched no account
    username: str
    protocol: str  # "imap" | "pop3" | "smtp" | "web" | "cli"
    client_ip: str
    mechanism: str
    success: bool
    reason: str  # "ok", "bad_credentials", "app_password_required", "blocked", ...
    app_password: str | None = None  # the name of the app password used
    app_password_id: int | None = None  # not stored: lets the store update last_used/last_ip


@dataclass(frozen=True, slots=True)
class IpBlock:
    network: str  # an IPv4 address or an IPv6 /64 such as "2001:db8:1:2::/64"
    until: float
    failures: int
    created_at: float
    reason: str


# The store_meta rows of the installation's security key (accounts/installkey.py): its check
# value, and the key sealed by an admin's passphrase for nodes that join.
KEY_CHECK = "security_key_check"
KEY_SEALED = "security_key_sealed"


class SecurityStore(Protocol):
    """What accounts/ keeps for two-factor login, app passwords, the audit and IP blocks."""

    async def get_second_factor(self, account_id: int) -> SecondFactor | None: ...

    async def set_second_factor(
        self, account_id: int, secret: str, recovery_digests: Sequence[str], created_at: float
    ) -> None:
        """Turns TOTP on (replacing any previous secret and recovery codes). Raises NotFound."""

    async def remove_second_factor(self, account_id: int) -> bool:
        """Turns TOTP off and drops the recovery codes; False when it was off."""

    async def use_totp_counter(self, account_id: int, counter: int) -> bool:
        """Records ``counter`` as used if it is newer than the last one; False (a replay, or
        2FA off) otherwise. Atomic, so one code opens at most one login."""

    async def use_recovery_code(self, account_id: int, digest: str) -> bool:
        """Deletes the code with this digest; True when it existed (single use, atomic)."""

    async def add_app_password(
        self, account_id: int, name: str, digest: str, protocols: Sequence[str], created_at: float
    ) -> AppPassword:
        """Raises AlreadyExists for a name the account uses already (case-insensitive)."""

    async def list_app_passwords(self, account_id: int) -> list[AppPassword]:
        """Oldest first."""

    async def revoke_app_password(self, account_id: int, name: str) -> None:
        """Raises NotFound."""

    async def add_login_records(self, records: Sequence[LoginRecord]) -> None:
        """Appends audit rows in one transaction and sets last_used/last_ip of the app
        passwords used by successful ones."""

    async def list_logins(self, account_id: int, limit: int) -> list[LoginRecord]:
        """The newest ``limit`` attempts of the account, newest first."""

    async def prune_logins(self, before: float) -> int:
        """Deletes audit rows older than ``before``; returns how many."""

    async def add_block(self, block: IpBlock) -> None:
        """Blocks ``block.network`` (replacing an existing block of it)."""

    async def active_blocks(self, now: float) -> list[IpBlock]:
        """Blocks with ``until > now``, soonest to end first (expired rows are ignored)."""

    async def remove_block(self, network: str) -> bool:
        """Lifts the block; False when there was none."""

    # The installation's security key (accounts/installkey.py): the store keeps a check value
    # of it, never the key, and optionally the key sealed by an admin's passphrase.

    async def security_key_record(self) -> tuple[str | None, str | None]:
        """(check value, passphrase-sealed key), each None when not recorded."""

    async def record_security_key(self, check: str) -> str:
        """Records ``check`` unless a check value is recorded already; returns the recorded
        one (so of two nodes racing, both learn the winner)."""

    async def set_sealed_security_key(self, sealed: str | None) -> None:
        """Keeps (or, with None, drops) the passphrase-sealed key."""

    async def count_keyed_secrets(self) -> int:
        """How many second factors and app passwords the store holds (all made with the
        key)."""


# Spam filtering (issue 9, migration 0007) -------------------------------------------------


class SpamStore(Protocol):
    """What filters/ keeps for greylisting and the per-account Bayesian classifier."""

    async def greylist_touch(self, triplet: str, now: float) -> tuple[float, bool]:
        """(first_seen, passed) of the triplet, recording it as first seen ``now`` when new
        (and its last_seen as ``now`` in any case)."""

    async def greylist_restart(self, triplet: str, now: float) -> None:
        """Starts the triplet's delay over (its retry came too late)."""

    async def greylist_pass(self, triplet: str, network: str, now: float) -> None:
        """Marks the triplet as passed and ``network`` as one that retries correctly."""

    async def greylist_network_seen(self, network: str) -> float | None:
        """When ``network`` last passed greylisting; None if never (or pruned)."""

    async def greylist_prune(self, before: float) -> int:
        """Forgets triplets and networks not seen since ``before``; returns how many."""

    async def bayes_totals(self, account_id: int) -> tuple[int, int]:
        """(spam, ham) messages learned by the account."""

    async def bayes_tokens(
        self, account_id: int, tokens: Sequence[int]
    ) -> dict[int, tuple[int, int]]:
        """(spam, ham) counts of those of ``tokens`` the account has seen."""

    async def bayes_learn(
        self, account_id: int, message: str, tokens: Sequence[int], spam: bool
    ) -> bool:
        """Counts ``tokens`` of the message ``message`` (its SHA-256) as spam or ham; one
        learned before as the other class is moved. False when it was learned as this class
        already, or the account does not exist."""


# ---------------------------------------------------------------------------------------------
# Sieve (issue 9, migration 0008): each account's scripts (RFC 5228, managed over RFC 5804)
# and the log of automatic sends (vacation once per sender per period, redirects per day).


@dataclass(frozen=True, slots=True)
class SieveScript:
    name: str
    content: str
    active: bool
    updated_at: float


class SieveStore(Protocol):
    """Scripts by (account, name); names compare exactly (RFC 5804 section 1.6)."""

    async def put_sieve_script(self, account_id: int, name: str, content: str) -> None:
        """Creates or replaces the script (keeping its active state). Raises NotFound for an
        unknown account."""

    async def get_sieve_script(self, account_id: int, name: str) -> SieveScript | None: ...

    async def list_sieve_scripts(self, account_id: int) -> list[SieveScript]:
        """By name."""

    async def active_sieve_script(self, account_id: int) -> SieveScript | None:
        """The one script run at delivery, if any."""

    async def set_active_sieve_script(self, account_id: int, name: str | None) -> None:
        """Makes ``name`` the only active script (None: none). Raises NotFound."""

    async def delete_sieve_script(self, account_id: int, name: str) -> None:
        """Raises NotFound, or InUse for the active script (RFC 5804 section 2.10)."""

    async def rename_sieve_script(self, account_id: int, old: str, new: str) -> None:
        """Keeps the active state. Raises NotFound or AlreadyExists."""

    async def count_sieve_events(
        self, account_id: int, kind: str, key: str | None, since: float
    ) -> int:
        """Log rows of ``kind`` ("vacation", "redirect") at or after ``since`` (of ``key``
        only, when given)."""

    async def add_sieve_event(self, account_id: int, kind: str, key: str, at: float) -> None:
        ...

    async def prune_sieve_events(self, before: float) -> int:
        """Deletes log rows older than ``before``; returns how many."""


# ---------------------------------------------------------------------------------------------
# State that must hold across nodes (issue 10, migration 0009): leases (the POP3 maildrop lock)
# and failed-login counts (brute-force protection). Both backends keep them in the database;
# with SQLite (one node) the server may keep its counters in memory instead (``networked``).


class SharedStateStore(Protocol):
    async def acquire_lease(self, name: str, owner: str, now: float, ttl: float) -> bool:
        """Takes the lease ``name`` for ``owner`` until ``now + ttl`` when it is free, expired
        or already ``owner``'s (then it is renewed); False when another owner holds it.
        Atomic: of two nodes asking at once, exactly one gets it."""

    async def release_lease(self, name: str, owner: str) -> None:
        """Gives the lease up if ``owner`` holds it (else nothing happens)."""

    async def add_auth_failure(self, network: str, account: str, at: float) -> None:
        """Records one failed login of client ``network`` (throttle.network_key) for
        ``account`` (the name tried, lower-cased)."""

    async def auth_failures(self, network: str, account: str, since: float) -> tuple[int, int]:
        """(failures of ``network``, failures for ``account``) with ``at > since``."""

    async def clear_auth_failures(self, network: str) -> None:
        """Forgets the network's failures (after it was blocked: it starts afresh)."""

    async def prune_auth_failures(self, before: float) -> int:
        """Deletes failures at or before ``before``; returns how many."""


# ---------------------------------------------------------------------------------------------
# The web pages' sessions (migration 0011, web/sessions.py): in the store so that any node
# behind a load balancer serves any browser. Rows are keyed by the SHA-256 of the cookie value.


@dataclass(frozen=True, slots=True)
class WebSessionRow:
    """One stored web session: ``data`` is the session's JSON as web/sessions.py wrote it."""

    account_id: int | None
    data: str
    created: float
    last_seen: float


class WebSessionStore(Protocol):
    async def put_web_session(
        self, key: str, account_id: int | None, data: str, created: float, last_seen: float
    ) -> None:
        """Stores the session ``key``, replacing a row of the same key."""

    async def update_web_session(self, key: str, data: str, last_seen: float) -> bool:
        """Changes an existing session's data; False (and nothing stored) when the row is
        gone, so a session ended meanwhile (signed out elsewhere) stays ended."""

    async def get_web_session(self, key: str) -> WebSessionRow | None: ...

    async def touch_web_session(self, key: str, last_seen: float) -> None:
        """Restarts the session's idle clock (if the row still exists)."""

    async def drop_web_sessions(self, keys: Sequence[str]) -> None: ...

    async def drop_account_web_sessions(self, account_id: int, except_key: str | None) -> int:
        """Ends every session of the account but ``except_key``; returns how many ended."""

    async def count_web_sessions(self) -> tuple[int, int]:
        """(anonymous sessions, signed-in sessions)."""

    async def prune_web_sessions(
        self, idle_before: float, created_before: float, max_anonymous: int, max_signed_in: int
    ) -> int:
        """Deletes the sessions last seen before ``idle_before`` or created before
        ``created_before``, then the least recently seen beyond ``max_anonymous`` anonymous
        and ``max_signed_in`` signed-in ones (each kind counted apart, so anonymous sessions
        never push out signed-in ones); returns how many rows went."""


# ---------------------------------------------------------------------------------------------
# Where imported messages came from (migration 0012, interchange/sink.py): a repeated or
# interrupted import copies only what is missing.


class ImportStore(Protocol):
    async def import_origins(self, mailbox_id: int, source: str) -> dict[str, str]:
        """The origins of ``source`` recorded in the mailbox, each with the SHA-256 of the
        message stored for it."""

    async def add_import_origins(
        self, mailbox_id: int, source: str, rows: Sequence[tuple[str, str]]
    ) -> None:
        """Records (origin, blob) pairs of ``source`` in the mailbox; an origin recorded
        already keeps its row. Raises NotFound when the mailbox is gone."""


# ---------------------------------------------------------------------------------------------
# SMTP TLS reporting (RFC 8460, migration 0016): our outbound TLS session results per day, the
# daily reports sent, and the reports received.


@dataclass(frozen=True, slots=True)
class TlsResult:
    """``sessions`` TLS sessions of one UTC ``day`` ("YYYY-MM-DD") to ``policy_domain`` under
    one policy (``policy_type`` "sts" or "no-policy-found", ``policy_string`` its lines joined
    by LF) that ended in ``result_type`` ("" for success, else RFC 8460 section 4.3)."""

    day: str
    policy_domain: str
    policy_type: str
    policy_string: str
    result_type: str
    mx_host: str
    receiving_ip: str
    sessions: int


@dataclass(frozen=True, slots=True)
class ReceivedTlsReport:
    """A TLS report another organization sent us (RFC 8460 section 4.4), summed up."""

    received_at: float
    organization: str
    report_id: str
    start_time: str
    end_time: str
    policy_domain: str
    successes: int
    failures: int
    report: str  # the JSON as received
    id: int = 0


class TlsReportStore(Protocol):
    async def add_tls_results(self, rows: Sequence[TlsResult]) -> None:
        """Adds each row's ``sessions`` to the count of its (day, policy, result) key."""

    async def tls_results(self, day: str) -> list[TlsResult]:
        """Every count of ``day``, ordered by policy domain."""

    async def claim_tls_report(self, day: str, policy_domain: str, now: float) -> bool:
        """Marks the report of ``day`` for ``policy_domain`` as sent; False when it was
        already (by this node or another), so each report goes out once."""

    async def prune_tls_results(self, before_day: str) -> int:
        """Deletes the counts and sent marks of days before ``before_day``; how many rows."""

    async def add_received_tls_report(self, report: ReceivedTlsReport) -> bool:
        """Keeps a received report; False when one with its organization and report id is
        kept already (a report mailed twice counts once)."""

    async def received_tls_reports(self, limit: int) -> list[ReceivedTlsReport]:
        """The newest received reports first, at most ``limit``."""


class Store(
    MailStore, OutboundStore, SecurityStore, SpamStore, SieveStore, SharedStateStore,
    WebSessionStore, ImportStore, TlsReportStore, Protocol,
):
    """The whole persistent state of a Mailstead installation (mailbox access included, so
    every service sees one interface)."""

    # True when other Mailstead nodes may share this store (PostgreSQL): then state that one
    # process could keep in memory (login failure counts, the POP3 lock) must live here.
    networked: bool
    # Integrity failures met by this store's reads (damaged bodies and pages), counted.
    integrity: Integrity

    async def close(self) -> None: ...

    def start_indexing(self) -> None:
        """Indexes new mail for SEARCH in the background from now on, so searches seldom wait
        for it (the server calls this; short-lived CLI processes do not)."""

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

    async def accept_messages(
        self, batch: Sequence[IncomingMessage], *, replace: tuple[int, int] | None = None
    ) -> list[AcceptResult]:
        """Local deliveries made durable together or not at all (RFC 3502 MULTIAPPEND:
        all or none); ``replace`` = (mailbox id, UID) is removed in the same transaction
        (RFC 8508 REPLACE). A missing mailbox raises NotFound and nothing is written."""

    async def list_mailboxes(self, account_id: int) -> list[MailboxInfo]: ...

    async def list_messages(self, account_id: int, mailbox: str) -> list[MessageInfo]: ...

    async def read_blob(self, blob: str) -> bytes:
        """The body, checked against its SHA-256 name. Raises NotFound, and CorruptData
        (logged and counted in ``integrity``) when the stored bytes differ."""

    async def verify_bodies(self) -> tuple[int, list[str], list[str]]:
        """(bodies referenced, missing, damaged) for ``mailstead verify``: every body a
        message or queue row needs, checked against its SHA-256 name; changes nothing."""

    async def read_blobs(self, blobs: Sequence[str]) -> dict[str, bytes]:
        """The bodies of ``blobs`` in one read, by name; names not found or whose bytes fail
        their SHA-256 are left out (``read_blob`` of such a name reports why). For
        FETCH of many messages, where a read per body costs a round trip on a networked
        store."""

    # Outbound queue
    async def list_queue(self) -> list[QueueEntry]: ...

    # Administrators (issue 7)
    async def set_admin(self, address: str, admin: bool) -> None:
        """Grants or takes away the web admin pages. Raises NotFound."""

    async def is_admin(self, account_id: int) -> bool:
        """False for an unknown account."""

    async def list_admin_ids(self) -> list[int]: ...

    async def recent_login_failures(self, limit: int) -> list[LoginRecord]:
        """The newest failed login attempts of all accounts (and unknown names), newest
        first, at most ``limit``."""

