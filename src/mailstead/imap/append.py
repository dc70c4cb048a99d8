"""APPEND (RFC 9051 section 6.3.12) with APPENDUID (RFC 4315), APPENDLIMIT (RFC 7889), the
account quota (RFC 9208), MULTIAPPEND (RFC 3502: several messages, all or none), CATENATE
(RFC 4469, imap/catenate.py) and REPLACE (RFC 8508). Messages go through the store's durable
``accept_message`` / ``accept_messages``, so they are fsync'd before the OK."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailstead.core.errors import NotFound
from mailstead.core.message import summarize
from mailstead.imap import names
from mailstead.imap.base import CommandFailed
from mailstead.imap.catenate import assemble
from mailstead.imap.messages import check_flags
from mailstead.imap.spool import LiteralSpool
from mailstead.proto.imap import response
from mailstead.proto.imap.ast import AppendArgs, AppendMessage, Command, ReplaceArgs
from mailstead.storage.interfaces import (
    AcceptResult,
    IncomingMessage,
    LocalDelivery,
    MailboxInfo,
)

if TYPE_CHECKING:
    from mailstead.imap.session import IMAPSession


@dataclass(frozen=True, slots=True)
class _Ready:
    """One message as it will be stored."""

    flags: tuple[str, ...]
    when: float
    data: bytes


async def append(s: IMAPSession, cmd: Command) -> None:
    args = cmd.args
    if not isinstance(args, AppendArgs):
        raise CommandFailed("BAD", "APPEND needs a mailbox and a message literal")
    info = await _target(s, args)
    uids = await _store(s, info, args, None)
    code = f"APPENDUID {info.uidvalidity} {response.sequence_set(uids)}" if uids else None
    # RFC 9051 section 6.3.12: APPEND to the selected mailbox shows up as EXISTS.
    await s.updates(cmd)
    s.tagged(cmd.tag, "OK", "APPEND completed", code)


async def replace(s: IMAPSession, cmd: Command) -> None:
    """REPLACE / UID REPLACE (RFC 8508 section 3): APPEND the new message and expunge the
    old one from the selected mailbox, in one transaction."""
    args = cmd.args
    if not isinstance(args, ReplaceArgs):
        raise CommandFailed("BAD", "REPLACE needs a message number, a mailbox and a message")
    view = s.view
    assert view is not None
    if view.read_only:
        # RFC 8508 section 3.3: the old message cannot be expunged from a read-only mailbox.
        raise CommandFailed("NO", "The selected mailbox is read-only", "READ-ONLY")
    if cmd.uid:
        if args.number not in view.uids:
            raise CommandFailed("NO", "No message with that UID", "NONEXISTENT")
        old = args.number
    else:
        if not 1 <= args.number <= len(view.uids):
            raise CommandFailed("BAD", "Invalid message sequence number")
        old = view.uids[args.number - 1]
    info = await _target(s, args.append)
    uids = await _store(s, info, args.append, (view.mailbox_id, old))
    if uids:
        # RFC 8508 section 3.3: APPENDUID in an untagged OK, before the EXPUNGE of the old.
        s.untagged(f"OK [APPENDUID {info.uidvalidity} {uids[0]}] Replacement message ready")
    await s.updates(cmd)
    s.tagged(cmd.tag, "OK", "REPLACE completed")


async def _target(s: IMAPSession, args: AppendArgs) -> MailboxInfo:
    assert s.account is not None
    name = names.from_wire(args.raw, utf8=s.utf8)
    info = await s.ctx.store.get_mailbox(s.account.id, name)
    if info is None:
        # RFC 9051 section 6.3.12: TRYCREATE when the mailbox does not exist.
        raise CommandFailed("NO", "No such mailbox", "TRYCREATE")
    return info


def _check(s: IMAPSession, m: AppendMessage) -> tuple[str, ...]:
    if m.utf8 and not s.utf8:
        # RFC 6855 section 4: the UTF8 APPEND data extension needs UTF8=ACCEPT.
        raise CommandFailed("BAD", "APPEND UTF8 needs ENABLE UTF8=ACCEPT", "CLIENTBUG")
    if m.size > s.settings.max_message_size:
        # RFC 7889 section 4 (and RFC 9051 section 7.1 TOOBIG).
        raise CommandFailed("NO", "Message larger than APPENDLIMIT", "TOOBIG")
    if m.size == 0 and m.catenate is None:
        raise CommandFailed("NO", "Empty message", "CANNOT")
    return check_flags(m.flags)


async def _store(
    s: IMAPSession, info: MailboxInfo, args: AppendArgs, replaced: tuple[int, int] | None
) -> list[int]:
    """Checks, builds and durably stores every message of ``args``; their new UIDs."""
    assert s.account is not None
    messages = args.messages
    flags = [_check(s, m) for m in messages]
    store = s.ctx.store
    known = sum(m.size for m in messages)
    quota = await store.get_quota(s.account.id)
    if quota.limit is not None and quota.used + known > quota.limit:
        # RFC 9208 section 4.3: refuse what would take the account over its quota.
        raise CommandFailed("NO", "Over quota", "OVERQUOTA")
    spools = iter(s.spools)
    # Spooled literals are read back for the commit (which needs every message whole)
    # inside room of the budget shared by all sessions, so many concurrent large APPENDs
    # cannot together hold more than that in memory. A CATENATE may add URL parts of up
    # to APPENDLIMIT each.
    hold = known + sum(s.settings.max_message_size for m in messages if m.catenate)
    async with s.ctx.append_budget.hold(hold):
        ready: list[_Ready] = []
        for m, f in zip(messages, flags, strict=True):
            if m.catenate is not None:
                data = await assemble(s, m.catenate, spools)
            elif m.spooled_size is not None:
                data = await _read(next(spools, None), m.spooled_size)
            else:
                data = m.message
            when = m.internal_date.timestamp() if m.internal_date is not None else s.clock()
            ready.append(_Ready(f, when, data))
        total = sum(len(r.data) for r in ready)
        if quota.limit is not None and quota.used + total > quota.limit:
            raise CommandFailed("NO", "Over quota", "OVERQUOTA")
        results = await _commit(s, info.name, ready, replaced)
    if quota.limit is not None and replaced is None and s.ctx.quota_warner is not None:
        # A REPLACE takes the old message out as it stores the new one: what it adds is not
        # known here, and it is not the growth the warnings are about.
        await s.ctx.quota_warner.added({s.account.id: total})
    return [uid for r in results for _a, mbox, uid in r.delivered if mbox == info.id]


async def _read(spool: LiteralSpool | None, size: int) -> bytes:
    if spool is None or spool.size != size:
        raise CommandFailed("NO", "The message was not received whole", "SERVERBUG")
    return await spool.read()


def _incoming(s: IMAPSession, mailbox: str, r: _Ready) -> IncomingMessage:
    """Parses the message once (core/message.py) into what the store keeps."""
    assert s.account is not None
    summary = summarize(r.data)
    return IncomingMessage(
        data=r.data,
        queue_id="append-" + secrets.token_hex(6),
        mail_from="",
        local=[LocalDelivery(account_id=s.account.id, mailbox=mailbox, flags=r.flags)],
        remote=[],
        internal_date=r.when,
        envelope=summary.envelope,
        bodystructure=summary.bodystructure,
        thread_keys=summary.thread_keys,
        auth_account_id=s.account.id,
    )


async def _commit(
    s: IMAPSession, mailbox: str, ready: list[_Ready], replaced: tuple[int, int] | None
) -> list[AcceptResult]:
    """One message alone goes through the group commit; several (RFC 3502 section 6.3.11:
    all or none) or a REPLACE (RFC 8508: append and expunge together) in one transaction."""
    store = s.ctx.store
    batch = [_incoming(s, mailbox, r) for r in ready]
    try:
        if len(batch) == 1 and replaced is None:
            return [await store.accept_message(batch[0])]
        return await store.accept_messages(batch, replace=replaced)
    except NotFound:  # the mailbox went away meanwhile
        raise CommandFailed("NO", "No such mailbox", "TRYCREATE") from None

