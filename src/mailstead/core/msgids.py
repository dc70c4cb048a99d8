"""The Message-IDs that tie a message to its thread (RFC 5322 section 3.6.4): its own, then
In-Reply-To, then References from the nearest ancestor back. The store files a message in
the thread of any message that shares one of these ids (RFC 8474 section 5.2, as JMAP RFC
8621 section 3 describes), so a reply joins its parent's thread and a parent that arrives
after its reply joins the reply's."""

from __future__ import annotations

import re

# msg-id = "<" id-left "@" id-right ">"; any bracketed token without space, quote or bracket
# is taken (obsolete forms included); longer ones are not ids anyone threads on.
_MSG_ID = re.compile(r"<[^<>\s\"]{1,248}>")
# A bound on the ids kept for one message: References of a long discussion can list hundreds;
# the nearest ancestors are enough to find the thread.
MAX_THREAD_KEYS = 24


def msg_ids(value: str | None) -> list[str]:
    """The msg-id tokens of a header value, in order."""
    if not value:
        return []
    return _MSG_ID.findall(value[:64 * 1024])


def thread_keys(
    message_id: str | None, in_reply_to: str | None, references: str | None
) -> tuple[str, ...]:
    """The message's own id first (when it has one), then its ancestors, nearest first,
    without duplicates and at most ``MAX_THREAD_KEYS``."""
    own = msg_ids(message_id)[:1]
    ancestors = msg_ids(in_reply_to)[:1] + list(reversed(msg_ids(references)))
    return tuple(dict.fromkeys(own + ancestors))[:MAX_THREAD_KEYS]
