"""GETQUOTA, GETQUOTAROOT and SETQUOTA (RFC 9208). Each account has one quota root, ``""``,
with the STORAGE resource (in units of 1024 octets, RFC 9208 section 5.1); limits are set by
the administrator, so SETQUOTA is refused."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailstead.imap import names
from mailstead.imap.base import CommandFailed
from mailstead.proto.imap import response
from mailstead.proto.imap.ast import MailboxArgs, QuotaArgs

if TYPE_CHECKING:
    from mailstead.imap.session import IMAPSession
    from mailstead.proto.imap.ast import Command

ROOT = ""


async def _quota_line(s: IMAPSession) -> bytes:
    assert s.account is not None
    quota = await s.ctx.store.get_quota(s.account.id)
    resources = b""
    if quota.limit is not None:
        used_kib = (quota.used + 1023) // 1024
        resources = b"STORAGE %d %d" % (used_kib, quota.limit // 1024)
    return b'QUOTA "" (' + resources + b")"


async def getquota(s: IMAPSession, cmd: Command) -> None:
    root = cmd.args.root if isinstance(cmd.args, QuotaArgs) else None
    if root != ROOT:
        raise CommandFailed("NO", "No such quota root", "NONEXISTENT")
    s.untagged(await _quota_line(s))
    await s.finish(cmd, "GETQUOTA completed")


async def getquotaroot(s: IMAPSession, cmd: Command) -> None:
    """RFC 9208 section 4.3.2: ``* QUOTAROOT mailbox ""`` then the root's QUOTA."""
    args = cmd.args
    if isinstance(args, QuotaArgs):
        raw = args.root.encode("utf-8")
    elif isinstance(args, MailboxArgs):
        raw = args.raw
    else:
        raise CommandFailed("BAD", "GETQUOTAROOT needs a mailbox name")
    assert s.account is not None
    name = names.from_wire(raw, utf8=s.utf8)
    info = await s.ctx.store.get_mailbox(s.account.id, name)
    if info is None:
        raise CommandFailed("NO", "No such mailbox", "NONEXISTENT")
    s.untagged(b"QUOTAROOT " + response.mailbox(info.name, utf8=s.utf8) + b' ""')
    s.untagged(await _quota_line(s))
    await s.finish(cmd, "GETQUOTAROOT completed")


async def setquota(s: IMAPSession, cmd: Command) -> None:
    # RFC 9208 section 4.1.3: a server may refuse; quotas here are the administrator's.
    raise CommandFailed("NO", "Quotas are set by the administrator", "NOPERM")
