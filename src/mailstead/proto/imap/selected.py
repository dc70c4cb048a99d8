"""The selected-mailbox view of one IMAP session: sequence numbers, flags, MODSEQs, \\Recent.

Pure (no store, no clock): the session feeds it the store's ``MailboxChanges`` and writes the
untagged lines it returns. Sequence numbers exist only here (the store speaks UIDs), and they
change only when this session is told of an expunge, which happens only where RFC 9051
section 7.5.1 / RFC 3501 section 7.4.1 allow it: never while a FETCH, STORE or SEARCH (non-UID)
is answered. Until then an expunged message keeps its number ("pending"), so another
session's expunge never shifts numbers under a command in progress.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mailstead.proto.imap.ast import SequenceSet
from mailstead.proto.imap.response import flags as format_flags
from mailstead.proto.imap.response import sequence_set
from mailstead.storage.interfaces import MailboxChanges, MailboxInfo, MessageInfo

RECENT = "\\Recent"
# RFC 9051 section 2.3.2: the system flags every mailbox offers (\Recent is not one a client
# may store, and IMAP4rev2 dropped it).
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


def keywords_of(flags: Iterable[str]) -> list[str]:
    """The keywords (flags not starting with a backslash) among ``flags``, in order."""
    return [f for f in flags if not f.startswith("\\")]


@dataclass(slots=True)
class SelectedView:
    """What one session believes about its selected mailbox.

    ``uids[i]`` is the UID of sequence number ``i + 1``; UIDs ascend (RFC 9051 section
    2.3.1.1). ``pending`` holds UIDs known to be expunged in the store but not yet reported
    to this session (they keep their sequence numbers until reported).
    """

    mailbox_id: int
    name: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    read_only: bool
    uids: list[int] = field(default_factory=list)
    flags: dict[int, tuple[str, ...]] = field(default_factory=dict)
    modseqs: dict[int, int] = field(default_factory=dict)
    sizes: dict[int, int] = field(default_factory=dict)  # RFC822.SIZE, for quota checks
    recent: set[int] = field(default_factory=set)
    pending: set[int] = field(default_factory=set)
    condstore: bool = False  # RFC 7162 section 3.1: report MODSEQ in unsolicited FETCH
    qresync: bool = False  # RFC 7162 section 3.2.10: VANISHED instead of EXPUNGE
    uidonly: bool = False  # RFC 9586 section 3: UIDFETCH and VANISHED, no sequence numbers
    show_recent: bool = True  # IMAP4rev1 only; RFC 9051 appendix E removed \Recent
    # The keywords this session was told of in FLAGS, by lower-case name (keywords compare
    # case-insensitively, as the store does): RFC 3501 section 7.2.6 / RFC 9051 section
    # 7.3.5 want a keyword announced in FLAGS before any FETCH shows it.
    keywords: dict[str, str] = field(default_factory=dict)
    invalid: bool = False  # UIDVALIDITY changed under us: the session must close it

    @classmethod
    def open(
        cls,
        info: MailboxInfo,
        messages: Sequence[MessageInfo],
        *,
        read_only: bool,
        recent_from: int,
    ) -> SelectedView:
        """The view right after SELECT/EXAMINE; messages with UID >= ``recent_from`` are
        \\Recent to this session (the session layer decides who gets them first)."""
        view = cls(
            mailbox_id=info.id,
            name=info.name,
            uidvalidity=info.uidvalidity,
            uidnext=info.uidnext,
            highestmodseq=info.highestmodseq,
            read_only=read_only,
        )
        for msg in messages:
            view.uids.append(msg.uid)
            view.flags[msg.uid] = msg.flags
            view.modseqs[msg.uid] = msg.modseq
            view.sizes[msg.uid] = msg.size
            if msg.uid >= recent_from:
                view.recent.add(msg.uid)
            for keyword in keywords_of(msg.flags):
                view.keywords.setdefault(keyword.lower(), keyword)
        view.uids.sort()
        return view

    # ------------------------------------------------------------------ FLAGS

    def flag_lines(self) -> list[bytes]:
        """``* FLAGS (...)`` and ``* OK [PERMANENTFLAGS (...)]`` for the system flags and every
        keyword announced so far (RFC 9051 sections 7.3.5 and 7.1). ``\\*`` says a STORE
        may create new keywords; a read-only mailbox has no permanent flags."""
        every = format_flags((*SYSTEM_FLAGS, *sorted(self.keywords.values(), key=str.lower)))
        permanent = every[:-1] + b" \\*)" if not self.read_only else b"()"
        return [
            b"* FLAGS " + every + b"\r\n",
            b"* OK [PERMANENTFLAGS " + permanent + b"] Flags permitted\r\n",
        ]

    def announce(self, flags: Iterable[str]) -> list[bytes]:
        """The FLAGS and PERMANENTFLAGS lines to send before a response that shows ``flags``,
        when they hold a keyword this session has not been told of (else nothing). A keyword
        named ``NIL`` is an atom like any other in a flag list (RFC 9051 section 9,
        flag-keyword = atom): it goes out as it is, after being announced."""
        fresh = False
        for keyword in keywords_of(flags):
            if keyword.lower() not in self.keywords:
                self.keywords[keyword.lower()] = keyword
                fresh = True
        return self.flag_lines() if fresh else []

    # ------------------------------------------------------------------ lookups

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        """The sequence number of ``uid`` in this view, or None."""
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def uid_at(self, seq: int) -> int:
        return self.uids[seq - 1]

    def resolve(self, seqset: SequenceSet, *, uid: bool) -> list[int]:
        """The UIDs a sequence set names, ascending. For UID sets ``*`` is the largest UID in
        the view (RFC 9051 section 6.4.8: ``n:*`` always includes the last message) and UIDs
        not in the view are ignored; message numbers beyond EXISTS are ignored too, the
        caller having checked them with ``valid_seqset``."""
        if not self.uids:
            return []
        if uid:
            largest = self.uids[-1]
            out: list[int] = []
            for lo, hi in seqset.bounds(largest):
                a = bisect.bisect_left(self.uids, lo)
                b = bisect.bisect_right(self.uids, hi)
                out.extend(self.uids[a:b])
            return sorted(set(out))
        return [self.uids[s - 1] for s in seqset.resolve(len(self.uids))]

    def valid_seqset(self, seqset: SequenceSet) -> bool:
        """RFC 9051 section 9 seq-number: a number that is not 1..EXISTS (``*`` aside) is an
        error in a message-sequence set (BAD); so is any set on an empty mailbox but ``*``."""
        n = len(self.uids)
        for r in seqset.ranges:
            for value in (r.lo, r.hi):
                if value is not None and not 1 <= value <= n:
                    return False
        return True

    def flags_of(self, uid: int) -> tuple[str, ...]:
        """The flags as this session sees them (with \\Recent for a rev1 session)."""
        flags = self.flags.get(uid, ())
        if self.show_recent and uid in self.recent:
            return (*flags, RECENT)
        return flags

    def fetch_line(self, uid: int, *, with_uid: bool = True) -> bytes:
        """``* n FETCH (UID u FLAGS (...) [MODSEQ (m)])``: the unsolicited form (RFC 7162
        section 3.2.4 wants MODSEQ once CONDSTORE is on, section 3.2.10 the UID with QRESYNC)."""
        seq = self.seq_of(uid)
        parts = []
        if (with_uid or self.qresync) and not self.uidonly:
            parts.append(f"UID {uid}")
        parts.append("FLAGS " + format_flags(self.flags_of(uid)).decode("ascii"))
        if self.condstore:
            parts.append(f"MODSEQ ({self.modseqs.get(uid, 0)})")
        if self.uidonly:  # RFC 9586 section 3.3
            return f"* {uid} UIDFETCH ({' '.join(parts)})\r\n".encode()
        return f"* {seq} FETCH ({' '.join(parts)})\r\n".encode()

    # ------------------------------------------------------------------ updates

    def apply(self, changes: MailboxChanges, *, allow_expunge: bool) -> list[bytes]:
        """Fold the store's changes in and return the untagged lines to send now.

        Expunges are reported (and sequence numbers shift) only when ``allow_expunge``;
        otherwise they wait in ``pending``. New messages give one EXISTS; flag changes by
        others give FETCH. EXISTS never shrinks without EXPUNGE (RFC 9051 section 7.4.1).
        """
        if changes.uidvalidity != self.uidvalidity:
            self.invalid = True
            return []
        known_max = self.uids[-1] if self.uids else 0
        for uid in changes.vanished:
            if uid in self.flags:
                self.pending.add(uid)
        out: list[bytes] = []
        if allow_expunge:
            out += self._report_expunges(sorted(self.pending))
        new: list[MessageInfo] = []
        changed: list[MessageInfo] = []
        for msg in changes.changed:
            if msg.uid in self.pending:
                continue
            if msg.uid > known_max:
                new.append(msg)
            elif msg.uid in self.flags:
                changed.append(msg)
        gone = set(changes.vanished)
        added = 0
        for msg in sorted(new, key=lambda m: m.uid):
            if msg.uid in self.flags or msg.uid in gone:
                continue
            self.uids.append(msg.uid)
            self.flags[msg.uid] = msg.flags
            self.modseqs[msg.uid] = msg.modseq
            self.sizes[msg.uid] = msg.size
            added += 1
        fetches: list[bytes] = []
        shown: list[str] = [f for uid in self.uids[len(self.uids) - added:]
                            for f in self.flags[uid]]
        for msg in changed:
            before = self.flags[msg.uid]
            self.modseqs[msg.uid] = max(msg.modseq, self.modseqs.get(msg.uid, 0))
            if set(before) != set(msg.flags):
                self.flags[msg.uid] = msg.flags
                shown += msg.flags
                fetches.append(self.fetch_line(msg.uid))
        # New keywords are announced before the EXISTS and FETCH that bring them (RFC 3501
        # section 7.2.6): the client may FETCH FLAGS of a new message at once.
        out += self.announce(shown)
        if added:
            out.append(f"* {len(self.uids)} EXISTS\r\n".encode())
        out += fetches
        self.uidnext = max(self.uidnext, changes.uidnext)
        self.highestmodseq = max(self.highestmodseq, changes.highestmodseq)
        return out

    def add_recent(self, uids: Iterable[int]) -> None:
        """Mark messages \\Recent for this session (the session layer claimed them)."""
        self.recent.update(u for u in uids if u in self.flags)

    def set_flags(self, uid: int, flags: tuple[str, ...], modseq: int) -> None:
        """Record this session's own STORE so the next ``apply`` does not report it again."""
        if uid in self.flags:
            self.flags[uid] = flags
            self.modseqs[uid] = modseq

    def expunge_now(self, uids: Iterable[int]) -> list[bytes]:
        """This session's own EXPUNGE/MOVE: report the given UIDs (and any pending) now, as
        EXPUNGE or VANISHED (RFC 6851 section 3.3 and RFC 7162 section 3.2.10)."""
        self.pending.update(u for u in uids if u in self.flags)
        return self._report_expunges(sorted(self.pending))

    def _report_expunges(self, uids: list[int]) -> list[bytes]:
        if not uids:
            return []
        out: list[bytes] = []
        gone = set(uids)
        if self.qresync or self.uidonly:
            # RFC 7162 section 3.2.10: one VANISHED (without EARLIER) replaces the EXPUNGEs;
            # RFC 9586 section 3.4: so it does once UIDONLY is enabled.
            out.append(f"* VANISHED {sequence_set(uids)}\r\n".encode())
        else:
            # Highest first, so every number sent is still valid when the client applies it
            # in order (RFC 9051 section 7.5.1: each EXPUNGE renumbers the later messages).
            for uid in reversed(uids):
                seq = self.seq_of(uid)
                if seq is not None:
                    out.append(f"* {seq} EXPUNGE\r\n".encode())
        self.uids = [u for u in self.uids if u not in gone]
        for uid in gone:
            self.flags.pop(uid, None)
            self.modseqs.pop(uid, None)
            self.sizes.pop(uid, None)
            self.recent.discard(uid)
        self.pending.clear()
        return out

    # ------------------------------------------------------------------ QRESYNC at SELECT

    def resync(
        self, changes: MailboxChanges, known_uids: SequenceSet | None
    ) -> list[bytes]:
        """The catch-up of SELECT ... (QRESYNC (...)) (RFC 7162 section 3.2.5.2): VANISHED
        (EARLIER) for expunged UIDs the client may know, then FETCH for changed messages.
        ``changes`` is ``changes_since(mailbox, client's modseq)`` taken with the snapshot."""
        out: list[bytes] = []
        largest = max(self.uidnext - 1, 1)
        vanished = [
            u for u in changes.vanished
            if u not in self.flags
            and (known_uids is None or known_uids.contains(u, largest))
        ]
        if vanished:
            out.append(f"* VANISHED (EARLIER) {sequence_set(vanished)}\r\n".encode())
        for msg in sorted(changes.changed, key=lambda m: m.uid):
            if msg.uid in self.flags:
                out += self.announce(self.flags[msg.uid])
                out.append(self.fetch_line(msg.uid))
        return out
