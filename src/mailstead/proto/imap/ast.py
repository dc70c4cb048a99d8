"""The parsed form of IMAP commands: what the parser produces and the session consumes.

Shared contract between ``parser.py`` (bytes -> these types), the response/fetch/search
modules and the session layer. Grammar references are RFC 9051 section 9 unless noted;
RFC 3501 forms accepted for IMAP4rev1 clients are noted where they differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# ------------------------------------------------------------------ sequence sets


@dataclass(frozen=True, slots=True)
class SeqRange:
    """``lo:hi`` with None standing for ``*`` (the largest number in use); ``lo`` may be > ``hi``
    on the wire — the set means the same either way (RFC 9051 section 9, seq-range)."""

    lo: int | None
    hi: int | None


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A sequence-set, or ``$`` (RFC 5182 SEARCHRES) when ``saved`` is True."""

    ranges: tuple[SeqRange, ...] = ()
    saved: bool = False

    def bounds(self, largest: int) -> list[tuple[int, int]]:
        """Each range as ``(lo, hi)`` with ``*`` replaced by ``largest`` and lo <= hi."""
        out = []
        for r in self.ranges:
            lo = largest if r.lo is None else r.lo
            hi = largest if r.hi is None else r.hi
            out.append((lo, hi) if lo <= hi else (hi, lo))
        return out

    def contains(self, n: int, largest: int) -> bool:
        """Whether ``n`` is named; use for UIDs, whose ranges may be huge (``1:4294967295``)."""
        return any(lo <= n <= hi for lo, hi in self.bounds(largest))

    def resolve(self, largest: int) -> list[int]:
        """The numbers in 1..largest named, ascending, without duplicates: for message
        sequence numbers. ``*`` is ``largest`` (RFC 9051 section 9, seq-number); a range
        ``n:*`` with n > largest names ``largest``."""
        out: set[int] = set()
        for lo, hi in self.bounds(largest):
            out.update(range(max(lo, 1), min(hi, largest) + 1))
        return sorted(out)


# ------------------------------------------------------------------ FETCH


@dataclass(frozen=True, slots=True)
class Section:
    """``BODY[<part>.<text>]``: ``part`` is the numeric path (``(1, 2)`` for ``1.2``, empty for
    the whole message); ``text`` is ``""``, ``"HEADER"``, ``"HEADER.FIELDS"``,
    ``"HEADER.FIELDS.NOT"``, ``"TEXT"`` or ``"MIME"`` (``MIME`` only with a part)."""

    part: tuple[int, ...] = ()
    text: str = ""
    fields: tuple[str, ...] = ()  # HEADER.FIELDS[.NOT] names, upper-cased, as asked


@dataclass(frozen=True, slots=True)
class Partial:
    """``<start.length>`` (RFC 9051 section 6.4.5)."""

    start: int
    length: int


@dataclass(frozen=True, slots=True)
class FetchAtt:
    """One fetch attribute. ``name`` is one of: ENVELOPE, FLAGS, INTERNALDATE, RFC822.SIZE,
    UID, BODYSTRUCTURE, BODY (the structure without extension data), MODSEQ, RFC822,
    RFC822.HEADER, RFC822.TEXT, BODY[] (``section`` set; ``peek`` for BODY.PEEK),
    BINARY[] (``section`` set; ``peek`` for BINARY.PEEK), BINARY.SIZE, SAVEDATE, EMAILID,
    THREADID. Macros (ALL, FAST, FULL) are expanded by the parser."""

    name: str
    section: Section | None = None
    partial: Partial | None = None
    peek: bool = False


# ------------------------------------------------------------------ SEARCH


@dataclass(frozen=True, slots=True)
class SearchKey:
    """One search key. ``name`` is the upper-cased key (ALL, ANSWERED, BCC, BEFORE, BODY, CC,
    DELETED, DRAFT, FLAGGED, FROM, HEADER, KEYWORD, LARGER, NEW, NOT, OLD, ON, OR, RECENT,
    SEEN, SENTBEFORE, SENTON, SENTSINCE, SINCE, SMALLER, SUBJECT, TEXT, TO, UID, UNANSWERED,
    UNDELETED, UNDRAFT, UNFLAGGED, UNKEYWORD, UNSEEN, MODSEQ, and "SEQSET" for a bare
    sequence set, "AND" for a parenthesised list). Arguments by kind:
    - ``text``: the string of BCC/BODY/CC/FROM/SUBJECT/TEXT/TO, the value of HEADER (with
      ``header`` the field name), the flag of KEYWORD/UNKEYWORD;
    - ``date``: BEFORE/ON/SINCE/SENT* (a date, no time);
    - ``number``: LARGER/SMALLER octets, MODSEQ value;
    - ``seqset``: SEQSET and UID;
    - ``children``: NOT (one), OR (two), AND (any number)."""

    name: str
    text: str | None = None
    header: str | None = None
    date: datetime | None = None
    number: int | None = None
    seqset: SequenceSet | None = None
    children: tuple[SearchKey, ...] = ()


# ------------------------------------------------------------------ commands


@dataclass(frozen=True, slots=True)
class Command:
    """A complete command. ``name`` is upper-cased (``UID FETCH`` is name "FETCH" with
    ``uid=True``). ``args`` holds the command-specific parsed arguments (see below)."""

    tag: str
    name: str
    uid: bool = False
    args: CommandArgs | None = None


@dataclass(frozen=True, slots=True)
class LoginArgs:
    username: str
    password: str  # wrapped in core.secret.Secret by the session at once


@dataclass(frozen=True, slots=True)
class AuthenticateArgs:
    mechanism: str
    initial_response: bytes | None  # SASL-IR (RFC 4959), base64 text; b"=" means empty


@dataclass(frozen=True, slots=True)
class MailboxArgs:
    """SELECT, EXAMINE, CREATE, DELETE, SUBSCRIBE, UNSUBSCRIBE, STATUS-less mailbox commands.
    ``mailbox`` is decoded to Unicode (modified UTF-7 decoded when ``utf7`` was the wire form
    for a non-UTF8 client; the session knows which) — the parser returns the raw wire string
    and the session decodes, see ``raw``."""

    mailbox: str
    raw: bytes
    # SELECT/EXAMINE parameters (RFC 7162 CONDSTORE, QRESYNC): name -> value
    condstore: bool = False
    qresync: QresyncParams | None = None
    # CREATE (RFC 6154 USE): special-use attributes requested
    use: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class QresyncParams:
    """SELECT (QRESYNC (uidvalidity modseq [known-uids [seq-match]])) (RFC 7162 3.2.5)."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True, slots=True)
class RenameArgs:
    old: str
    old_raw: bytes
    new: str
    new_raw: bytes


@dataclass(frozen=True, slots=True)
class ListArgs:
    """LIST / LSUB with RFC 5258 LIST-EXTENDED selection and return options."""

    reference: bytes
    patterns: tuple[bytes, ...]
    selection: tuple[str, ...] = ()  # SUBSCRIBED, REMOTE, RECURSIVEMATCH, SPECIAL-USE
    returns: tuple[str, ...] = ()  # SUBSCRIBED, CHILDREN, SPECIAL-USE
    status: tuple[str, ...] = ()  # RETURN (STATUS (...)) items, RFC 5819
    lsub: bool = False


@dataclass(frozen=True, slots=True)
class StatusArgs:
    mailbox: str
    raw: bytes
    # MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT HIGHESTMODSEQ APPENDLIMIT
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CatenatePart:
    """One part of an RFC 4469 CATENATE: ``TEXT`` with a literal's octets (``spooled_size``
    set when the server holds them in a file), or ``URL`` with an IMAP URL (RFC 5092)."""

    kind: str  # "TEXT" or "URL"
    data: bytes
    spooled_size: int | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.spooled_size is None else self.spooled_size


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of an APPEND (RFC 3502 MULTIAPPEND sends several)."""

    flags: tuple[str, ...]
    internal_date: datetime | None
    message: bytes  # empty when spooled (or CATENATE): the octets are elsewhere
    binary: bool = False
    utf8: bool = False
    spooled_size: int | None = None
    catenate: tuple[CatenatePart, ...] | None = None  # RFC 4469: built from these parts

    @property
    def size(self) -> int:
        if self.catenate is not None:
            return sum(p.size for p in self.catenate)
        return len(self.message) if self.spooled_size is None else self.spooled_size


@dataclass(frozen=True, slots=True)
class AppendArgs:
    """APPEND: the first message in the fields of old, every message in ``messages``."""

    mailbox: str
    raw: bytes
    flags: tuple[str, ...]
    internal_date: datetime | None
    message: bytes  # empty when spooled: the server holds the octets in a file
    binary: bool = False  # literal8 ~{n} (RFC 3516)
    utf8: bool = False  # the UTF8 (~{n}) form of RFC 6855 section 4 (needs UTF8=ACCEPT)
    spooled_size: int | None = None  # the message's size when it was spooled
    more: tuple[AppendMessage, ...] = ()  # RFC 3502: the second and later messages
    catenate: tuple[CatenatePart, ...] | None = None  # RFC 4469, for the first message

    @property
    def size(self) -> int:
        return self.first.size

    @property
    def first(self) -> AppendMessage:
        return AppendMessage(self.flags, self.internal_date, self.message, self.binary,
                             self.utf8, self.spooled_size, self.catenate)

    @property
    def messages(self) -> tuple[AppendMessage, ...]:
        return (self.first, *self.more)


@dataclass(frozen=True, slots=True)
class ReplaceArgs:
    """REPLACE / UID REPLACE (RFC 8508 section 3): the message ``number`` (a UID with UID)
    is replaced by the one of ``append``."""

    number: int
    append: AppendArgs


@dataclass(frozen=True, slots=True)
class FetchArgs:
    seqset: SequenceSet
    atts: tuple[FetchAtt, ...]
    changed_since: int | None = None  # RFC 7162 CHANGEDSINCE
    vanished: bool = False  # RFC 7162 VANISHED modifier (UID FETCH only)
    partial: tuple[int, int] | None = None  # RFC 9394 section 3.3 PARTIAL modifier


@dataclass(frozen=True, slots=True)
class StoreArgs:
    seqset: SequenceSet
    op: str  # "+", "-" or "" (replace)
    silent: bool
    flags: tuple[str, ...]
    unchanged_since: int | None = None


@dataclass(frozen=True, slots=True)
class CopyArgs:
    """COPY and MOVE."""

    seqset: SequenceSet
    mailbox: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class SearchArgs:
    """SEARCH/SORT/THREAD: ``returns`` are ESEARCH return options (RFC 4731: MIN MAX ALL COUNT
    SAVE); ``sort`` the SORT criteria (RFC 5256, "REVERSE x" as ("REVERSE", "X") pairs kept
    flat as e.g. "REVERSE DATE"); ``algorithm`` the THREAD algorithm."""

    key: SearchKey
    charset: str | None = None
    returns: tuple[str, ...] | None = None  # None: no RETURN clause (plain SEARCH response)
    sort: tuple[str, ...] = ()
    algorithm: str | None = None
    # RFC 9394 section 3.1: the PARTIAL range, 1-based positions, negative from the end.
    partial: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class ExpungeArgs:
    """UID EXPUNGE sequence set (RFC 4315)."""

    seqset: SequenceSet


@dataclass(frozen=True, slots=True)
class EnableArgs:
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IdArgs:
    """ID (RFC 2971): field -> value, or None for NIL."""

    params: dict[str, str | None] | None = field(default=None, hash=False)


@dataclass(frozen=True, slots=True)
class QuotaArgs:
    """GETQUOTA root / GETQUOTAROOT mailbox / SETQUOTA root (resources) (RFC 9208)."""

    root: str
    limits: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class CompressArgs:
    mechanism: str


@dataclass(frozen=True, slots=True)
class CancelUpdateArgs:
    """CANCELUPDATE: the tags of the searches to stop updating (RFC 5267 section 4.2)."""

    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NotifyGroup:
    """One NOTIFY event group (RFC 5465 section 6): a mailbox filter (SELECTED, INBOXES,
    SUBTREE ...) with its mailboxes (name, raw wire octets), the events asked for and the
    fetch attributes of MessageNew (None when not given)."""

    filter: str
    mailboxes: tuple[tuple[str, bytes], ...]
    events: tuple[str, ...]
    fetch: tuple[FetchAtt, ...] | None = None


@dataclass(frozen=True, slots=True)
class NotifyArgs:
    """NOTIFY SET [STATUS] groups, or NOTIFY NONE (``groups`` None)."""

    groups: tuple[NotifyGroup, ...] | None
    status: bool = False


CommandArgs = (
    LoginArgs | AuthenticateArgs | MailboxArgs | RenameArgs | ListArgs | StatusArgs | AppendArgs
    | ReplaceArgs
    | FetchArgs | StoreArgs | CopyArgs | SearchArgs | ExpungeArgs | EnableArgs | IdArgs
    | QuotaArgs | CompressArgs | CancelUpdateArgs | NotifyArgs
)
