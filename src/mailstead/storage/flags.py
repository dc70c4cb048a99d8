"""Message flags as the store keeps them: canonical, without duplicates, space-separated.

System flags (RFC 9051 section 2.3.2) are matched case-insensitively and stored with their
canonical spelling; keywords are stored as first given and also compared case-insensitively
(flag names are atoms, and atoms are case-insensitive; Dovecot and Cyrus do the same).
``\\Recent`` is a session property (RFC 3501 section 2.3.2), never stored; IMAP4rev2 dropped it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mailstead.core.errors import StoreError
from mailstead.storage.interfaces import FlagOp

SYSTEM_FLAGS: tuple[str, ...] = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
_CANONICAL = {flag.lower(): flag for flag in SYSTEM_FLAGS}
_RECENT = "\\recent"
# A longer flag name is hostile; real keywords are short ($Forwarded, $Junk, $MDNSent...).
MAX_FLAG_LENGTH = 255
# RFC 9051 section 9: atom-specials that can never be part of a flag; the store also needs
# spaces out, as it separates flags with them.
_FORBIDDEN = frozenset('(){ %*"]') | {chr(c) for c in range(0x20)} | {"\x7f"}


def canonical_flags(flags: Iterable[str]) -> tuple[str, ...]:
    """``flags`` canonical and de-duplicated, in order; raises StoreError for a flag that
    could not have come from a valid IMAP command (empty, too long, forbidden characters)."""
    seen: set[str] = set()
    out: list[str] = []
    for flag in flags:
        if (
            not flag
            or len(flag) > MAX_FLAG_LENGTH
            or not flag.isascii()
            or any(c in _FORBIDDEN for c in flag)
        ):
            raise StoreError(f"invalid flag {flag[:40]!r}")
        key = flag.lower()
        if key == _RECENT or key in seen:
            continue
        seen.add(key)
        out.append(_CANONICAL.get(key, flag))
    return tuple(out)


def parse_stored(text: str) -> tuple[str, ...]:
    """The flags of a ``messages.flags`` column."""
    return tuple(text.split())


def apply(current: Sequence[str], op: FlagOp, given: Sequence[str]) -> tuple[str, ...]:
    """The flags after a STORE of canonical ``given`` with ``op`` (RFC 9051 section 6.4.6)."""
    if op is FlagOp.REPLACE:
        return tuple(given)
    if op is FlagOp.ADD:
        have = {f.lower() for f in current}
        return tuple(current) + tuple(f for f in given if f.lower() not in have)
    drop = {f.lower() for f in given}
    return tuple(f for f in current if f.lower() not in drop)


def same(a: Sequence[str], b: Sequence[str]) -> bool:
    """True when two flag lists hold the same flags (order does not matter)."""
    return {f.lower() for f in a} == {f.lower() for f in b}


def plan_store(
    rows: Iterable[Sequence[Any]], op: FlagOp, wanted: Sequence[str],
    unchanged_since: int | None,
) -> tuple[list[int], list[tuple[int, tuple[str, ...]]]]:
    """What a STORE does to the stored ``(uid, modseq, flags)`` rows: the UIDs UNCHANGEDSINCE
    leaves alone, and each changed message's new flags (unchanged ones are not written)."""
    modified: list[int] = []
    updates: list[tuple[int, tuple[str, ...]]] = []
    for uid, modseq, stored in rows:
        # RFC 7162 section 3.1.3: a message changed after UNCHANGEDSINCE is left alone and
        # reported in the MODIFIED response code, whatever the STORE would have done.
        if unchanged_since is not None and int(modseq) > unchanged_since:
            modified.append(int(uid))
            continue
        current = parse_stored(stored)
        after = apply(current, op, wanted)
        if not same(current, after):
            updates.append((int(uid), after))
    return modified, updates
