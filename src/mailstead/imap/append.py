"""APPEND (RFC 9051 section 6.3.12) with APPENDUID (RFC 4315), APPENDLIMIT (RFC 7889) and
the account quota (RFC 9208). The message goes through the same durable ``accept_message``
as an SMTP delivery, so it is fsync'd before the OK."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from mailstead.core.message import summarize
from mailstead.imap import names
from mailstead.imap.base import CommandFailed
from mailstead.imap.messages import check_flags
from mailstead.proto.imap.ast import AppendArgs, Command
from mailstead.storage.interfaces import AcceptResult, IncomingMessage, LocalDelivery

if TYPE_CHECKING:
    from mailstead.imap.session import IMAPSession


async def append(s: IMAPSession, cmd: Command) -> None:
    args = cmd.args
    if not isinstance(args, AppendArgs):
        raise CommandFailed("BAD", "APPEND needs a mailbox and a message literal")
    if args.utf8 and not s.utf8:
        # RFC 6855 section 4: the UTF8 APPEND data extension needs UTF8=ACCEPT.
        raise CommandFailed("BAD", "APPEND UTF8 needs ENABLE UTF8=ACCEPT", "CLIENTBUG")
    assert s.account is not None
    name = names.from_wire(args.raw, utf8=s.utf8)
    store = s.ctx.store
    info = await store.get_mailbox(s.account.id, name)
    if info is None:
        # RFC 9051 section 6.3.12: TRYCREATE when the mailbox does not exist.
        raise CommandFailed("NO", "No such mailbox", "TRYCREATE")
    size = args.size
    if size > s.settings.max_message_size:
        # RFC 7889 section 4 (and RFC 9051 section 7.1 TOOBIG).
        raise CommandFailed("NO", "Message larger than APPENDLIMIT", "TOOBIG")
    if size == 0:
        raise CommandFailed("NO", "Empty message", "CANNOT")
    flags = check_flags(args.flags)
    quota = await store.get_quota(s.account.id)
    if quota.limit is not None and quota.used + size > quota.limit:
        # RFC 9208 section 4.3: refuse what would take the account over its quota.
        raise CommandFailed("NO", "Over quota", "OVERQUOTA")
    when = args.internal_date.timestamp() if args.internal_date is not None else s.clock()
    if args.spooled_size is None:
        result = await _commit(s, info.name, flags, when, args.message)
    else:
        spool = s.spool
        if spool is None or spool.size != size:
            raise CommandFailed("NO", "The message was not received whole", "SERVERBUG")
        # A large message was spooled to disk while it arrived; reading it back for the
        # commit waits for room in the budget shared by all sessions, so many concurrent
        # large APPENDs cannot together hold more than that in memory.
        async with s.ctx.append_budget.hold(size):
            result = await _commit(s, info.name, flags, when, await spool.read())
    if quota.limit is not None and s.ctx.quota_warner is not None:
        await s.ctx.quota_warner.added({s.account.id: size})
    uid = next((u for _a, mbox, u in result.delivered if mbox == info.id), None)
    code = f"APPENDUID {info.uidvalidity} {uid}" if uid is not None else None
    # RFC 9051 section 6.3.12: APPEND to the selected mailbox shows up as EXISTS.
    await s.updates(cmd)
    s.tagged(cmd.tag, "OK", "APPEND completed", code)


async def _commit(
    s: IMAPSession, mailbox: str, flags: tuple[str, ...], when: float, data: bytes
) -> AcceptResult:
    """Parses the message once and delivers it durably (fsync'd before the OK)."""
    assert s.account is not None
    summary = summarize(data)
    return await s.ctx.store.accept_message(IncomingMessage(
        data=data,
        queue_id="append-" + secrets.token_hex(6),
        mail_from="",
        local=[LocalDelivery(account_id=s.account.id, mailbox=mailbox, flags=flags)],
        remote=[],
        internal_date=when,
        envelope=summary.envelope,
        bodystructure=summary.bodystructure,
        auth_account_id=s.account.id,
    ))
