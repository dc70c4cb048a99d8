"""The object ids of RFC 8474 (OBJECTID): MAILBOXID, EMAILID and THREADID, each 1-255
characters of ``[A-Za-z0-9_-]`` (section 4).

MAILBOXID is ``F`` and the mailbox's UIDVALIDITY: the store draws UIDVALIDITY from one
counter for the whole server and never reuses it, and RENAME keeps it, which is what
section 4.1 asks of a MAILBOXID. EMAILID (section 5.1) names the content: ``M`` and 24 hex
digits of the body's SHA-256, so it stays the same across MOVE (which the section requires)
and across COPY (which it allows), and an identical message stored twice shares it. THREADID
(section 5.2) is assigned at delivery by the store (storage/threads.py).
"""

from __future__ import annotations

from mailstead.storage.interfaces import MailboxInfo


def mailbox_id(info: MailboxInfo) -> str:
    return f"F{info.uidvalidity}"


def email_id(blob: str) -> str:
    return "M" + blob[:24]
