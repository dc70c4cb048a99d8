"""Who gets \\Recent (RFC 3501 section 2.3.2): "this session is the first session to have
been notified about this message; if the session is read-write, subsequent sessions will not
see \\Recent set for this message".

The store keeps each mailbox's first recent UID (migration 0013), so the answer is the same
for every session of every process and node, and survives a restart. A read-write SELECT
takes what is recent up to UIDNEXT, and a session selected read-write takes the new messages
it is told of; EXAMINE (RFC 3501 section 6.3.2) and STATUS only look.

IMAP4rev2 has no \\Recent (RFC 9051 appendix E): a session that enabled it neither sees nor
takes it. Taking it would be invisible to that client, and would hide new mail from the
IMAP4rev1 client (another device of the same user) that is the only kind able to use it;
so such a session leaves the mailbox's recent messages as they were, as EXAMINE does.
"""

from __future__ import annotations

from mailstead.proto.imap.selected import SelectedView
from mailstead.storage.interfaces import Store


async def at_select(
    store: Store, mailbox_id: int, uidnext: int, *, read_only: bool, rev2: bool
) -> int:
    """The first UID that is recent to a session opening the mailbox, whose snapshot holds
    the messages below ``uidnext`` (``uidnext``: none are)."""
    if rev2:
        return uidnext
    if read_only:
        return (await store.recent_info(mailbox_id)).first_uid
    return await store.claim_recent(mailbox_id, uidnext)


async def of_new(store: Store, view: SelectedView, uids: list[int], *, rev2: bool) -> list[int]:
    """Which of ``uids`` (ascending, new to the selected session) are recent to it."""
    if rev2 or not uids:
        return []
    if view.read_only:
        first = (await store.recent_info(view.mailbox_id)).first_uid
    else:
        first = await store.claim_recent(view.mailbox_id, uids[-1] + 1)
    return [u for u in uids if u >= first]
