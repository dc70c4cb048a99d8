"""The consistency rules ``mailstead verify`` applies to either backend's rows: counters
against the rows they count, sizes against the bodies, and the report it fills. Pure, so
that both backends' checks (``sqlite/check.py``, ``postgres/check.py``) share one wording."""

from __future__ import annotations

from dataclasses import dataclass, field

# Bodies younger than this are never called orphans: a delivery in progress writes its blob
# before its row commits (DESIGN, Storage), and maintenance uses the same grace.
ORPHAN_GRACE = 3600.0


@dataclass(frozen=True)
class MailboxCounters:
    """A mailbox's stored UIDNEXT and HIGHESTMODSEQ beside the highest UID and MODSEQ its
    messages and vanished records hold."""

    account: str
    name: str
    uidnext: int
    highestmodseq: int
    max_uid: int
    max_modseq: int

    def faults(self) -> list[str]:
        found = []
        # RFC 9051 section 2.3.1.1: UIDNEXT is greater than every UID assigned in the mailbox.
        if self.uidnext <= self.max_uid:
            found.append(f"mailbox {self.name!r} of {self.account}: UIDNEXT {self.uidnext} is "
                         f"not above its highest UID {self.max_uid}")
        # RFC 7162 section 3.1.1: HIGHESTMODSEQ is the highest MODSEQ of any change.
        if self.highestmodseq < self.max_modseq:
            found.append(f"mailbox {self.name!r} of {self.account}: HIGHESTMODSEQ "
                         f"{self.highestmodseq} is below its highest MODSEQ {self.max_modseq}")
        return found


@dataclass(frozen=True)
class AccountUsage:
    """An account's quota counters beside the sum of its messages' sizes and their count."""

    account: str
    used_bytes: int
    used_messages: int
    sum_bytes: int
    count: int

    def faults(self) -> list[str]:
        if (self.used_bytes, self.used_messages) == (self.sum_bytes, self.count):
            return []
        return [f"account {self.account}: quota usage says {self.used_bytes} bytes in "
                f"{self.used_messages} messages, its messages hold {self.sum_bytes} bytes in "
                f"{self.count}"]


@dataclass(frozen=True)
class MessageRow:
    """What a message row says about its body, and where the message is."""

    account: str
    mailbox: str
    uid: int
    blob: str
    size: int
    wire_size: int | None  # None: measured at first listing (rows older than schema 4)
    unterminated: bool | None

    @property
    def where(self) -> str:
        return f"{self.account} {self.mailbox!r} UID {self.uid}"


def size_faults(row: MessageRow, data: bytes) -> list[str]:
    """How ``row``'s size, wire size and last-line flag disagree with its body ``data``."""
    found = []
    if row.size != len(data):
        found.append(f"message {row.where}: size {row.size}, its body has {len(data)} bytes")
    # Imported here: the SQLite writer imports sqlite/check.py, which imports this module.
    from mailstead.storage.sqlite.writer import wire_shape

    shape = wire_shape(data)
    if row.wire_size is not None and row.wire_size != shape.size:
        found.append(f"message {row.where}: wire size {row.wire_size}, its body "
                     f"{shape.size} in CRLF form")
    if row.unterminated is not None and row.unterminated != shape.unterminated:
        found.append(f"message {row.where}: last-line flag {int(row.unterminated)}, its body "
                     f"{int(shape.unterminated)}")
    return found


@dataclass
class VerifyReport:
    """What ``verify`` found (and with ``--repair``, what it fixed). ``missing`` and
    ``damaged`` are body names; ``lost`` names the messages they belong to."""

    backend: str
    database: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    bodies: int = 0
    messages: int = 0
    mailboxes: int = 0
    accounts: int = 0
    files: int = 0
    counters: list[str] = field(default_factory=list)
    usage: list[str] = field(default_factory=list)
    sizes: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    temps: list[str] = field(default_factory=list)
    index: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.database or self.missing or self.damaged or self.counters
                    or self.usage or self.sizes or self.orphans or self.temps or self.index)

    @property
    def fixable(self) -> bool:
        """Whether ``--repair`` has anything to do."""
        return bool(self.counters or self.usage or self.orphans or self.temps or self.index)


def lost_messages(rows: list[MessageRow], missing: set[str], damaged: set[str]) -> list[str]:
    """One line per message whose body is gone or damaged, so it can be restored."""
    lines = []
    for row in rows:
        if row.blob in missing:
            lines.append(f"message {row.where}: body {row.blob} is missing")
        elif row.blob in damaged:
            lines.append(f"message {row.where}: body {row.blob} is damaged")
    return lines
