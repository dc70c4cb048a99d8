"""IDLE (RFC 2177, RFC 9051 section 6.3.13): the session side.

The server writes ``+ idling``, then waits on the account's ``MailboxWatch`` and on the
client's ``DONE`` line at once, calling ``IMAPSession.idle_wakeup`` on every change, so new
mail is pushed as soon as the store commits it (no polling).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailstead.imap.base import Action
from mailstead.proto.imap import response

if TYPE_CHECKING:
    from mailstead.imap.session import IMAPSession
    from mailstead.proto.imap.ast import Command


async def idle(s: IMAPSession, cmd: Command) -> None:
    """The continuation first, then anything pending (RFC 2177 section 3)."""
    s.idle_tag = cmd.tag
    s.raw(response.continuation("idling"))
    await s.updates(None)
    s.action = Action.IDLE
